"""VICReg's invariance, variance and covariance terms (VICReg Eq. 1-6)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from selfsup.losses import (
    covariance_term,
    variance_term,
    vicreg,
    vicreg_terms,
)


class TestVICReg:
    def test_invariance_is_mse_over_batch_and_dims(self):
        z1 = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
        z2 = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
        assert vicreg_terms(z1, z2).invariance.item() == pytest.approx((1 + 4 + 9 + 16) / 4)

    def test_variance_term_hand_computed(self):
        z = torch.tensor([[0.0, 0.0], [2.0, 0.5]])  # unbiased var: 2.0 and 0.125
        expected = (max(0.0, 1 - math.sqrt(2.0 + 1e-4)) + (1 - math.sqrt(0.125 + 1e-4))) / 2
        assert variance_term(z).item() == pytest.approx(expected, rel=1e-6)
        expected_var = (0.0 + (1 - 0.125)) / 2
        assert variance_term(z, mode="var").item() == pytest.approx(expected_var, rel=1e-6)

    def test_covariance_term_hand_computed(self):
        z = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])  # C = [[2, 2], [2, 2]]
        assert covariance_term(z).item() == pytest.approx(2 * 2**2 / 2)

    def test_decorrelated_unit_variance_embeddings_cost_nothing_beyond_invariance(self):
        # rows of a scaled Hadamard-like design: zero-mean columns, var >= 1, no covariance
        z = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]]) * 2
        terms = vicreg_terms(z, z)
        assert terms.invariance.item() == 0
        assert terms.variance.item() == 0
        assert terms.covariance.item() == pytest.approx(0.0, abs=1e-12)

    def test_total_uses_code_weights_and_halved_variance(self):
        g = torch.Generator().manual_seed(1)
        z1, z2 = torch.randn(16, 8, generator=g), torch.randn(16, 8, generator=g)
        inv = F.mse_loss(z1, z2)
        var = 0.5 * (variance_term(z1) + variance_term(z2))
        cov = covariance_term(z1) + covariance_term(z2)
        assert vicreg(z1, z2).item() == pytest.approx((25 * inv + 25 * var + cov).item(), rel=1e-6)
        assert vicreg(z1, z2, 1.0, 0.0, 0.0).item() == pytest.approx(inv.item(), rel=1e-6)

    def test_collapse_is_penalised(self):
        collapsed = torch.ones(8, 4)
        terms = vicreg_terms(collapsed, collapsed)
        assert terms.variance.item() == pytest.approx(1 - math.sqrt(1e-4), rel=1e-6)
