"""Under DDP, the presets' gradient-scale options reproduce the official codes' gradients exactly.

On 2 gloo processes (float64, synced BatchNorm), each official loss is written out here as its code computes
it, on the same backbone and head, and compared with our method:

* Barlow Twins (facebookresearch/barlowtwins ``main.py``): each rank standardises with SyncBN, computes its
  part of C, divides by the global batch and sums C with the plain ``torch.distributed.all_reduce``, which
  autograd does not see; DDP averages. ``rank_local_gradient=True`` must give the same gradients and the same
  parameters after one LARS step; without it our (exact) gradient is W times larger.
* SimCLR v1 (google-research/simclr ``objective.py``, tag 1.0): local anchors against the gathered global
  batch, ``loss_a + loss_b`` with the self-similarity masked by 1e9, averaged over replicas
  (``CrossShardOptimizer``'s MEAN). ``scale_loss=2`` must give the same gradients; our mean over the 2N
  anchors is half of them.
"""

from __future__ import annotations

import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from selfsup import distributed as sdist
from selfsup.config import TrainConfig
from selfsup.cross_rank_bn import convert_batchnorm
from selfsup.methods import Progress
from selfsup.optim import build_optimizer
from tests.distributed.harness import Case, global_batch, make_method

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]  # multi-process

WORLD = 2
BARLOW = {"projector": (32, 32, 16)}
SIMCLR = {"hidden_dim": 32, "latent_dim": 16, "temperature": 0.5}
LARS_CONFIG = TrainConfig(optimizer="lars", base_lr=0.2, lr_scaling="none", weight_decay=1e-6, lars_exclude_1d=True)


class OfficialBarlowTwins(nn.Module):
    """``BarlowTwins.forward`` of facebookresearch/barlowtwins ``main.py``, on our backbone and projector."""

    def __init__(self, backbone: nn.Module, projector: nn.Module, dim: int, batch_size: int) -> None:
        super().__init__()
        self.backbone, self.projector = backbone, projector
        self.bn = nn.BatchNorm1d(dim, affine=False)
        self.batch_size = batch_size

    def forward(self, y1: torch.Tensor, y2: torch.Tensor) -> torch.Tensor:
        z1 = self.projector(self.backbone(y1))
        z2 = self.projector(self.backbone(y2))
        c = self.bn(z1).T @ self.bn(z2)
        c.div_(self.batch_size)
        dist.all_reduce(c)  # not seen by autograd
        on_diag = torch.diagonal(c).add_(-1).pow_(2).sum()
        off_diag = (c - torch.diag_embed(torch.diagonal(c))).pow(2).sum()
        return on_diag + 0.0051 * off_diag


class OfficialSimCLR(nn.Module):
    """``add_contrastive_loss`` of google-research/simclr ``objective.py`` (tag 1.0) on TPU replicas."""

    def __init__(self, backbone: nn.Module, projector: nn.Module, temperature: float) -> None:
        super().__init__()
        self.backbone, self.projector, self.temperature = backbone, projector, temperature

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        hidden = F.normalize(self.projector(self.backbone(torch.cat([x1, x2]))), dim=1)
        hidden1, hidden2 = hidden.chunk(2)
        n = hidden1.shape[0]
        hidden1_large, hidden2_large = sdist.gather(hidden1), sdist.gather(hidden2)  # tpu_cross_replica_concat
        labels_idx = torch.arange(n) + dist.get_rank() * n
        masks = F.one_hot(labels_idx, hidden1_large.shape[0]).to(hidden.dtype)
        logits_aa = hidden1 @ hidden1_large.T / self.temperature - masks * 1e9
        logits_bb = hidden2 @ hidden2_large.T / self.temperature - masks * 1e9
        logits_ab = hidden1 @ hidden2_large.T / self.temperature
        logits_ba = hidden2 @ hidden1_large.T / self.temperature
        loss_a = F.cross_entropy(torch.cat([logits_ab, logits_aa], 1), labels_idx)
        loss_b = F.cross_entropy(torch.cat([logits_ba, logits_bb], 1), labels_idx)
        return loss_a + loss_b


def _step(model: nn.Module, method: nn.Module, views: list[torch.Tensor], official: bool) -> dict[str, torch.Tensor]:
    """One forward/backward and one LARS step; the gradients and the parameters after the step."""
    optimizer = build_optimizer([{"params": list(method.parameters()), "lr_mult_1d": 0.024}], LARS_CONFIG)
    loss = model(*views[:2]) if official else model(views, Progress(0, 100, 0, 100)).loss
    loss.backward()
    out = {f"grad:{n}": p.grad.clone() for n, p in method.named_parameters() if p.grad is not None}
    optimizer.step()
    out.update({f"param:{n}": p.detach().clone() for n, p in method.named_parameters()})
    return out


def _worker(rank: int, init_file: str, out_file: str) -> None:
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        results = {}
        runs = {
            "barlow/official": (Case("barlowtwins", BARLOW), True),
            "barlow/rank_local": (Case("barlowtwins", {**BARLOW, "rank_local_gradient": True}), False),
            "barlow/exact": (Case("barlowtwins", BARLOW), False),
            "simclr/official": (Case("simclr", SIMCLR), True),
            "simclr/scale_loss=2": (Case("simclr", {**SIMCLR, "scale_loss": 2.0}), False),
            "simclr/mean": (Case("simclr", SIMCLR), False),
        }
        for label, (case, official) in runs.items():
            method = make_method(case, gather=True)  # same initial weights for every run
            if official and case.method == "barlowtwins":
                reference: nn.Module = OfficialBarlowTwins(method.backbone, method.projector, 16, case.batch)
            elif official:
                reference = OfficialSimCLR(method.backbone, method.projector, SIMCLR["temperature"])
            else:
                reference = method
            model = DistributedDataParallel(convert_batchnorm(reference, "cpu"), broadcast_buffers=False)
            local = case.batch // WORLD
            views = [v[rank * local : (rank + 1) * local] for v in global_batch(case)]
            results[label] = _step(model, method, views, official)
        if rank == 0:
            torch.save(results, out_file)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def runs() -> dict[str, dict[str, torch.Tensor]]:
    with tempfile.TemporaryDirectory() as tmp:
        init_file, out_file = os.path.join(tmp, "init"), os.path.join(tmp, "out.pt")
        mp.start_processes(_worker, args=(init_file, out_file), nprocs=WORLD, join=True, start_method="spawn")
        return torch.load(out_file, weights_only=True)


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], factor: float = 1.0) -> None:
    assert a.keys() == b.keys()
    for name in a:
        if name.startswith("grad:"):
            torch.testing.assert_close(a[name], factor * b[name], rtol=1e-9, atol=1e-12, msg=name)
        elif factor == 1.0:
            torch.testing.assert_close(a[name], b[name], rtol=1e-9, atol=1e-12, msg=name)


def test_barlow_twins_rank_local_gradient_is_the_official_codes(runs):
    _assert_same(runs["barlow/rank_local"], runs["barlow/official"])  # gradients and the LARS step
    _assert_same(runs["barlow/exact"], runs["barlow/official"], factor=WORLD)  # exact = W x official
    bias = "param:projector.1.bias"  # a BN shift: plain momentum SGD under LARS, so the step shows the scale
    start = make_method(Case("barlowtwins", BARLOW), gather=False).state_dict()["projector.1.bias"].double()
    step_exact = runs["barlow/exact"][bias] - start
    step_official = runs["barlow/official"][bias] - start
    torch.testing.assert_close(step_exact, WORLD * step_official, rtol=1e-9, atol=1e-12)


def test_simclr_scale_loss_2_is_the_official_codes(runs):
    _assert_same(runs["simclr/scale_loss=2"], runs["simclr/official"])
    _assert_same(runs["simclr/mean"], runs["simclr/official"], factor=0.5)
