"""The run folder: the one place that knows the name of every file in it, and reads and writes them.

A run folder is the ``--out`` of ``selfsup pretrain`` (and each run of ``selfsup compare``)::

    RUN/
      config.json            the fully resolved config (rerun or --resume from it)         pretrain
      metrics.jsonl          one JSON object per logged step                               pretrain
      tensorboard/           the same scalars for TensorBoard                              pretrain
      summary.json           wall time, images/s, final loss and monitor values            pretrain
      checkpoints/last.pt    the last checkpoint, written atomically                       pretrain
      eval.json              kNN and linear-probe results                                  selfsup eval
      eval_embeddings.npz    singular values and 2-D maps of the test embeddings           selfsup compare
      compare.json           the run's status in a comparison                              selfsup compare
      error.txt              why a comparison's run failed                                 selfsup compare
      export/                exported backbones and their model cards                      selfsup export
      .lock                  who writes the folder now (see below)                          pretrain, compare

Every reader names the file in its error, so that a damaged or foreign folder is easy to diagnose.

**One writer.** :meth:`RunFolder.writer_lock` takes an exclusive ``fcntl.flock`` on ``RUN/.lock`` and writes
the holder's PID, host, command and start time into it; a second writer (another ``pretrain`` with the same
``--out``, a ``--resume`` while the run is still going, a second ``compare`` of the same folder) is refused
with a message naming the holder. The operating system releases the lock when the process ends, however it
ends, so a killed run never leaves the folder locked. Readers (``eval``, ``export``, ``embed``) do not take it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from selfsup.checkpoint import atomic_write_text, load_checkpoint
from selfsup.config import ConfigError, TrainConfig
from selfsup.data.datasets import resolve_augment

CONFIG = "config.json"
METRICS = "metrics.jsonl"
TENSORBOARD = "tensorboard"
SUMMARY = "summary.json"
CHECKPOINTS = "checkpoints"
LAST_CHECKPOINT = "last.pt"
EVALUATION = "eval.json"
EMBEDDINGS = "eval_embeddings.npz"
STATUS = "compare.json"
ERROR = "error.txt"
EXPORT = "export"
LOCK = ".lock"


class RunFolderError(ConfigError):
    """A run folder's file is missing or unreadable; the message names the file and says what to do."""


class RunFolderBusy(RunFolderError):
    """Another process holds the folder's writer lock."""


class RunFolder:
    """The files of one run folder (which need not exist yet)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / TENSORBOARD

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINTS / LAST_CHECKPOINT

    @property
    def export_dir(self) -> Path:
        return self.path / EXPORT

    def is_run(self) -> bool:
        """Whether the folder holds a run (its ``config.json``)."""
        return self.config_path.is_file()

    def has_checkpoint(self) -> bool:
        return self.checkpoint_path.is_file()

    # ------------------------------------------------------------------ reading

    def read_config(self) -> TrainConfig:
        """The run's config; a clear error when the folder is not a run."""
        if not self.is_run():
            raise RunFolderError(
                f"{self.path} is not a selfsup run folder (no {CONFIG}). Pass the --out folder of `selfsup pretrain`."
            )
        try:
            cfg = TrainConfig.from_dict(self.read_json(CONFIG, required=True))
        except (TypeError, ValueError) as err:
            raise RunFolderError(f"{self.config_path} is not a valid selfsup config: {err}") from err
        resolve_augment(cfg)  # config.json of runs made before the recipe was resolved once, at set-up
        return cfg

    def read_json(self, name: str, required: bool = False) -> dict[str, Any]:
        """The JSON object in file ``name`` ({} when it is missing and not ``required``)."""
        path = self.path / name
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            if required:
                raise RunFolderError(f"{path} is missing") from None
            return {}
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise RunFolderError(f"{path} is not valid JSON ({err})") from None
        if not isinstance(data, dict):
            raise RunFolderError(f"{path} should hold a JSON object, not {type(data).__name__}")
        return data

    def read_summary(self) -> dict[str, Any]:
        return self.read_json(SUMMARY)

    def read_evaluation(self) -> dict[str, Any]:
        return self.read_json(EVALUATION)

    def read_metrics(self) -> list[dict[str, Any]]:
        """Every complete row of ``metrics.jsonl`` (a line cut short by a crash or a full disk is skipped)."""
        if not self.metrics_path.is_file():
            return []
        rows = []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return rows

    def read_checkpoint(self, map_location: str | torch.device = "cpu") -> dict[str, Any]:
        """The last checkpoint (data only: see :func:`selfsup.checkpoint.load_checkpoint`)."""
        return load_checkpoint(self.checkpoint_path, map_location=map_location)

    # ------------------------------------------------------------------ writing

    @contextlib.contextmanager
    def writer_lock(self) -> Iterator[None]:
        """Hold the folder's writer lock (creating the folder if needed) for the ``with`` block; a second
        writer gets :class:`RunFolderBusy` naming the holder. Folder errors (read-only, a path under a file)
        become one-line :class:`RunFolderError` messages that name the path."""
        try:
            import fcntl
        except ImportError:  # not POSIX (Windows): no lock, as before
            yield
            return
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except (NotADirectoryError, FileExistsError) as err:
            raise RunFolderError(f"cannot use {self.path} as a run folder: {err.strerror} ({err.filename})") from None
        except PermissionError as err:
            raise RunFolderError(f"cannot write to {self.path}: permission denied ({err.filename})") from None
        except OSError as err:
            raise RunFolderError(f"cannot write to {self.path}: {err.strerror} ({err.filename})") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "another process"
                raise RunFolderBusy(
                    f"{self.path} is being written by {holder}; wait for it to finish or stop it first "
                    "(nothing was changed)"
                ) from None
            os.ftruncate(fd, 0)
            command = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:300]
            os.pwrite(
                fd,
                (
                    f"PID {os.getpid()} on host {socket.gethostname()} since "
                    f"{time.strftime('%Y-%m-%d %H:%M:%S')} ({command})\n"
                ).encode(),
                0,
            )
            yield
        finally:
            os.close(fd)  # releases the lock

    def write_json(self, name: str, data: dict[str, Any]) -> Path:
        """Write ``data`` to file ``name`` atomically (non-finite numbers become ``null``)."""
        path = self.path / name
        atomic_write_text(json_text(data), path)
        return path

    def write_config(self, cfg: TrainConfig) -> Path:
        return self.write_json(CONFIG, cfg.to_dict())


def json_text(data: Any) -> str:
    """Indented, strict JSON: NaN and infinities become ``null`` (``json.dumps`` would write bare ``NaN``)."""
    return json.dumps(finite_or_none(data), indent=2, allow_nan=False) + "\n"


def finite_or_none(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None, recursively through dicts, lists and tuples."""
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value
