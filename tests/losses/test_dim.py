"""Deep InfoMax's MI estimators (JSD, InfoNCE, DV) on hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from selfsup.losses import (
    dv_mi_loss,
    infonce_lower_bound,
    jsd_mi_loss,
    local_global_mi_loss,
    nce_mi_loss,
)
from selfsup.losses.dim import gradient_penalty
from tests.helpers import (
    LOG2,
    sp,
)

pytestmark = pytest.mark.usefixtures("one_thread")


class TestDIMEstimators:
    # T[i, j, l] = g_i * l_{j, l} with D = 1
    G = torch.tensor([[1.0], [2.0]])

    def test_jsd_hand_computed(self):
        local = torch.tensor([[[1.0]], [[-1.0]]])  # T = [[1, -1], [2, -2]]
        e_pos = ((LOG2 - sp(-1.0)) + (LOG2 - sp(2.0))) / 2  # T00 = 1, T11 = -2
        e_neg = ((sp(-1.0) - LOG2) + (sp(2.0) - LOG2)) / 2  # T01 = -1, T10 = 2
        assert jsd_mi_loss(local, self.G).item() == pytest.approx(e_neg - e_pos, rel=1e-6)

    def test_nce_hand_computed(self):
        local = torch.tensor([[[1.0], [0.5]], [[-1.0], [3.0]]])
        # image 0: positives (1, 0.5), negatives (-1, 3); image 1: positives (-2, 6), negatives (2, 1)
        terms = []
        for positives, negatives in (((1.0, 0.5), (-1.0, 3.0)), ((-2.0, 6.0), (2.0, 1.0))):
            for p in positives:
                terms.append(p - math.log(math.exp(p) + sum(math.exp(n) for n in negatives)))
        assert nce_mi_loss(local, self.G).item() == pytest.approx(-sum(terms) / 4, rel=1e-6)
        assert local_global_mi_loss(local, self.G, "nce").item() == pytest.approx(-sum(terms) / 4, rel=1e-6)

    def test_dv_hand_computed(self):
        local = torch.tensor([[[1.0], [0.5]], [[-1.0], [3.0]]])
        e_pos = (1.0 + 0.5 - 2.0 + 6.0) / 4
        e_neg = math.log(sum(math.exp(t) for t in (-1.0, 3.0, 2.0, 1.0)) / 4)
        assert dv_mi_loss(local, self.G).item() == pytest.approx(e_neg - e_pos, rel=1e-6)

    def test_raising_only_the_positive_scores_lowers_every_loss(self):
        g = torch.Generator().manual_seed(2)
        local, glob = torch.randn(4, 3, 5, generator=g), torch.eye(4, 5)  # orthonormal globals
        boosted = local + 0.5 * glob[:, None, :]  # g_i . l_j grows by 0.5 only when j = i
        for estimator in ("jsd", "nce", "dv"):
            assert local_global_mi_loss(boosted, glob, estimator) < local_global_mi_loss(local, glob, estimator)

    def test_nce_bound_is_at_most_log_n_and_reaches_it_when_separable(self):
        n, positions = 4, 3
        n_candidates = 1 + (n - 1) * positions
        g = torch.Generator().manual_seed(3)
        for _ in range(3):
            loss = nce_mi_loss(torch.randn(n, positions, 6, generator=g), torch.randn(n, 6, generator=g))
            assert loss.item() >= 0 and infonce_lower_bound(loss, n_candidates) <= math.log(n_candidates)
        glob = torch.eye(n) * 40
        local = torch.eye(n)[:, None, :].expand(n, positions, n)
        loss = nce_mi_loss(local, glob)
        assert infonce_lower_bound(loss, n_candidates) == pytest.approx(math.log(n_candidates), abs=1e-5)

    def test_rejects_bad_shapes_and_estimators(self):
        with pytest.raises(ValueError, match="at least 2"):
            jsd_mi_loss(torch.randn(1, 3, 4), torch.randn(1, 4))
        with pytest.raises(ValueError, match="Valid: jsd, nce, dv"):
            local_global_mi_loss(torch.randn(2, 3, 4), torch.randn(2, 4), "kl")


class TestPriorGradientPenalty:
    """The zero-centred gradient penalty of DIM's prior discriminator (rdevon/DIM
    ``cortex_DIM/functions/gradient_penalty.py``; Mescheder et al. 2018): mean_i ||dD(x_i)/dx_i||^2."""

    def test_is_the_batch_mean_of_each_samples_squared_gradient_norm(self):
        torch.manual_seed(0)
        disc = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
        w1, b1, w2 = disc[0].weight.detach(), disc[0].bias.detach(), disc[2].weight.detach()[0]
        x = torch.randn(5, 3).requires_grad_()
        # by hand: dD/dx = W1^T (w2 * (1 - tanh(W1 x + b1)^2)) for each sample
        slope = 1 - torch.tanh(x.detach() @ w1.T + b1) ** 2  # (5, 4)
        grads = (w2 * slope) @ w1  # (5, 3)
        per_sample = grads.pow(2).sum(1)
        penalty = gradient_penalty(disc(x), x)
        assert penalty.item() == pytest.approx(per_sample.mean().item(), rel=1e-5)
        # not the official code's network(x)[-1], which differentiates the last sample only
        assert penalty.item() != pytest.approx(per_sample[-1].item() / 5, rel=1e-3)

    def test_is_zero_for_a_constant_discriminator(self):
        x = torch.randn(6, 4).requires_grad_()
        flat = torch.nn.Linear(4, 1)
        torch.nn.init.zeros_(flat.weight)
        assert gradient_penalty(flat(x), x).item() == 0.0
        bias = torch.nn.Parameter(torch.ones(1))  # a score that does not depend on x at all
        assert gradient_penalty(bias.expand(6, 1), x).item() == 0.0

    def test_its_gradient_trains_the_discriminator(self):
        """D(x) = w.x + b: the penalty is ||w||^2, so it sends 2w to w and nothing to b (create_graph)."""
        disc = torch.nn.Linear(3, 1)
        with torch.no_grad():
            disc.weight.copy_(torch.tensor([[1.0, -2.0, 0.5]]))
        x = torch.randn(4, 3).requires_grad_()
        penalty = gradient_penalty(disc(x), x)
        assert penalty.item() == pytest.approx(5.25)
        penalty.backward()
        assert torch.allclose(disc.weight.grad, 2 * disc.weight.detach())
        assert disc.bias.grad is None or torch.all(disc.bias.grad == 0)

    def test_needs_inputs_that_require_grad(self):
        x = torch.randn(4, 3)
        with pytest.raises(ValueError, match="require grad"):
            gradient_penalty(torch.nn.Linear(3, 1)(x), x)
