"""Every loss computes in float32 under bf16 autocast."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from selfsup.losses import (
    amdim_nce,
    byol,
    jsd_mi_loss,
    moco_infonce,
    moco_v3_contrastive,
    nt_xent,
    simsiam,
    tico,
    vicreg,
)


@pytest.mark.parametrize("loss", ["byol", "simsiam", "moco_infonce", "moco_v3"])
def test_byol_simsiam_moco_losses_stay_in_float32(loss):
    g = torch.Generator().manual_seed(0)
    a, b, c, d = (torch.randn(16, 32, generator=g) for _ in range(4))
    queue = F.normalize(torch.randn(64, 32, generator=g), dim=1)
    fn = {
        "byol": lambda: byol(a, b, c, d),
        "simsiam": lambda: simsiam(a, b, c, d),
        "moco_infonce": lambda: moco_infonce(a, b, queue, 0.07),
        "moco_v3": lambda: moco_v3_contrastive(a, b, 0.2),
    }
    reference = fn[loss]()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = fn[loss]()
    assert value.dtype == torch.float32 and value.item() == pytest.approx(reference.item(), rel=1e-6)


def test_cpc_dim_amdim_losses_stay_in_float32():
    g = torch.Generator().manual_seed(6)
    local, glob = torch.randn(4, 3, 5, generator=g), torch.randn(4, 5, generator=g)
    expected = [jsd_mi_loss(local, glob), amdim_nce(glob, local)[0]]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = [jsd_mi_loss(local, glob), amdim_nce(glob, local)[0]]
    for e, x in zip(expected, got):
        assert x.dtype == torch.float32 and x.item() == pytest.approx(e.item(), rel=1e-6)


@pytest.mark.parametrize("loss", ["nt_xent", "vicreg", "tico"])
def test_nt_xent_vicreg_tico_stay_in_float32(loss):
    g = torch.Generator().manual_seed(4)
    z1, z2 = torch.randn(32, 16, generator=g), torch.randn(32, 16, generator=g)

    def compute():
        if loss == "nt_xent":
            return nt_xent(z1, z2, 0.1)
        if loss == "vicreg":
            return vicreg(z1, z2)
        return tico(z1, z2, torch.zeros(16, 16))[0]

    reference = compute()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_amp = compute()
    assert under_amp.dtype == torch.float32
    assert under_amp.item() == pytest.approx(reference.item(), rel=1e-6)
