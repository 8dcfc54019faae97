"""Losses against hand-computed values and known identities."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from selfsup.losses import (
    covariance_term,
    margin_triplet,
    nt_logistic,
    nt_xent,
    tico,
    variance_term,
    vicreg,
    vicreg_terms,
)


def nt_xent_reference(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> torch.Tensor:
    """SimCLR Eq. 1 written as a plain double loop over the 2N views."""
    u = F.normalize(torch.cat([z1, z2]).double(), dim=1)
    n = len(z1)
    losses = []
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        denominator = sum(math.exp(float(u[i] @ u[k]) / tau) for k in range(2 * n) if k != i)
        losses.append(-math.log(math.exp(float(u[i] @ u[j]) / tau) / denominator))
    return torch.tensor(sum(losses) / len(losses))


class TestNTXent:
    def test_hand_computed_orthonormal_case(self):
        # views e1, e2 | e1, e2: each anchor has its positive at similarity 1 and two negatives at 0
        z = torch.eye(2)
        assert nt_xent(z, z, temperature=1.0).item() == pytest.approx(math.log((math.e + 2) / math.e), abs=1e-6)

    def test_matches_reference_loop(self):
        g = torch.Generator().manual_seed(0)
        z1, z2 = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
        for tau in (0.1, 0.5, 1.0):
            assert nt_xent(z1, z2, tau).item() == pytest.approx(nt_xent_reference(z1, z2, tau).item(), rel=1e-5)

    def test_symmetric_and_scale_invariant(self):
        z1, z2 = torch.randn(8, 4), torch.randn(8, 4)
        assert nt_xent(z1, z2, 0.2).item() == pytest.approx(nt_xent(z2, z1, 0.2).item(), rel=1e-6)
        assert nt_xent(3 * z1, 0.5 * z2, 0.2).item() == pytest.approx(nt_xent(z1, z2, 0.2).item(), rel=1e-5)

    def test_perfect_alignment_with_orthogonal_negatives_goes_to_zero(self):
        z = torch.eye(4)
        assert nt_xent(z, z, temperature=0.01).item() < 1e-6

    def test_self_similarity_is_masked(self):
        # if the self term were kept, identical rows would add exp(1/tau) to every denominator
        z = torch.eye(3)
        expected = math.log((math.exp(1 / 0.5) + 4 * math.exp(0.0)) / math.exp(1 / 0.5))
        assert nt_xent(z, z, 0.5).item() == pytest.approx(expected, rel=1e-6)

    def test_rejects_single_image(self):
        with pytest.raises(ValueError, match="at least 2"):
            nt_xent(torch.randn(1, 3), torch.randn(1, 3))


class TestSimCLRAlternatives:
    def test_nt_logistic_hand_computed(self):
        z = torch.eye(2)
        # positive s=1, two negatives s=0; tau=1: -log sig(1) - mean(log sig(0), log sig(0))
        expected = -math.log(1 / (1 + math.exp(-1))) - math.log(0.5)
        assert nt_logistic(z, z, temperature=1.0).item() == pytest.approx(expected, rel=1e-6)

    def test_margin_triplet_hand_computed(self):
        z = torch.eye(2)
        # positive 1, negatives 0: hinge max(0 - 1 + m, 0) = 0 for m = 0.5, 0.5 for m = 1.5
        assert margin_triplet(z, z, margin=0.5).item() == pytest.approx(0.0)
        assert margin_triplet(z, z, margin=1.5).item() == pytest.approx(0.5)


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


@pytest.mark.parametrize("loss", ["nt_xent", "vicreg", "tico"])
def test_losses_compute_in_float32_under_bf16_autocast(loss):
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
