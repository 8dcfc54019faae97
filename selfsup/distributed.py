"""Small helpers for ``torchrun`` / DDP training and for losses that need the global batch.

The one subtle piece is :func:`gather` with gradients. A plain ``torch.distributed.all_gather``
returns tensors that are cut off from autograd, which silently drops the gradient that flows
into the *other* ranks' copies (SimCLR's and VICReg's global terms). :class:`_GatherWithGrad`
fixes this: its backward sums the incoming gradients over all ranks (``all_reduce``) and keeps
this rank's slice. Combined with DDP's gradient averaging (1/world_size) this gives exactly the
gradient of the mean loss over the global batch, which ``tests/test_distributed.py`` checks
against a single process.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def env_rank() -> int:
    """This process's rank, known before the process group exists (``RANK`` under torchrun, else 0)."""
    return rank() if is_distributed() else int(os.environ.get("RANK", "0") or 0)


def is_main_process() -> bool:
    return rank() == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def init_from_env(device_type: str) -> None:
    """Initialise the process group when started by ``torchrun`` (no-op otherwise).

    NCCL on CUDA, gloo on CPU. Each rank uses GPU ``LOCAL_RANK``.
    """
    if not launched_by_torchrun() or is_distributed():
        return
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))


def barrier() -> None:
    if is_distributed():
        dist.barrier()


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward all-reduces (sums) the gradient and returns the local slice."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        tensor = tensor.contiguous()
        sizes = [torch.zeros(1, dtype=torch.long, device=tensor.device) for _ in range(world_size())]
        dist.all_gather(sizes, torch.tensor([tensor.shape[0]], device=tensor.device))
        counts = [int(s.item()) for s in sizes]
        if len(set(counts)) != 1:
            raise RuntimeError(f"gather needs the same batch size on every rank, got {counts}")
        parts = [torch.empty_like(tensor) for _ in range(world_size())]
        dist.all_gather(parts, tensor)
        ctx.local_size = tensor.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = rank() * ctx.local_size
        return grad[start : start + ctx.local_size]


def gather(tensor: torch.Tensor, with_grad: bool = True) -> torch.Tensor:
    """Concatenate ``tensor`` from every rank along dim 0 (rank order). Identity without DDP.

    With ``with_grad`` the result is differentiable with respect to every rank's input (see
    the module docstring); without it the result is detached (MoCo's keys, SwAV's queue).
    """
    if not is_distributed() or world_size() == 1:
        return tensor
    if with_grad and tensor.requires_grad:
        return _GatherWithGrad.apply(tensor)
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.detach().contiguous())
    return torch.cat(parts, dim=0)


def scale_gradient(tensor: torch.Tensor, factor: float) -> torch.Tensor:
    """``tensor`` unchanged in value, its gradient multiplied by ``factor`` (to reproduce a reference code's
    gradient scale without changing the logged loss)."""
    if factor == 1.0:
        return tensor
    return tensor.detach() + factor * (tensor - tensor.detach())


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """In-place sum over ranks of a tensor that carries no gradient (Sinkhorn sums, statistics)."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean over ranks (for logging a loss that each rank computed on its shard)."""
    if is_distributed():
        tensor = tensor.detach().clone()
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor /= world_size()
    return tensor
