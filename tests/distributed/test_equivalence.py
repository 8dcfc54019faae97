"""Every method on 2 gloo processes equals 1 process on the same global batch, with BatchNorm in train mode.

The 2-process run syncs BatchNorm across ranks (the papers' SyncBN / global BN), so both runs normalise with
the statistics of the global batch; losses, gradients, the parameters after a few SGD steps and the state
carried across steps (running statistics, TiCo's C, queues) must agree:

* SimCLR, VICReg, TiCo, Barlow Twins, W-MSE: the global terms gather with gradients; W-MSE's sub-batches are
  drawn from the gathered batch with rank 0's permutation.
* SwAV: Sinkhorn's sums are all-reduced; with the queue, the global queue matches too (multi-crop views).
* BYOL, SimSiam: per-sample losses; DDP's gradient averaging gives the global mean.
* MoCo v1/v2: per-device BN with Shuffle-BN, as in the paper: under DDP each rank normalises its own queries
  and a shuffled slice of the keys, which one process computes with split-batch BN over as many groups as
  ranks; the queue after the steps matches (both ranks' keys, in rank order, the pointer wrapping around).
* MoCo v3: the keys gathered from both ranks and the label offsets give the loss of one process; also on a
  timm ViT-Tiny (2 blocks, patch 4) with the ViT heads (3-layer projector, predictor ending in BN).
* CPC, DIM, AMDIM: negatives from the global batch; random choices drawn for the global batch and sliced.

The negative controls show that the comparison can fail: per-rank BN (no sync) changes the gradients, and so
does a gather that drops the gradient of the other ranks' copies (a plain all_gather).
"""

from __future__ import annotations

import pytest
import torch

from selfsup.losses import barlow_twins, sinkhorn_knopp, wmse
from tests.distributed.harness import Case, assert_equivalent, max_relative_difference, single_process, two_processes

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]  # multi-process

SWAV = {"hidden_dim": 32, "latent_dim": 8, "nmb_prototypes": 5, "freeze_prototypes_epochs": 0.0}
CPC = {"latent_dim": 8, "context_dim": 8, "max_offset": 3}
DIM = {"mi_units": 16, "global_dim": 8, "prior_hidden": (16,)}
SPLIT_BN = {"shuffle_bn_groups": 2}  # one process: as many BN groups as ranks
MOCO_V3_VIT = {"projector_layers": 3, "predictor_last_bn": True, "temperature": 0.2}  # the ViT heads

CASES = [
    Case("simclr", {"hidden_dim": 32, "latent_dim": 16, "temperature": 0.5}),
    Case("vicreg", {"expander": (32, 32, 32)}),
    Case("tico", {"hidden_dim": 32, "latent_dim": 16, "beta": 0.5}),
    Case("barlowtwins", {"projector": (32, 32, 16)}),
    Case("wmse", {"hidden_dim": 32, "latent_dim": 2, "w_size": 4}),
    Case("swav", SWAV, small=2),
    Case("swav", {**SWAV, "epsilon": 0.5, "queue_length": 8, "queue_start_epoch": 0}, small=2, steps=3),
    Case("byol", {"hidden_dim": 32, "pred_hidden_dim": 32, "latent_dim": 16}),
    Case("simsiam", {"hidden_dim": 32, "pred_hidden_dim": 8, "latent_dim": 16}),
    Case("moco", {"version": "v1", "latent_dim": 16, "queue_size": 32, "temperature": 0.07, **SPLIT_BN}, bn="per_rank"),
    Case(
        "moco",
        {"version": "v2", "hidden_dim": 32, "latent_dim": 16, "queue_size": 32, "symmetric": True, **SPLIT_BN},
        bn="per_rank",
    ),
    Case("moco", {"version": "v3", "hidden_dim": 32, "pred_hidden_dim": 32, "latent_dim": 16, "temperature": 0.5}),
    Case("moco", {**MOCO_V3_VIT, "version": "v3", "hidden_dim": 32, "pred_hidden_dim": 32, "latent_dim": 16},
         backbone="timm:vit_tiny_patch16_224", backbone_args=("depth=2",)),
    Case("cpc", CPC, views=1, size=20, backbone="patchnet-small", norm="group"),
    Case("cpc", {**CPC, "num_negatives": 40, "directions": ("top_down", "left_right")}, views=1, size=20,
         backbone="patchnet-small", norm="group"),
    Case("dim", {**DIM, "estimator": "jsd", "alpha": 0.5}, views=1, size=32, backbone="dim32"),
    Case("dim", {**DIM, "estimator": "nce"}, views=1, size=32, backbone="dim32"),
    Case("dim", {**DIM, "estimator": "dv", "gamma": 0.0}, views=1, size=32, backbone="dim32"),
    Case("dim", {**DIM, "occlusion": 0.5}, views=1, size=32, backbone="dim32"),
    Case("amdim", {"n_rkhs": 256}, views=2, size=32, backbone="amdim32-small"),
]  # fmt: skip


def test_two_processes_with_synced_batchnorm_match_one_process():
    assert_equivalent(CASES)


def test_per_rank_batchnorm_and_a_gather_without_gradient_are_caught():
    """Negative controls: each makes the 2-process run differ from the 1-process one."""
    args = {"hidden_dim": 32, "latent_dim": 16, "temperature": 0.5}
    per_rank, synced = Case("simclr", args, steps=1, bn="per_rank"), Case("simclr", args, steps=1)
    distributed = two_processes([per_rank])
    losses1, grads1, _ = single_process(per_rank)
    losses2, grads2, _ = distributed[per_rank.label]
    assert max_relative_difference(grads1, grads2) > 1e-2  # BN statistics of half the batch
    broken = two_processes([synced], break_gather=True)
    losses1, grads1, _ = single_process(synced)
    losses2, grads2, _ = broken[synced.label]
    assert losses2 == pytest.approx(losses1, rel=1e-5)  # the forward pass is still right ...
    assert max_relative_difference(grads1, grads2) > 1e-2  # ... but the gradients are not


def test_per_rank_shortcuts_of_the_global_losses_differ_from_the_global_values():
    g = torch.Generator().manual_seed(0)
    scores = torch.nn.functional.normalize(torch.randn(8, 5, generator=g), dim=1)
    halves = torch.cat([sinkhorn_knopp(scores[:4]), sinkhorn_knopp(scores[4:])])
    assert (halves - sinkhorn_knopp(scores)).abs().max() > 1e-3
    z1, z2 = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g)
    per_rank = (barlow_twins(z1[:4], z2[:4]) + barlow_twins(z1[4:], z2[4:])) / 2
    assert abs(per_rank - barlow_twins(z1, z2)) > 1e-2
    v1, v2 = torch.randn(8, 2, generator=g), torch.randn(8, 2, generator=g)
    per_rank = (wmse([v1[:4], v2[:4]], 4) + wmse([v1[4:], v2[4:]], 4)) / 2
    assert abs(per_rank - wmse([v1, v2], 8)) > 1e-2
