"""NT-Xent (SimCLR Eq. 1) against an explicit reference, and SimCLR's alternative losses."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from selfsup.losses import (
    margin_triplet,
    nt_logistic,
    nt_xent,
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
