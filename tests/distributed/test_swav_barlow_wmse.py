"""SwAV, Barlow Twins and W-MSE on 2 gloo processes equal 1 process on the same global batch.

* SwAV: Sinkhorn's global sum and prototype sums are all-reduced and B counts both ranks' samples, so the
  codes, losses and gradients match; with the queue, the global queue buffer matches too (multi-crop views,
  a few prototypes, the prototypes not frozen so that their gradients are compared).
* Barlow Twins: the batch statistics and the cross-correlation come from the gathered global batch.
* W-MSE: the sub-batches are drawn from the gathered global batch with rank 0's permutation.

The comparison can fail: ``tests/test_distributed.py`` has the harness's negative control (a gather
without gradient), and the checks below show that the per-rank shortcuts (Sinkhorn, the Barlow Twins
statistics, the W-MSE sub-batches computed on one rank's shard) give different values from the global
ones, which the equivalence test would see.
"""

from __future__ import annotations

import pytest
import torch

from selfsup.losses import barlow_twins, sinkhorn_knopp, wmse
from tests.distributed.harness import Case, assert_equivalent

pytestmark = pytest.mark.slow  # multi-process

SWAV = {"hidden_dim": 32, "latent_dim": 8, "nmb_prototypes": 5, "freeze_prototypes_epochs": 0.0}

CASES = [
    Case("swav", SWAV, small=2),
    Case("swav", {**SWAV, "epsilon": 0.5, "queue_length": 8, "queue_start_epoch": 0}, small=2, steps=3),
    Case("barlowtwins", {"projector": (32, 32, 16)}),
    Case("wmse", {"hidden_dim": 32, "latent_dim": 2, "w_size": 4}),
]


def test_two_processes_match_one_process():
    assert_equivalent(CASES)


def test_per_rank_shortcuts_differ_from_the_global_values():
    g = torch.Generator().manual_seed(0)
    scores = torch.nn.functional.normalize(torch.randn(8, 5, generator=g), dim=1)
    halves = torch.cat([sinkhorn_knopp(scores[:4]), sinkhorn_knopp(scores[4:])])
    assert (halves - sinkhorn_knopp(scores)).abs().max() > 1e-3
    z1, z2 = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g)
    per_rank = (barlow_twins(z1[:4], z2[:4]) + barlow_twins(z1[4:], z2[4:])) / 2
    assert abs(per_rank - barlow_twins(z1, z2)) > 1e-2
    # W-MSE with one global sub-batch of 8 against each rank whitening its own 4 images
    v1, v2 = torch.randn(8, 2, generator=g), torch.randn(8, 2, generator=g)
    per_rank = (wmse([v1[:4], v2[:4]], 4) + wmse([v1[4:], v2[4:]], 4)) / 2
    assert abs(per_rank - wmse([v1, v2], 8)) > 1e-2
