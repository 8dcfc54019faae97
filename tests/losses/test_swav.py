"""SwAV's Sinkhorn-Knopp codes and swapped prediction, against explicit references."""

from __future__ import annotations

import math

import pytest
import torch

from selfsup.losses import (
    sinkhorn_knopp,
    swapped_prediction,
    swav,
)
from tests.helpers import (
    unit,
)


def sinkhorn_reference(scores: torch.Tensor, eps: float, iterations: int) -> torch.Tensor:
    """SwAV's Sinkhorn written out with explicit loops, in float64 (K x B as in the paper)."""
    Q = torch.exp(scores.double() / eps).T.clone()
    K, B = Q.shape
    Q /= Q.sum()
    for _ in range(iterations):
        for k in range(K):
            Q[k] = Q[k] / Q[k].sum() / K
        for b in range(B):
            Q[:, b] = Q[:, b] / Q[:, b].sum() / B
    return (Q * B).T


class TestSinkhorn:
    def scores(self, b: int = 12, k: int = 5, seed: int = 0) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return unit(torch.randn(b, 16, generator=g)) @ unit(torch.randn(k, 16, generator=g)).T

    def test_samples_sum_to_one_and_prototypes_to_b_over_k(self):
        s = self.scores()
        B, K = s.shape
        q = sinkhorn_knopp(s, epsilon=0.05, iterations=3)
        assert (q >= 0).all()
        assert torch.allclose(q.sum(dim=1), torch.ones(B), atol=1e-5)  # exact after the final x B
        # after 3 alternations the prototype marginals are close to B/K; they converge with more
        assert torch.allclose(q.sum(dim=0), torch.full((K,), B / K), rtol=0.3)
        q = sinkhorn_knopp(s, epsilon=0.05, iterations=100)
        assert torch.allclose(q.sum(dim=0), torch.full((K,), B / K), rtol=1e-3)

    def test_matches_the_explicit_loop(self):
        s = self.scores(9, 4, seed=1)
        for iterations in (1, 3):
            expected = sinkhorn_reference(s, 0.05, iterations).float()
            assert torch.allclose(sinkhorn_knopp(s, 0.05, iterations), expected, atol=1e-5)

    def test_hand_computed_symmetric_case(self):
        # scores [[a, 0], [0, a]]: every normalisation keeps the symmetry, so q = softmax(row / eps)
        a, eps = 0.1, 0.05
        q = sinkhorn_knopp(torch.tensor([[a, 0.0], [0.0, a]]), eps, 3)
        p = math.exp(a / eps) / (math.exp(a / eps) + 1)
        assert torch.allclose(q, torch.tensor([[p, 1 - p], [1 - p, p]]), atol=1e-6)
        # equal scores: every prototype gets an equal share
        assert torch.allclose(sinkhorn_knopp(torch.zeros(4, 8)), torch.full((4, 8), 1 / 8))

    def test_equipartition_spreads_a_collapsed_batch(self):
        # every sample prefers prototype 0; the codes still use all prototypes equally
        s = torch.tensor([[0.9, 0.1, 0.0]] * 6) + 0.01 * self.scores(6, 3)
        q = sinkhorn_knopp(s, 0.05, 100)
        assert torch.allclose(q.sum(dim=0), torch.full((3,), 2.0), rtol=1e-3)

    def test_no_gradient_and_float32(self):
        s = self.scores().half().requires_grad_(True)
        q = sinkhorn_knopp(s)
        assert q.dtype == torch.float32 and not q.requires_grad

    def test_global_batch_differs_from_a_shard(self):
        """Why the sums are all-reduced: the codes of half a batch are not the global codes' rows."""
        s = self.scores(8, 4, seed=2)
        assert not torch.allclose(sinkhorn_knopp(s[:4]), sinkhorn_knopp(s)[:4], atol=1e-3)


class TestSwappedPrediction:
    def test_hand_computed_two_crops(self):
        s0, s1 = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
        q0, q1 = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
        # crop 1 predicts q0: -log softmax([0, 1])[0] = log(1 + e); crop 0 predicts q1: the same by symmetry
        loss = swapped_prediction([s0, s1], [q0, q1], (0, 1), temperature=1.0)
        assert loss.item() == pytest.approx(math.log(1 + math.e), rel=1e-6)

    def test_averaging_over_crops_matches_the_explicit_loop(self):
        g = torch.Generator().manual_seed(3)
        scores = [torch.randn(5, 7, generator=g) for _ in range(4)]  # 2 large + 2 small crops
        codes = [torch.softmax(torch.randn(5, 7, generator=g), dim=1) for _ in range(2)]
        tau = 0.1
        total = 0.0
        for q, a in zip(codes, (0, 1)):
            sub = 0.0
            for v in range(4):
                if v == a:
                    continue
                for b in range(5):
                    logp = torch.log_softmax(scores[v][b].double() / tau, dim=0)
                    sub += -(q[b].double() * logp).sum().item() / 5
            total += sub / 3
        expected = total / 2
        assert swapped_prediction(scores, codes, (0, 1), tau).item() == pytest.approx(expected, rel=1e-5)

    def test_codes_come_from_the_assignment_crops_only(self):
        g = torch.Generator().manual_seed(4)
        scores = [unit(torch.randn(6, 5, generator=g)) for _ in range(4)]
        _, codes = swav(scores)
        assert torch.allclose(codes[0], sinkhorn_knopp(scores[0]))
        assert torch.allclose(codes[1], sinkhorn_knopp(scores[1]))
        changed = scores[:2] + [unit(torch.randn(6, 5, generator=g)) for _ in range(2)]
        _, codes_changed = swav(changed)
        assert all(torch.equal(a, b) for a, b in zip(codes, codes_changed))

    def test_queue_scores_are_prepended_and_only_the_batch_rows_kept(self):
        g = torch.Generator().manual_seed(5)
        scores = [unit(torch.randn(4, 6, generator=g)) for _ in range(2)]
        queue = [unit(torch.randn(8, 6, generator=g)) for _ in range(2)]
        loss, codes = swav(scores, extra_scores=queue)
        for i in range(2):
            assert torch.allclose(codes[i], sinkhorn_knopp(torch.cat([queue[i], scores[i]]))[-4:])
        assert loss.item() == pytest.approx(swapped_prediction(scores, codes, (0, 1), 0.1).item(), rel=1e-6)
        assert not torch.allclose(codes[0], swav(scores)[1][0])

    def test_gradient_flows_to_the_predictions_not_the_codes(self):
        s0 = unit(torch.randn(4, 3)).requires_grad_(True)
        s1 = unit(torch.randn(4, 3)).requires_grad_(True)
        loss, codes = swav([s0, s1])
        loss.backward()
        assert not codes[0].requires_grad
        # d/ds1 of -sum q0 log softmax(s1/tau) / B (crop 1 predicts crop 0's code): (softmax - q0) / (tau B) / 2
        expected = (torch.softmax(s1.detach() / 0.1, dim=1) - codes[0]) / (0.1 * 4) / 2
        assert torch.allclose(s1.grad, expected, atol=1e-5)
