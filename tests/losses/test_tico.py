"""TiCo's loss and its covariance memory."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from selfsup.losses import (
    tico,
)


class TestTiCo:
    def test_matches_the_same_view_pairwise_form_when_beta_is_zero(self):
        g = torch.Generator().manual_seed(2)
        z1, z2 = torch.randn(10, 6, generator=g), torch.randn(10, 6, generator=g)
        rho = 8.0
        loss, _ = tico(z1, z2, torch.zeros(6, 6), beta=0.0, rho=rho)
        a, b = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
        n = len(a)
        second_form = -(a * b).sum(1).mean() + rho / n**2 * ((a @ a.T) ** 2).sum()
        assert loss.item() == pytest.approx(second_form.item(), rel=1e-5)

    def test_running_second_moment_update_uses_branch_one(self):
        g = torch.Generator().manual_seed(3)
        z1, z2 = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
        C = torch.rand(4, 4, generator=g)
        _, C_new = tico(z1, z2, C, beta=0.9)
        a = F.normalize(z1, dim=1)
        assert torch.allclose(C_new, 0.9 * C + 0.1 * a.T @ a / 5, atol=1e-6)
        assert not C_new.requires_grad

    def test_gradient_does_not_flow_through_C(self):
        z1 = torch.randn(6, 3, requires_grad=True)
        z2 = torch.randn(6, 3)
        loss, C_new = tico(z1, z2, torch.zeros(3, 3), beta=0.0, rho=1.0)
        loss.backward()
        # analytic gradient with C treated as a constant
        z1b = z1.detach().clone().requires_grad_(True)
        a, b = F.normalize(z1b, dim=1), F.normalize(z2, dim=1)
        manual = -(a * b).sum(1).mean() + ((a @ C_new) * a).sum(1).mean()
        manual.backward()
        assert torch.allclose(z1.grad, z1b.grad, atol=1e-6)

    def test_hand_computed_value(self):
        z = torch.eye(3)
        # invariance -1; C_new = I/3 with beta=0; z_n^T C z_n = 1/3
        loss, C_new = tico(z, z, torch.zeros(3, 3), beta=0.0, rho=8.0)
        assert loss.item() == pytest.approx(-1 + 8 / 3, rel=1e-6)
        assert torch.allclose(C_new, torch.eye(3) / 3)
