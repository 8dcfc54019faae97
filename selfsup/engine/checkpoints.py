"""What the engine checks around a checkpoint: every state finite, room on the disk, the last K kept."""

from __future__ import annotations

import shutil

import torch
from torch import nn

from selfsup.config import ConfigError
from selfsup.run_folder import RunFolder

MARGIN_BYTES = 64 << 20
"""Free space wanted beyond the checkpoints themselves (logs, config, TensorBoard)."""


def first_nonfinite(module: nn.Module) -> str | None:
    """The name of the first parameter or buffer holding NaN or inf (None when all are finite). Checked
    before every checkpoint, so that a run whose loss is still finite but whose weights or BatchNorm
    statistics have blown up never overwrites its last good checkpoint."""
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return name
    return None


def checkpoint_bytes(method: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """An upper estimate of one checkpoint's size: the weights, the buffers and the optimizer's state (at most
    two tensors per parameter, Adam's moments)."""
    weights = sum(t.numel() * t.element_size() for t in method.parameters())
    buffers = sum(t.numel() * t.element_size() for t in method.buffers())
    return weights * 3 + buffers


def check_free_space(folder: RunFolder, method: nn.Module, optimizer: torch.optim.Optimizer, keep: int) -> None:
    """Refuse to start when the disk of ``folder`` cannot hold the checkpoints (one more than kept, the one
    being written; those already there count) plus a margin: better now than after an epoch of training."""
    existing = (
        sum(p.stat().st_size for p in folder.checkpoint_dir.glob("*.pt")) if folder.checkpoint_dir.is_dir() else 0
    )
    need = max(0, checkpoint_bytes(method, optimizer) * (keep + 1) - existing) + MARGIN_BYTES
    free = shutil.disk_usage(folder.path).free
    if free < need:
        raise ConfigError(
            f"not enough free space for checkpoints in {folder.path}: {free / 2**20:.0f} MiB free, about "
            f"{need / 2**20:.0f} MiB needed; free some space or choose another --out"
        )


def keep_recent(folder: RunFolder, step: int, keep: int) -> None:
    """Also keep ``last.pt`` as ``step-<step>.pt`` (a hard link: no copy) and delete all but the ``keep``
    newest of those."""
    step_file = folder.checkpoint_dir / f"step-{step:09d}.pt"
    step_file.unlink(missing_ok=True)
    try:
        step_file.hardlink_to(folder.checkpoint_path)
    except OSError:  # a file system without hard links
        shutil.copy2(folder.checkpoint_path, step_file)
    for old in sorted(folder.checkpoint_dir.glob("step-*.pt"))[:-keep]:
        old.unlink(missing_ok=True)
