"""Run outputs: ``metrics.jsonl`` (one JSON object per logged step), TensorBoard, progress bar.

Only rank 0 writes. Every metrics row holds at least ``step``, ``epoch``, ``loss``, ``lr`` and
``images_per_s`` (source images per second of wall time, over the logging interval).
"""

from __future__ import annotations

import errno
import json
import math
import shutil
from typing import Any

from tqdm.auto import tqdm

from selfsup.checkpoint import atomic_write_text
from selfsup.run_folder import RunFolder, finite_or_none


def to_float(value: Any) -> float:
    return float(value.detach().float().item()) if hasattr(value, "detach") else float(value)


class MetricsLogger:
    """Appends rows to ``RUN/metrics.jsonl`` and mirrors the scalars to TensorBoard.

    ``resume_step`` says where the log continues: None for a run that starts from scratch (a ``metrics.jsonl``
    and ``tensorboard/`` left by an attempt that died before its first checkpoint are cleared, so the log
    holds each step once), else the step of the checkpoint the run resumes from: the log is repaired first
    (a last line cut short by a crash or a full disk is dropped, and so are the rows after that step, which
    the resumed run will log again) and TensorBoard purges its events after that step (``purge_step``).
    Non-finite values are written as JSON ``null``.
    """

    def __init__(
        self, folder: RunFolder, enabled: bool = True, tensorboard: bool = True, resume_step: int | None = None
    ) -> None:
        self.enabled = enabled
        self.path = folder.metrics_path
        self.writer = None
        if not enabled:
            return
        if resume_step is None:
            self.path.unlink(missing_ok=True)
            shutil.rmtree(folder.tensorboard_dir, ignore_errors=True)
        else:
            self._repair(resume_step)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                purge = None if resume_step is None else resume_step + 1
                self.writer = SummaryWriter(log_dir=str(folder.tensorboard_dir), purge_step=purge)
            except ImportError:  # tensorboard is a dependency, but keep training without it
                self.writer = None

    def log(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        clean = {
            k: (to_float(v) if not isinstance(v, (str, int)) or isinstance(v, bool) else v) for k, v in row.items()
        }
        try:
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(finite_or_none(clean), allow_nan=False) + "\n")
        except OSError as err:  # a full disk, most often: say which file (a partial line is repaired on resume)
            why = "no space left on the device" if err.errno == errno.ENOSPC else err.strerror
            raise OSError(err.errno, f"{why} while writing {self.path}") from err
        if self.writer is not None:
            for key, value in clean.items():
                if key not in ("step", "epoch") and isinstance(value, (int, float)) and math.isfinite(value):
                    self.writer.add_scalar(key, value, clean["step"])

    def _repair(self, step: int) -> None:
        """Keep the complete rows up to ``step``; drop a damaged line and the rows after ``step``."""
        if not self.path.exists():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and row.get("step", 0) <= step:
                kept.append(line)
        atomic_write_text("".join(line + "\n" for line in kept), self.path)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class ProgressBar:
    """A tqdm bar over optimizer steps showing loss, LR, images/s and the ETA."""

    def __init__(self, total: int, initial: int, enabled: bool) -> None:
        self.bar = tqdm(
            total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True, desc="pretrain"
        )

    def update(self, loss: float, lr: float, images_per_s: float, epoch: int) -> None:
        self.bar.set_postfix(
            epoch=epoch, loss=f"{loss:.4f}", lr=f"{lr:.3g}", img_s=f"{images_per_s:.0f}", refresh=False
        )
        self.bar.update(1)

    def write(self, text: str) -> None:
        self.bar.write(text)

    def close(self) -> None:
        self.bar.close()
