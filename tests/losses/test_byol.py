"""BYOL's regression loss (BYOL Eq. 2): hand-computed values and the stop-gradient."""

from __future__ import annotations

import math

import pytest
import torch

from selfsup.losses import byol, byol_regression


class TestBYOLLoss:
    def test_identical_inputs_give_the_minimum_zero(self):
        z = torch.randn(6, 5)
        assert byol(z, 2 * z, 3 * z, z).item() == pytest.approx(0.0, abs=1e-6)

    def test_hand_computed(self):
        # l = 2 - 2 cos: cos((1,0),(0,1)) = 0 -> 2; cos((1,0),(1,1)) = 1/sqrt2 -> 2 - sqrt2; opposite -> 4
        q = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
        z = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
        assert byol_regression(q, z).tolist() == pytest.approx([2.0, 2 - math.sqrt(2)], abs=1e-6)
        q1, q2 = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0]])
        z1, z2 = torch.tensor([[-3.0, 0.0]]), torch.tensor([[0.0, 2.0]])
        assert byol(q1, q2, z1, z2).item() == pytest.approx(2.0 + 4.0)  # l(q1, z2) + l(q2, z1), summed

    def test_batch_mean_of_the_symmetrised_sum(self):
        q1, q2, z1, z2 = (torch.randn(4, 3) for _ in range(4))
        per_sample = [byol(q1[i : i + 1], q2[i : i + 1], z1[i : i + 1], z2[i : i + 1]).item() for i in range(4)]
        assert byol(q1, q2, z1, z2).item() == pytest.approx(sum(per_sample) / 4, rel=1e-6)

    def test_no_gradient_reaches_the_target(self):
        q = torch.randn(4, 3, requires_grad=True)
        z = torch.randn(4, 3, requires_grad=True)
        byol(q, q, z, z).backward()
        assert z.grad is None and q.grad is not None and q.grad.abs().sum() > 0
