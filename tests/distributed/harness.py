"""Run methods' training steps in 1 process and in 2 ``gloo`` processes on the same global batch.

Both runs start from the same weights and see the same images: the 2-process run splits the global batch in
two halves, wraps the method in DistributedDataParallel and gathers across ranks where the loss needs the
global batch. BatchNorm runs in train mode (``Case.bn``):

* ``"global"`` (the default): the 2-process run syncs BN across ranks with :func:`selfsup.cross_rank_bn.
  convert_batchnorm` (the papers' SyncBN / global BN), so both runs normalise with the global batch's
  statistics and must agree;
* ``"per_rank"``: plain BN in both; each rank normalises its own half. That is the design of MoCo v1/v2
  (per-device BN with Shuffle-BN), whose one-process split-batch BN with as many groups as ranks computes the
  same thing; for the other methods it is the negative control (BN statistics differ, so the runs do);
* ``"eval"``: BN in eval mode, the samples interact only through the loss.

Everything runs in float64: the comparison is then limited by the methods, not by float32 rounding, which
small batches and whitening amplify by orders of magnitude over a few steps (W-MSE's Cholesky of 4 samples,
Barlow Twins' standardisation over 8).

``steps`` optimizer steps (SGD with momentum) are taken, so that losses, the gradients of the last step,
the parameters after the last step and the state carried across steps (running statistics, TiCo's C,
queues) are compared.

Several cases run in one pair of spawned processes, because starting them costs seconds::

    results = two_processes([Case("simclr", {"temperature": 0.5}), Case("vicreg", {...})])
    reference = single_process(Case("simclr", {"temperature": 0.5}))
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel

from selfsup.cross_rank_bn import convert_batchnorm
from selfsup.methods import METHODS, Progress
from selfsup.models import LibraryOptions, build_backbone

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
    bn: str = "global"
    backbone_args: tuple[str, ...] = ()  # for a timm:/tv: backbone

    @property
    def label(self) -> str:
        return f"{self.method}{sorted(self.args.items())}/{self.bn}/{self.views}+{self.small} views/{self.steps} steps"


def make_method(case: Case, gather: bool) -> nn.Module:
    torch.manual_seed(0)
    cls = METHODS.get(case.method)
    options = LibraryOptions(image_size=case.size, args=case.backbone_args)
    backbone = build_backbone(case.backbone, case.stem, in_channels=3, norm=case.norm, options=options)
    method = cls(backbone, cls.make_args(case.args), gather_distributed=gather)
    if case.bn == "eval":
        for module in method.modules():
            if isinstance(module, _BatchNorm):
                module.eval()
    if case.bn == "global" and gather:
        method = convert_batchnorm(method, "cpu")
    return method


def global_batch(case: Case, seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    large = [torch.randn(case.batch, 3, case.size, case.size, generator=g) for _ in range(case.views)]
    small = [torch.randn(case.batch, 3, case.small_size, case.small_size, generator=g) for _ in range(case.small)]
    return large + small


def _run_steps(model: nn.Module, method: nn.Module, views: list[torch.Tensor], case: Case) -> Result:
    optimizer = torch.optim.SGD(method.parameters(), lr=1e-3, momentum=0.9)  # small steps: a well-posed 2nd step
    losses = []
    for step in range(case.steps):
        progress = Progress(step, 100, 0, 100)
        optimizer.zero_grad(set_to_none=True)
        out = model(views, progress)
        out.loss.backward()
        method.before_optimizer_step(progress)
        grads = {n: p.grad.detach().clone() for n, p in method.named_parameters() if p.grad is not None}
        optimizer.step()
        method.after_optimizer_step(progress)
        loss = out.loss.detach().clone()
        if dist.is_initialized():
            dist.all_reduce(loss)
            loss /= dist.get_world_size()
        losses.append(float(loss))
    state = {f"param:{n}": p.detach().clone() for n, p in method.named_parameters()}
    for name, buffer in method.named_buffers():
        running = "running" in name or "num_batches" in name
        if running and case.bn == "per_rank":
            continue  # each rank's running statistics are those of its own half
        state[f"buffer:{name}"] = buffer.detach().clone().float()
    return losses, grads, state


def single_process(case: Case) -> Result:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        method = make_method(case, gather=False)
        return _run_steps(method, method, global_batch(case), case)
    finally:
        torch.set_default_dtype(previous)


def _break_gather() -> None:
    """Replace the differentiable gather by a plain all_gather (the classic silent bug)."""
    import selfsup.distributed as sdist

    real = sdist.gather
    sdist.gather = lambda tensor, with_grad=True: real(tensor, with_grad=False)


def _worker(rank: int, world: int, init_file: str, out_file: str, cases: list[Case], break_gather: bool) -> None:
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
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
            results[case.label] = _run_steps(model, method, views, case)
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


def worst_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], floor: float = 0.0) -> tuple[float, str]:
    """The largest max|a - b| / max(max|a|, floor) over the tensors, and the tensor's name."""
    assert a.keys() == b.keys(), set(a) ^ set(b)
    worst, where = 0.0, ""
    for key in a:
        scale = max(float(a[key].abs().max()), floor, 1e-12)
        difference = float((a[key] - b[key]).abs().max()) / scale
        if difference > worst:
            worst, where = difference, key
    return worst, where


def max_relative_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], floor: float = 0.0) -> float:
    """max over tensors of max|a - b| / max(max|a|, floor) (0 when both are empty)."""
    return worst_difference(a, b, floor)[0]


def assert_equivalent(cases: list[Case], rel: float = 1e-8) -> None:
    """The 1-process and 2-process runs of every case agree: the losses, the last step's gradients, the
    parameters and the buffers (running statistics, TiCo's C, queues) after the last optimizer step, each
    tensor to ``rel`` of its largest value.

    A gradient far smaller than the model's largest one is compared on the scale of 1e-2 of that largest
    gradient instead: gradients that are analytically zero (the bias of a layer followed by BatchNorm, the
    LayerNorm bias of DIM's score network under NCE, which shifts every score of a softmax row alike) are float
    noise in both runs, and noise has no relative precision. Likewise a state tensor is compared on the scale of
    at least 1e-3 (weights and statistics are of order 0.01 to 1; the running mean after a BN without an
    affine map is zero up to rounding)."""
    distributed = two_processes(cases)
    for case in cases:
        losses1, grads1, state1 = single_process(case)
        losses2, grads2, state2 = distributed[case.label]
        assert losses2 == pytest.approx(losses1, rel=rel, abs=1e-12), case.label
        largest = max(float(g.abs().max()) for g in grads1.values())
        worst, where = worst_difference(grads1, grads2, floor=1e-2 * largest)
        assert worst < rel, (case.label, "gradient", where, worst)
        worst, where = worst_difference(state1, state2, floor=1e-3)
        assert worst < rel, (case.label, where, worst)
