"""TiCo's loss and its covariance memory."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from selfsup.losses import (
    tico,
)


def pairwise_form(z1: torch.Tensor, z2: torch.Tensor, rho: float, branch: str) -> float:
    """-(1/N) Σ_i z'_i·z''_i + (ρ/N²) Σ_i Σ_j (z'_i·y_j)² as an explicit double loop over the pairs, with
    y = z' (``same``) or y = z'' (``other``, the cross-view pairwise form)."""
    a, b = F.normalize(z1.double(), dim=1), F.normalize(z2.double(), dim=1)
    y = a if branch == "same" else b
    n = len(a)
    invariance = -sum(float(a[i] @ b[i]) for i in range(n)) / n
    pairs = sum(float(a[i] @ y[j]) ** 2 for i in range(n) for j in range(n))
    return invariance + rho / n**2 * pairs


class TestTiCo:
    @pytest.mark.parametrize("branch", ["same", "other"])
    def test_equals_the_pairwise_form_of_its_branch_when_beta_is_zero(self, branch):
        g = torch.Generator().manual_seed(2)
        z1, z2 = torch.randn(10, 6, generator=g), torch.randn(10, 6, generator=g)
        loss, _ = tico(z1, z2, torch.zeros(6, 6), beta=0.0, rho=8.0, covariance_branch=branch)
        assert loss.item() == pytest.approx(pairwise_form(z1, z2, 8.0, branch), rel=1e-5)
        # the two forms differ on these embeddings, so each identity pins its own branch
        other = "other" if branch == "same" else "same"
        assert abs(loss.item() - pairwise_form(z1, z2, 8.0, other)) > 1e-2

    def test_default_is_the_same_view_branch(self):
        g = torch.Generator().manual_seed(4)
        z1, z2 = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
        default, C_default = tico(z1, z2, torch.zeros(5, 5), beta=0.0)
        same, C_same = tico(z1, z2, torch.zeros(5, 5), beta=0.0, covariance_branch="same")
        assert torch.equal(default, same) and torch.equal(C_default, C_same)

    @pytest.mark.parametrize(("branch", "index"), [("same", 0), ("other", 1)])
    def test_running_second_moment_is_updated_with_the_chosen_branch(self, branch, index):
        g = torch.Generator().manual_seed(3)
        z1, z2 = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
        C = torch.rand(4, 4, generator=g)
        _, C_new = tico(z1, z2, C, beta=0.9, covariance_branch=branch)
        y = F.normalize((z1, z2)[index], dim=1)
        assert torch.allclose(C_new, 0.9 * C + 0.1 * y.T @ y / 5, atol=1e-6)
        assert not C_new.requires_grad

    def test_unknown_branch_is_refused(self):
        with pytest.raises(ValueError, match="covariance_branch"):
            tico(torch.randn(4, 3), torch.randn(4, 3), torch.zeros(3, 3), covariance_branch="cross")

    @pytest.mark.parametrize("branch", ["same", "other"])
    def test_gradient_does_not_flow_through_C(self, branch):
        z1 = torch.randn(6, 3, requires_grad=True)
        z2 = torch.randn(6, 3, requires_grad=True)
        loss, C_new = tico(z1, z2, torch.zeros(3, 3), beta=0.0, rho=1.0, covariance_branch=branch)
        loss.backward()
        # analytic gradient with C treated as a constant
        z1b = z1.detach().clone().requires_grad_(True)
        z2b = z2.detach().clone().requires_grad_(True)
        a, b = F.normalize(z1b, dim=1), F.normalize(z2b, dim=1)
        manual = -(a * b).sum(1).mean() + ((a @ C_new) * a).sum(1).mean()
        manual.backward()
        assert torch.allclose(z1.grad, z1b.grad, atol=1e-6)
        assert torch.allclose(z2.grad, z2b.grad, atol=1e-6)  # z2 only through the invariance term

    def test_hand_computed_value(self):
        z = torch.eye(3)
        # invariance -1; C_new = I/3 with beta=0; z_n^T C z_n = 1/3
        loss, C_new = tico(z, z, torch.zeros(3, 3), beta=0.0, rho=8.0)
        assert loss.item() == pytest.approx(-1 + 8 / 3, rel=1e-6)
        assert torch.allclose(C_new, torch.eye(3) / 3)
