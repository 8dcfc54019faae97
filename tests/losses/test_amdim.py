"""AMDIM's NCE: tanh clipping and the score penalty."""

from __future__ import annotations

import math

import pytest
import torch

from selfsup.losses import (
    amdim_nce,
    amdim_terms,
    tanh_clip,
)

pytestmark = pytest.mark.usefixtures("one_thread")


class TestAMDIMLoss:
    def test_tanh_clip(self):
        x = torch.tensor([-100.0, -1.0, 0.0, 0.5, 100.0])
        clipped = tanh_clip(x, 20.0)
        assert torch.allclose(clipped, 20 * torch.tanh(x / 20))
        assert clipped.abs().max() < 20 and clipped[2] == 0
        assert clipped[3].item() == pytest.approx(0.5, rel=1e-3)  # ~identity near 0
        assert torch.equal(tanh_clip(x, None), x)

    def test_clipping_and_penalty_hand_computed(self):
        # d = 4 (so raw = <s, t> / 2), 2 images, 2 locations each
        source = torch.tensor([[40.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0]])
        target = torch.tensor(
            [[[2.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]], [[0.0, 3.0, 0.0, 0.0], [-1.0, 0.0, 0.0, 0.0]]]
        )
        raw = [
            [[40.0, 20.0], [0.0, -20.0]],  # raw[i][j][l] = <s_i, t_jl> / 2
            [[0.0, 1.0], [3.0, 0.0]],
        ]
        c = 20.0
        clip = [[[c * math.tanh(r / c) for r in row] for row in image] for image in raw]
        terms = []
        for i in range(2):
            negatives = [s for j in range(2) if j != i for s in clip[i][j]]
            for p in clip[i][i]:
                terms.append(p - math.log(math.exp(p) + sum(math.exp(s) for s in negatives)))
        penalty = 0.05 * sum(r * r for image in raw for row in image for r in row) / 8
        loss, reg = amdim_nce(source, target, tclip=20.0, penalty=0.05)
        assert loss.item() == pytest.approx(-sum(terms) / 4, rel=1e-5)
        assert reg.item() == pytest.approx(penalty, rel=1e-6)
        unclipped, _ = amdim_nce(source, target, tclip=0.0, penalty=0.05)
        assert unclipped.item() != pytest.approx(loss.item(), rel=1e-3)  # the clip matters at raw = 40

    def test_terms_are_symmetric_in_the_two_views(self):
        g = torch.Generator().manual_seed(4)
        r1 = (torch.randn(3, 8, generator=g), torch.randn(3, 8, generator=g))
        r5 = (torch.randn(3, 25, 8, generator=g), torch.randn(3, 25, 8, generator=g))
        r7 = (torch.randn(3, 49, 8, generator=g), torch.randn(3, 49, 8, generator=g))
        locations = (torch.tensor([0, 7, 24]), torch.tensor([3, 3, 12]))
        ab = amdim_terms(r1, r5, r7, locations)
        ba = amdim_terms(r1[::-1], r5[::-1], r7[::-1], locations[::-1])
        for x, y in zip(ab, ba):
            assert x.item() == pytest.approx(y.item(), rel=1e-6)
        one_way, _ = amdim_nce(r5[0][torch.arange(3), locations[0]], r5[1])
        other_way, _ = amdim_nce(r5[1][torch.arange(3), locations[1]], r5[0])
        assert ab.local_5_to_5.item() == pytest.approx(0.5 * (one_way + other_way).item(), rel=1e-6)
        assert ab.total().item() == pytest.approx(sum(t.item() for t in ab), rel=1e-6)
