"""MoCo's Shuffle-BN under DDP: the key encoder of each rank sees images of both ranks, and the keys come back
in the local order."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.distributed.harness import Case, make_method

pytestmark = pytest.mark.slow  # multi-process

MOCO_V1 = Case("moco", {"version": "v1", "latent_dim": 16, "queue_size": 32, "temperature": 0.07}, bn="eval")


def _shuffle_worker(rank: int, world: int, init_file: str, out_file: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        method = make_method(MOCO_V1, gather=True)  # BN in eval mode: keys are per-sample functions
        g = torch.Generator().manual_seed(3)
        x_all = torch.randn(8, 3, 16, 16, generator=g)
        x = x_all[rank * 4 : (rank + 1) * 4]
        seen = []
        hook = method.momentum_backbone.register_forward_hook(lambda m, inputs, out: seen.append(inputs[0]))
        shuffled = method.encode_keys(x, seed=11)
        hook.remove()
        method.args.shuffle_bn = False
        plain = method.encode_keys(x, seed=11)
        if rank == 0:
            torch.save({"seen": seen[0], "shuffled": shuffled, "plain": plain, "x_all": x_all}, out_file)
    finally:
        dist.destroy_process_group()


def test_shuffle_bn_mixes_ranks_and_restores_the_order():
    with tempfile.TemporaryDirectory() as tmp:
        init_file, out_file = os.path.join(tmp, "init"), os.path.join(tmp, "out.pt")
        mp.start_processes(_shuffle_worker, args=(2, init_file, out_file), nprocs=2, join=True, start_method="spawn")
        result = torch.load(out_file)
    seen, x_all = result["seen"], result["x_all"]
    # rank 0's key encoder saw 4 images of the global batch, not only its own ones
    rows = [int(torch.cdist(img.flatten()[None], x_all.flatten(1)).argmin()) for img in seen]
    assert len(set(rows)) == 4 and set(rows) != {0, 1, 2, 3}
    torch.testing.assert_close(result["shuffled"], result["plain"], rtol=1e-5, atol=1e-6)
