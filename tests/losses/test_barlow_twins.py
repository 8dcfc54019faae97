"""Barlow Twins' cross-correlation loss against an explicit reference."""

from __future__ import annotations

import pytest
import torch

from selfsup.losses import (
    barlow_twins,
    barlow_twins_terms,
    cross_correlation,
)


def barlow_reference(z1: torch.Tensor, z2: torch.Tensor, lambd: float, eps: float = 1e-5) -> float:
    """Eqs. 1-2 with explicit loops in float64."""
    z1, z2 = z1.double(), z2.double()
    n, d = z1.shape

    def standardize(z):
        mean = z.sum(0) / n
        var = ((z - mean) ** 2).sum(0) / n
        return (z - mean) / torch.sqrt(var + eps)

    a, b = standardize(z1), standardize(z2)
    loss = 0.0
    for i in range(d):
        for j in range(d):
            c = sum(float(a[k, i] * b[k, j]) for k in range(n)) / n
            loss += (1 - c) ** 2 if i == j else lambd * c**2
    return loss


class TestBarlowTwinsLoss:
    def test_zero_for_correlated_and_decorrelated_embeddings(self):
        # standardised orthogonal columns (biased variance 1), duplicated across the views
        z = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
        assert barlow_twins(z, z, eps=0.0).item() == 0.0
        # standardisation makes it invariant to per-dimension scale and shift
        assert barlow_twins(3 * z + 5, z * torch.tensor([0.5, 2.0]) - 1, eps=0.0).item() == pytest.approx(0, abs=1e-12)
        assert torch.allclose(cross_correlation(z, z, eps=0.0), torch.eye(2))

    def test_hand_computed_value(self):
        z1 = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])
        z2 = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])
        # C = [[1, -1], [1, -1]]: on-diagonal (1-1)^2 + (1+1)^2 = 4, off-diagonal 1 + 1 = 2
        terms = barlow_twins_terms(z1, z2, eps=0.0)
        assert terms.on_diagonal.item() == pytest.approx(4.0)
        assert terms.off_diagonal.item() == pytest.approx(2.0)
        assert barlow_twins(z1, z2, lambd=0.0051, eps=0.0).item() == pytest.approx(4 + 0.0051 * 2, rel=1e-6)

    def test_matches_the_explicit_loop(self):
        g = torch.Generator().manual_seed(6)
        z1, z2 = torch.randn(7, 4, generator=g), torch.randn(7, 4, generator=g) + torch.randn(7, 4, generator=g)
        for lambd in (0.0051, 0.5):
            assert barlow_twins(z1, z2, lambd).item() == pytest.approx(barlow_reference(z1, z2, lambd), rel=1e-5)

    def test_uses_biased_batch_statistics_like_batchnorm(self):
        g = torch.Generator().manual_seed(7)
        z1, z2 = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
        bn = torch.nn.BatchNorm1d(3, affine=False).train()
        expected = bn(z1).T @ bn(z2) / 6
        assert torch.allclose(cross_correlation(z1, z2), expected, atol=1e-6)

    def test_computes_in_float32_even_under_autocast(self):
        z = torch.randn(8, 4).bfloat16()
        assert cross_correlation(z, z).dtype == torch.float32
        g = torch.Generator().manual_seed(8)
        z1, z2 = torch.randn(64, 16, generator=g), torch.randn(64, 16, generator=g)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 matmuls would be off by ~1e-2
            inside = barlow_twins(z1, z2)
        assert inside.dtype == torch.float32
        assert inside.item() == pytest.approx(barlow_twins(z1, z2).item(), rel=1e-6)
