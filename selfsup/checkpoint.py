"""Checkpoint files that hold data only, written atomically.

**Data only.** A checkpoint holds tensors, numbers, strings, booleans, None and dicts, lists and tuples of
them, nothing else: :func:`save_checkpoint` refuses any other object before writing, and
:func:`load_checkpoint` reads with ``torch.load(weights_only=True)``, PyTorch's restricted unpickler, which
refuses every other object instead of constructing it. A crafted file (a pickled ``__reduce__`` payload in a
``last.pt`` someone shared) is therefore refused with :class:`UnsafeCheckpointError` and its code never
runs, whichever command opens it (``eval``, ``export``, ``embed``, ``pretrain --resume``, ``compare``).

**Atomic.** Every file is written to a temporary name in the same folder, flushed and fsynced, then renamed
over the target (``os.replace`` is atomic on POSIX and Windows file systems): a crash, a kill or a full
disk while writing leaves the previous file intact. The temporary file is removed on failure; files left by
a process killed mid-write (``.NAME.*.tmp``) are removed by :func:`remove_stale_temporaries` when the next
writer of the folder starts.
"""

from __future__ import annotations

import errno
import os
import pickle
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

PLAIN_TYPES = (torch.Tensor, int, float, str, bool, type(None))


class CheckpointError(ValueError):
    """A checkpoint cannot be read or written; the message names the file and says why."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint holds something other than data (objects whose loading could run code)."""


def check_data_only(obj: Any, where: str = "checkpoint") -> None:
    """Raise :class:`CheckpointError` if ``obj`` holds anything but tensors, plain values and containers."""
    if isinstance(obj, PLAIN_TYPES):
        return
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, (str, int)):
                raise CheckpointError(f"{where}: key {key!r} is a {type(key).__name__}, not a string or an int")
            check_data_only(value, f"{where}[{key!r}]")
        return
    if isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            check_data_only(value, f"{where}[{i}]")
        return
    raise CheckpointError(
        f"{where} is a {type(obj).__module__}.{type(obj).__qualname__}: checkpoints hold data only "
        "(tensors, numbers, strings and containers of them); convert it first"
    )


def _atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        # torch.save reports a short write of its zip writer as "unexpected pos" rather than ENOSPC
        short_write = isinstance(err, RuntimeError) and "unexpected pos" in str(err)
        if (isinstance(err, OSError) and err.errno == errno.ENOSPC) or short_write:
            raise OSError(
                errno.ENOSPC, f"no space left on the device while writing {path}; the previous file there is kept"
            ) from err
        raise


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` (data only, checked first) to ``path`` atomically."""
    check_data_only(state)
    _atomic_write(path, lambda handle: torch.save(state, handle))


def atomic_write_text(text: str, path: str | Path) -> None:
    """Write a text file atomically (config.json, summary.json ...)."""
    data = text.encode("utf-8")

    def write(handle: IO[bytes]) -> None:
        handle.write(data)

    _atomic_write(path, write)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, refusing anything but data (see the module
    docstring). Errors name the file: missing, damaged (truncated, not a checkpoint) or unsafe."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {path}; train first with `selfsup pretrain --out {path.parent.parent}`"
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpointError(
            f"refused to load {path}: it holds objects other than tensors and plain data, which could run "
            f"code when loaded ({str(err).splitlines()[0][:200]}). selfsup checkpoints never do; do not use this "
            "file unless you know where it comes from"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(
            f"{path} is damaged or not a checkpoint ({type(err).__name__}: {str(err).splitlines()[0][:200]})"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a selfsup checkpoint (it holds a {type(state).__name__})")
    return state


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files (``.NAME.*.tmp``) that a writer killed mid-write left in ``folder``.
    Call only while holding the folder's lock. Returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for tmp in folder.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed
