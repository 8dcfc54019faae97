"""CPC's InfoNCE over patch codes and its log N bound."""

from __future__ import annotations

import math

import pytest
import torch

from selfsup.losses import (
    cpc_infonce,
    infonce_lower_bound,
)

pytestmark = pytest.mark.usefixtures("one_thread")


class TestInfoNCE:
    def test_cpc_infonce_hand_computed(self):
        # one image, 3x1 grid, offset 2: the single prediction (row 0) has candidates z0, z1, z2, target z2
        codes = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]], [[1.0, 1.0]]]])
        prediction = torch.tensor([[[[2.0, 1.0]]]])
        scores = [2.0, 1.0, 3.0]
        expected = -(3.0 - math.log(sum(math.exp(s) for s in scores)))
        assert cpc_infonce(prediction, codes, 2).item() == pytest.approx(expected, rel=1e-6)

    def test_cpc_negatives_span_other_positions_and_other_images(self):
        g = torch.Generator().manual_seed(0)
        codes = torch.randn(3, 4, 2, 5, generator=g)
        predictions = torch.randn(3, 2, 2, 5, generator=g)
        flat = codes.reshape(-1, 5)
        losses = []
        for b in range(3):
            for i in range(2):
                for j in range(2):
                    logits = flat @ predictions[b, i, j]
                    target = b * 8 + (i + 2) * 2 + j
                    losses.append(-(logits[target] - torch.logsumexp(logits, 0)))
        assert cpc_infonce(predictions, codes, 2).item() == pytest.approx(torch.stack(losses).mean().item(), rel=1e-5)

    def test_sampled_negatives_mask_the_positive(self):
        codes = torch.eye(6).reshape(1, 6, 1, 6) * 4
        predictions = codes[:, 1:] * 1.0  # offset 1: each prediction equals its target code
        torch.manual_seed(0)
        loss = cpc_infonce(predictions, codes, 1, num_negatives=4)
        assert torch.isfinite(loss) and loss.item() < 0.1  # the positive (16) vs 4 negatives at 0 (or masked)

    def test_bound_never_exceeds_log_n_and_reaches_it_when_separable(self):
        g = torch.Generator().manual_seed(1)
        n_candidates = 2 * 4 * 3
        for scale in (0.1, 1.0, 10.0):
            codes = torch.randn(2, 4, 3, 6, generator=g) * scale
            predictions = torch.randn(2, 2, 3, 6, generator=g) * scale
            loss = cpc_infonce(predictions, codes, 2)
            assert loss.item() >= 0
            assert infonce_lower_bound(loss, n_candidates) <= math.log(n_candidates)
        codes = torch.eye(24).reshape(2, 4, 3, 24)  # orthonormal codes: perfectly separable
        loss = cpc_infonce(30 * codes[:, 2:], codes, 2)
        assert loss.item() < 1e-6
        assert infonce_lower_bound(loss, n_candidates) == pytest.approx(math.log(n_candidates), abs=1e-5)
