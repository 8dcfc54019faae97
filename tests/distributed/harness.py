"""Run methods' training steps in 1 process and in 2 ``gloo`` processes on the same global batch.

Both runs start from the same weights and see the same images: the 2-process run splits the
global batch in two halves, wraps the method in DistributedDataParallel and gathers across ranks
where the loss needs the global batch. BatchNorm layers are put in eval mode in both runs, so
that the only interaction between samples is the loss itself (PyTorch's SyncBatchNorm does not
run on the CPU). The step is repeated ``steps`` times without an optimizer so that state carried
across steps (TiCo's C, queues) is compared too.

Several cases run in one pair of spawned processes, because starting them costs seconds::

    results = two_processes([Case("simclr", {"temperature": 0.5}), Case("vicreg", {...})])
    reference = single_process(Case("simclr", {"temperature": 0.5}))
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel

from selfsup.methods import METHODS, Progress
from selfsup.models import build_backbone

Result = tuple[list[float], dict[str, torch.Tensor], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class Case:
    """One method configuration to compare. ``views`` large views of ``size`` px, plus ``small``
    views of ``small_size`` px (multi-crop)."""

    method: str
    args: dict[str, Any] = field(default_factory=dict)
    views: int = 2
    small: int = 0
    size: int = 16
    small_size: int = 8
    batch: int = 8
    steps: int = 2
    backbone: str = "resnet10"
    stem: str = "cifar"
    norm: str = "batch"

    @property
    def label(self) -> str:
        return f"{self.method}{sorted(self.args.items())}"


def make_method(case: Case, gather: bool) -> nn.Module:
    torch.manual_seed(0)
    cls = METHODS.get(case.method)
    backbone = build_backbone(case.backbone, case.stem, in_channels=3, norm=case.norm)
    method = cls(backbone, cls.make_args(case.args), gather_distributed=gather)
    for module in method.modules():
        if isinstance(module, _BatchNorm):
            module.eval()
    return method


def global_batch(case: Case, seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    large = [torch.randn(case.batch, 3, case.size, case.size, generator=g) for _ in range(case.views)]
    small = [torch.randn(case.batch, 3, case.small_size, case.small_size, generator=g) for _ in range(case.small)]
    return large + small


def _run_steps(model: nn.Module, method: nn.Module, views: list[torch.Tensor], steps: int) -> Result:
    losses = []
    for step in range(steps):
        model.zero_grad(set_to_none=True)
        out = model(views, Progress(step, 100, 0, 100))
        out.loss.backward()
        method.before_optimizer_step(Progress(step, 100, 0, 100))
        loss = out.loss.detach().clone()
        if dist.is_initialized():
            dist.all_reduce(loss)
            loss /= dist.get_world_size()
        losses.append(float(loss))
    grads = {n: p.grad.detach().clone() for n, p in method.named_parameters() if p.grad is not None}
    buffers = {
        n: b.detach().clone() for n, b in method.named_buffers() if "running" not in n and "num_batches" not in n
    }
    return losses, grads, buffers


def single_process(case: Case) -> Result:
    method = make_method(case, gather=False)
    return _run_steps(method, method, global_batch(case), case.steps)


def _break_gather() -> None:
    """Replace the differentiable gather by a plain all_gather (the classic silent bug)."""
    import selfsup.distributed as sdist

    real = sdist.gather
    sdist.gather = lambda tensor, with_grad=True: real(tensor, with_grad=False)


def _worker(rank: int, world: int, init_file: str, out_file: str, cases: list[Case], break_gather: bool) -> None:
    torch.set_num_threads(1)
    if break_gather:
        _break_gather()
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        results = {}
        for case in cases:
            method = make_method(case, gather=True)
            model = DistributedDataParallel(method, broadcast_buffers=False)
            local = case.batch // world
            views = [v[rank * local : (rank + 1) * local] for v in global_batch(case)]
            results[case.label] = _run_steps(model, method, views, case.steps)
        if rank == 0:
            torch.save(results, out_file)
    finally:
        dist.destroy_process_group()


def two_processes(cases: list[Case], break_gather: bool = False) -> dict[str, Result]:
    """Results of every case run on 2 gloo processes, keyed by ``case.label``."""
    with tempfile.TemporaryDirectory() as tmp:
        init_file, out_file = os.path.join(tmp, "init"), os.path.join(tmp, "out.pt")
        mp.start_processes(
            _worker, args=(2, init_file, out_file, cases, break_gather), nprocs=2, join=True, start_method="spawn"
        )
        return torch.load(out_file, weights_only=False)


def max_relative_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """max over tensors of max|a - b| / max|a| (0 when both are empty)."""
    assert a.keys() == b.keys(), set(a) ^ set(b)
    worst = 0.0
    for key in a:
        scale = max(float(a[key].abs().max()), 1e-6)
        worst = max(worst, float((a[key] - b[key]).abs().max()) / scale)
    return worst


def assert_equivalent(cases: list[Case], rel: float = 1e-5) -> None:
    """The 1-process and 2-process runs of every case agree: losses, gradients, carried state."""
    distributed = two_processes(cases)
    for case in cases:
        losses1, grads1, buffers1 = single_process(case)
        losses2, grads2, buffers2 = distributed[case.label]
        assert losses2 == __import__("pytest").approx(losses1, rel=rel, abs=1e-6), case.label
        assert max_relative_difference(grads1, grads2) < rel, case.label
        if buffers1:
            assert max_relative_difference(buffers1, buffers2) < rel, case.label
