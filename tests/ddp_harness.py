"""Run a method's training step in 1 process and in 2 ``gloo`` processes on the same global batch.

Both runs start from the same weights and see the same images: the 2-process run splits the
global batch in two halves, wraps the method in DistributedDataParallel and gathers across ranks
where the loss needs the global batch. BatchNorm layers are put in eval mode in both runs, so
that the only interaction between samples is the loss itself (PyTorch's SyncBatchNorm does not
run on the CPU). The step is repeated ``steps`` times without an optimizer so that state carried
across steps (TiCo's C, queues) is compared too.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel

from selfsup.methods import METHODS, Progress
from selfsup.models import build_backbone


def make_method(name: str, args: dict[str, Any], gather: bool) -> nn.Module:
    torch.manual_seed(0)
    cls = METHODS.get(name)
    backbone = build_backbone("resnet10", "cifar", in_channels=3)
    method = cls(backbone, cls.make_args(args), gather_distributed=gather)
    for module in method.modules():
        if isinstance(module, _BatchNorm):
            module.eval()
    return method


def global_batch(num_views: int, batch: int, size: int, seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 3, size, size, generator=g) for _ in range(num_views)]


def _steps(model: nn.Module, method: nn.Module, views: list[torch.Tensor], steps: int
           ) -> tuple[list[float], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    losses = []
    for step in range(steps):
        model.zero_grad(set_to_none=True)
        out = model(views, Progress(step, 100, 0, 100))
        out.loss.backward()
        loss = out.loss.detach().clone()
        if dist.is_initialized():
            dist.all_reduce(loss)
            loss /= dist.get_world_size()
        losses.append(float(loss))
    grads = {n: p.grad.detach().clone() for n, p in method.named_parameters() if p.grad is not None}
    buffers = {n: b.detach().clone() for n, b in method.named_buffers() if "running" not in n
               and "num_batches" not in n}
    return losses, grads, buffers


def single_process(name: str, args: dict[str, Any], num_views: int = 2, batch: int = 8, size: int = 16,
                   steps: int = 2) -> tuple[list[float], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    method = make_method(name, args, gather=False)
    return _steps(method, method, global_batch(num_views, batch, size), steps)


def _break_gather() -> None:
    """Replace the differentiable gather by a plain all_gather (the classic silent bug)."""
    import selfsup.distributed as sdist

    real = sdist.gather
    sdist.gather = lambda tensor, with_grad=True: real(tensor, with_grad=False)


def _worker(rank: int, world: int, init_file: str, out_file: str, name: str, args: dict[str, Any],
            num_views: int, batch: int, size: int, steps: int, break_gather: bool) -> None:
    torch.set_num_threads(1)
    if break_gather:
        _break_gather()
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        method = make_method(name, args, gather=True)
        model = DistributedDataParallel(method, broadcast_buffers=False)
        local = batch // world
        views = [v[rank * local: (rank + 1) * local] for v in global_batch(num_views, batch, size)]
        result = _steps(model, method, views, steps)
        if rank == 0:
            torch.save(result, out_file)
    finally:
        dist.destroy_process_group()


def two_processes(name: str, args: dict[str, Any], num_views: int = 2, batch: int = 8, size: int = 16,
                  steps: int = 2, break_gather: bool = False
                  ) -> tuple[list[float], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    with tempfile.TemporaryDirectory() as tmp:
        init_file, out_file = os.path.join(tmp, "init"), os.path.join(tmp, "out.pt")
        worker_args = (2, init_file, out_file, name, args, num_views, batch, size, steps, break_gather)
        mp.start_processes(_worker, args=worker_args, nprocs=2, join=True, start_method="spawn")
        return torch.load(out_file, weights_only=False)


def max_relative_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys(), set(a) ^ set(b)
    worst = 0.0
    for key in a:
        scale = max(float(a[key].abs().max()), 1e-6)
        worst = max(worst, float((a[key] - b[key]).abs().max()) / scale)
    return worst
