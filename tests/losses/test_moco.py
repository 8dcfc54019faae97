"""MoCo's InfoNCE with a queue (v1/v2) and MoCo v3's in-batch contrastive loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from selfsup.losses import moco_infonce, moco_v3_contrastive
from tests.helpers import (
    at,
    tiny_method,
    views,
)


class TestMoCoLosses:
    def test_infonce_hand_computed(self):
        q, k = torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0, 0.0]])
        queue = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])  # logits [1, 0, -1] at T = 1
        expected = -math.log(math.e / (math.e + 1 + math.exp(-1)))
        assert moco_infonce(q, k, queue, temperature=1.0).item() == pytest.approx(expected, rel=1e-6)
        # T = 0.5 doubles the logits
        expected = -math.log(math.exp(2) / (math.exp(2) + 1 + math.exp(-2)))
        assert moco_infonce(q, k, queue, temperature=0.5).item() == pytest.approx(expected, rel=1e-6)

    def test_infonce_matches_a_reference_loop(self):
        g = torch.Generator().manual_seed(0)
        q, k = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
        queue = F.normalize(torch.randn(7, 4, generator=g), dim=1)
        qn, kn = F.normalize(q.double(), dim=1), F.normalize(k.double(), dim=1)
        losses = []
        for i in range(5):
            pos = math.exp(float(qn[i] @ kn[i]) / 0.2)
            neg = sum(math.exp(float(qn[i] @ queue[j].double()) / 0.2) for j in range(7))
            losses.append(-math.log(pos / (pos + neg)))
        assert moco_infonce(q, k, queue, 0.2).item() == pytest.approx(sum(losses) / 5, rel=1e-5)

    def test_infonce_keys_and_queue_get_no_gradient(self):
        q = torch.randn(3, 4, requires_grad=True)
        k = torch.randn(3, 4, requires_grad=True)
        queue = F.normalize(torch.randn(6, 4), dim=1).requires_grad_()
        moco_infonce(q, k, queue, 0.2).backward()
        assert k.grad is None and queue.grad is None and q.grad.abs().sum() > 0

    def test_v3_is_cross_entropy_scaled_by_two_tau(self):
        z = torch.eye(2)
        # logits [[1/T, 0], [0, 1/T]], label = own index
        for tau in (0.2, 0.5, 1.0):
            expected = 2 * tau * math.log(1 + math.exp(-1 / tau))
            assert moco_v3_contrastive(z, z, tau).item() == pytest.approx(expected, rel=1e-6)
        q, k = torch.randn(6, 5), torch.randn(6, 5)
        ce = F.cross_entropy(F.normalize(q, dim=1) @ F.normalize(k, dim=1).T / 0.2, torch.arange(6))
        assert moco_v3_contrastive(q, k, 0.2).item() == pytest.approx(0.4 * ce.item(), rel=1e-5)

    def test_v3_method_loss_is_the_symmetric_sum(self):
        method = tiny_method("moco-v3", eval_bn=True)
        x1, x2 = views()
        out = method(views(), at(0))
        q1 = method.predictor(method.project(method.backbone(x1)))
        q2 = method.predictor(method.project(method.backbone(x2)))
        k1, k2 = method.encode_keys(x1), method.encode_keys(x2)
        expected = moco_v3_contrastive(q1, k2, 1.0) + moco_v3_contrastive(q2, k1, 1.0)
        assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
