"""W-MSE: Cholesky whitening and the loss over sub-batches, against explicit references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from selfsup.losses import (
    normalized_mse,
    whiten,
    wmse,
)


def correlated(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) @ torch.randn(d, d, generator=g) + torch.randn(d, generator=g)


def wmse_reference(views: list[torch.Tensor], perm: torch.Tensor, w_size: int) -> float:
    """One W-MSE iteration written out: sub-batch loops, explicit inverse of the Cholesky factor, float64."""
    n = len(views[0])
    whitened = [torch.empty(n, views[0].shape[1], dtype=torch.float64) for _ in views]
    for idx in perm.view(-1, w_size):
        for v, z in enumerate(views):
            x = z[idx].double()
            centred = x - x.mean(0)
            cov = centred.T @ centred / (len(idx) - 1)
            W = torch.linalg.inv(torch.linalg.cholesky(cov))
            whitened[v][idx] = centred @ W.T
    pairs = [(i, j) for i in range(len(views)) for j in range(i + 1, len(views))]
    total = sum(float(2 - 2 * F.cosine_similarity(whitened[i], whitened[j], dim=1).mean()) for i, j in pairs)
    return total / len(pairs)


class TestWhitening:
    def test_whitened_sub_batch_has_zero_mean_and_identity_covariance(self):
        z = correlated(64, 5, seed=8)
        w = whiten(z)
        assert torch.allclose(w.mean(0), torch.zeros(5), atol=1e-5)
        assert torch.allclose(torch.cov(w.T), torch.eye(5), atol=1e-4)  # unbiased covariance

    def test_cholesky_whitening_is_lower_triangular(self):
        # W = L^-1 is lower triangular: the first coordinate is only standardised (unbiased std)
        z = correlated(32, 3, seed=9)
        first = (z[:, 0] - z[:, 0].mean()) / z[:, 0].std()
        assert torch.allclose(whiten(z)[:, 0], first, atol=1e-5)

    def test_batched_sub_batches_equal_separate_calls(self):
        z = correlated(3 * 16, 4, seed=10).view(3, 16, 4)
        batched = whiten(z)
        for g in range(3):
            assert torch.allclose(batched[g], whiten(z[g]), atol=1e-5)

    def test_shrinkage(self):
        z = correlated(16, 3, seed=11)
        eps = 0.3
        w = whiten(z, eps)
        cov = torch.cov(z.T)
        W = torch.linalg.inv(torch.linalg.cholesky((1 - eps) * cov + eps * torch.eye(3)))
        assert torch.allclose(w, (z - z.mean(0)) @ W.T, atol=1e-4)
        assert not torch.allclose(torch.cov(w.T), torch.eye(3), atol=1e-2)  # shrinkage: no longer white

    def test_float32_under_autocast(self):
        views = [correlated(32, 4, seed=s) for s in (23, 24)]
        expected = wmse(views, 16, generator=torch.Generator().manual_seed(0))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            inside = wmse(views, 16, generator=torch.Generator().manual_seed(0))
        assert inside.dtype == torch.float32 and inside.item() == pytest.approx(expected.item(), rel=1e-6)

    def test_collapsed_embeddings_give_a_clear_error(self):
        with pytest.raises(ValueError, match="not positive definite"):
            whiten(torch.ones(16, 3))


class TestWMSELoss:
    def test_hand_computed_one_dimensional_cases(self):
        # D = 1: whitening standardises, normalising keeps the sign, loss = 2 - 2 mean(sign a * sign b)
        a = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
        assert wmse([a, torch.tensor([[1.0], [2.0], [3.0], [5.0]])], w_size=4).item() == pytest.approx(0.0, abs=1e-6)
        assert wmse([a, torch.tensor([[4.0], [3.0], [2.0], [1.0]])], w_size=4).item() == pytest.approx(4.0)
        assert wmse([a, torch.tensor([[1.0], [4.0], [2.0], [3.0]])], w_size=4).item() == pytest.approx(2.0)

    def test_matches_the_explicit_reference_with_the_same_permutation(self):
        views = [correlated(24, 3, seed=s) for s in (12, 13, 14)]  # 3 views: 3 pairs
        loss = wmse(views, w_size=8, generator=torch.Generator().manual_seed(0))
        perm = torch.randperm(24, generator=torch.Generator().manual_seed(0))
        assert loss.item() == pytest.approx(wmse_reference(views, perm, 8), rel=1e-5)

    def test_iterations_average_over_permutations(self):
        views = [correlated(24, 3, seed=s) for s in (15, 16)]
        g = torch.Generator().manual_seed(1)
        perms = [torch.randperm(24, generator=g) for _ in range(3)]
        expected = sum(wmse_reference(views, p, 8) for p in perms) / 3
        loss = wmse(views, w_size=8, w_iter=3, generator=torch.Generator().manual_seed(1))
        assert loss.item() == pytest.approx(expected, rel=1e-5)

    def test_invariant_to_a_shift_of_each_view(self):
        # whitening removes the sub-batch mean: why the head's last layer needs no bias
        views = [correlated(16, 3, seed=s) for s in (21, 22)]
        shifted = [views[0] + torch.tensor([1.0, -2.0, 3.0]), views[1] - 5.0]
        assert wmse(shifted, 8, generator=torch.Generator().manual_seed(2)).item() == pytest.approx(
            wmse(views, 8, generator=torch.Generator().manual_seed(2)).item(), rel=1e-4
        )

    def test_plain_mse_variant(self):
        views = [correlated(16, 2, seed=s) for s in (17, 18)]
        loss = wmse(views, w_size=16, normalize=False)
        assert loss.item() == pytest.approx(F.mse_loss(whiten(views[0]), whiten(views[1])).item(), rel=1e-5)
        assert normalized_mse(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 3.0]])).item() == pytest.approx(2.0)

    def test_gradient_flows_through_the_whitening(self):
        z1 = correlated(8, 2, seed=19).double().requires_grad_(True)
        z2 = correlated(8, 2, seed=20).double().requires_grad_(True)
        g = torch.Generator()
        assert torch.autograd.gradcheck(lambda a, b: wmse([a, b], 8, generator=g.manual_seed(0)), (z1, z2))
        # and it differs from treating the whitening matrix as a constant
        wmse([z1, z2], 8).backward()
        x = z1.detach() - z1.detach().mean(0)
        W = torch.linalg.inv(torch.linalg.cholesky(x.T @ x / 7)).detach()
        z1c = z1.detach().clone().requires_grad_(True)
        b = whiten(z2.detach())
        (2 - 2 * F.cosine_similarity((z1c - z1c.mean(0)) @ W.T, b, dim=1).mean()).backward()
        assert not torch.allclose(z1.grad, z1c.grad, atol=1e-4)

    def test_clear_errors(self):
        z = torch.randn(16, 8)
        with pytest.raises(ValueError, match="larger than the embedding dimension 8"):
            wmse([z, z], w_size=8)
        with pytest.raises(ValueError, match="fewer than w_size=32"):
            wmse([z, z], w_size=32)
        with pytest.raises(ValueError, match="multiple of w_size=12"):
            wmse([z, z], w_size=12)
        with pytest.raises(ValueError, match="pairs of views"):
            wmse([z], w_size=12)
