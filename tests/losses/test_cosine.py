"""SimSiam's negative cosine (SimSiam Eq. 1-2): hand-computed values and the stop-gradient."""

from __future__ import annotations

import math

import pytest
import torch

from selfsup.losses import negative_cosine, simsiam


class TestSimSiamLoss:
    def test_identical_inputs_give_the_minimum_minus_one(self):
        z = torch.randn(6, 5)
        assert simsiam(z, z, z, z).item() == pytest.approx(-1.0, abs=1e-6)

    def test_hand_computed(self):
        p1, z2 = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]])  # D = -1/sqrt2
        p2, z1 = torch.tensor([[0.0, 2.0]]), torch.tensor([[0.0, -1.0]])  # D = +1
        assert negative_cosine(p1, z2).item() == pytest.approx(-1 / math.sqrt(2), rel=1e-6)
        assert simsiam(p1, p2, z1, z2).item() == pytest.approx(0.5 * (-1 / math.sqrt(2)) + 0.5 * 1.0, rel=1e-6)

    def test_stop_gradient_on_z(self):
        p = torch.randn(4, 3, requires_grad=True)
        z = torch.randn(4, 3, requires_grad=True)
        simsiam(p, p, z, z).backward()
        assert z.grad is None and p.grad.abs().sum() > 0
        # the gradient on p is that of -cos(p, const): orthogonal to p (the cosine is scale invariant)
        assert (p.grad * p.detach()).sum(1).abs().max() < 1e-6
