"""CrossRankBatchNorm on N gloo processes equals one process's BatchNorm on the concatenated batch.

Each rank holds a slice of one global batch and back-propagates a fixed random weighting of its outputs; the
single process does the same on the whole batch. The outputs, the gradients of the inputs (each rank's
slice), the gradients of gamma and beta (summed over the ranks of a group, as DDP's all-reduce would) and the
running statistics after two steps must agree, for BatchNorm1d and BatchNorm2d, over all ranks (2 processes)
and within groups of 2 of 4 processes (SwAV's ``syncbn_process_group_size``). On CUDA, ``nn.SyncBatchNorm``
is the reference (``-m cuda``).
"""

from __future__ import annotations

import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from selfsup.cross_rank_bn import CrossRankBatchNorm, convert_batchnorm, is_synced

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]  # multi-process

BATCH = 8


def _inputs(dims: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shape = (BATCH, 5) if dims == 1 else (BATCH, 5, 3, 4)
    x = torch.randn(shape, generator=g) * 3 + 1
    return x, torch.randn(shape, generator=g)


def _batchnorm(dims: int) -> nn.Module:
    torch.manual_seed(0)
    bn = nn.BatchNorm1d(5) if dims == 1 else nn.BatchNorm2d(5)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)
    return bn


def _steps(bn: nn.Module, dims: int, rows: slice) -> dict[str, torch.Tensor]:
    """Two forward/backward passes on rows ``rows`` of two global batches."""
    out: dict[str, torch.Tensor] = {}
    for step in range(2):
        bn.zero_grad(set_to_none=True)
        x, weights = _inputs(dims, step)
        x = x[rows].clone().requires_grad_(True)
        y = bn(x)
        (y * weights[rows]).sum().backward()
        out.update({f"y{step}": y.detach(), f"dx{step}": x.grad})
        out.update({f"dw{step}": bn.weight.grad, f"db{step}": bn.bias.grad})
    out.update(mean=bn.running_mean.clone(), var=bn.running_var.clone(), count=bn.num_batches_tracked.clone())
    return out


def _worker(rank: int, world: int, group_size: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        results = {}
        for dims in (1, 2):
            bn = convert_batchnorm(nn.Sequential(_batchnorm(dims)), "cpu", group_size)[0]
            assert isinstance(bn, CrossRankBatchNorm)
            group = group_size if group_size else world
            local = BATCH // group  # each group holds the whole global batch of one "node"
            start = (rank % group) * local
            out = _steps(bn, dims, slice(start, start + local))
            for key in [k for k in out if k.startswith(("dw", "db"))]:
                grads = [torch.zeros_like(out[key]) for _ in range(world)]
                dist.all_gather(grads, out[key])
                first = rank - rank % group
                out[key] = sum(grads[first : first + group])
            results[dims] = out
        torch.save(results, os.path.join(out_dir, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _run(world: int, group_size: int) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "init")
        mp.start_processes(
            _worker, args=(world, group_size, init_file, tmp), nprocs=world, join=True, start_method="spawn"
        )
        return [torch.load(os.path.join(tmp, f"{rank}.pt")) for rank in range(world)]


@pytest.mark.parametrize(("world", "group_size"), [(2, 0), (4, 2)])
def test_cross_rank_batchnorm_equals_one_process_on_the_whole_batch(world, group_size):
    ranks = _run(world, group_size)
    group = group_size or world
    local = BATCH // group
    for dims in (1, 2):
        reference = _steps(_batchnorm(dims), dims, slice(0, BATCH))
        for rank, results in enumerate(ranks):
            got = results[dims]
            rows = slice((rank % group) * local, (rank % group + 1) * local)
            for step in range(2):
                torch.testing.assert_close(got[f"y{step}"], reference[f"y{step}"][rows], rtol=1e-5, atol=1e-5)
                torch.testing.assert_close(got[f"dx{step}"], reference[f"dx{step}"][rows], rtol=1e-5, atol=1e-5)
                torch.testing.assert_close(got[f"dw{step}"], reference[f"dw{step}"], rtol=1e-5, atol=1e-5)
                torch.testing.assert_close(got[f"db{step}"], reference[f"db{step}"], rtol=1e-5, atol=1e-5)
            for key in ("mean", "var", "count"):
                torch.testing.assert_close(got[key], reference[key], rtol=1e-5, atol=1e-6)


def test_conversion_keeps_the_parameters_and_is_a_no_op_in_one_process():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    assert convert_batchnorm(model, "cpu") is model and not is_synced(model)  # not distributed
    bn = model[1]
    converted = CrossRankBatchNorm(4)
    converted.load_state_dict(bn.state_dict())
    x = torch.randn(6, 4, 5, 5)
    torch.testing.assert_close(converted(x), bn(x))  # an ordinary BN outside a process group


@pytest.mark.cuda
def test_cross_rank_batchnorm_matches_torch_syncbatchnorm_on_cuda(tmp_path):
    """Our all-reduce path on CUDA tensors (a 1-process NCCL group) against ``nn.SyncBatchNorm``; the
    multi-GPU comparison runs in ``benchmarks/gpu_check.sh``."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    dist.init_process_group("nccl", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    try:
        x = torch.randn(16, 8, 4, 4, device="cuda", requires_grad=True)
        reference = nn.SyncBatchNorm(8).cuda()
        ours = CrossRankBatchNorm(8).cuda()
        y_ref, y = reference(x), ours(x)
        torch.testing.assert_close(y, y_ref)
        (grad_ref,) = torch.autograd.grad(y_ref.square().sum(), x)
        (grad,) = torch.autograd.grad(y.square().sum(), x)
        torch.testing.assert_close(grad, grad_ref)
        torch.testing.assert_close(ours.running_var, reference.running_var)
    finally:
        dist.destroy_process_group()
