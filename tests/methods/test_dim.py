"""Deep InfoMax: prior matching and occlusion."""

from __future__ import annotations

import pytest
import torch

from selfsup.methods.dim import occlude
from tests.helpers import (
    PROGRESS,
    make_method,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_prior_matching_gradients_reach_only_their_own_player():
    """With only the prior terms, the discriminator's gradient does not depend on γ (the encoder's term
    sends it nothing) and the encoder's gradient scales with γ (the discriminator's term sends it nothing)."""
    grads = {}
    for gamma in (1.0, 2.0):
        dim = make_method("dim", "dim32", {"beta": 0.0, "gamma": gamma})
        torch.manual_seed(1)
        dim([torch.randn(8, 3, 32, 32)], PROGRESS).loss.backward()
        grads[gamma] = {n: p.grad.clone() for n, p in dim.named_parameters()}
    for name, grad in grads[1.0].items():
        if name.startswith("discriminator"):
            assert torch.allclose(grads[2.0][name], grad, atol=1e-6), name
        else:
            assert torch.allclose(grads[2.0][name], 2 * grad, rtol=1e-4, atol=1e-7), name
    assert any(g.abs().sum() > 0 for n, g in grads[1.0].items() if n.startswith("backbone"))


def test_occlusion_hides_one_square_of_the_requested_size_per_image():
    """Each image loses exactly one side x side square (set to 0), at a place drawn per image."""
    torch.manual_seed(0)
    images = torch.rand(64, 3, 32, 32) + 1.0  # no zeros before occlusion
    hidden = occlude(images, 0.25) == 0
    assert torch.equal(hidden[:, 0], hidden[:, 1]) and torch.equal(hidden[:, 0], hidden[:, 2])  # all channels
    for mask in hidden[:, 0]:
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        assert len(rows) == len(cols) == 8 and int(mask.sum()) == 64
        assert rows.max() - rows.min() == 7 and cols.max() - cols.min() == 7  # one contiguous square
    tops = {int(mask.any(1).nonzero()[0]) for mask in hidden[:, 0]}
    assert len(tops) > 5
    # a slice of a larger draw is the matching rows of that draw (what each DDP rank uses)
    torch.manual_seed(3)
    whole = occlude(images, 0.5)
    torch.manual_seed(3)
    assert torch.equal(occlude(images[16:32], 0.5, offset=16, total=64), whole[16:32])


def test_occlusion_feeds_y_the_occluded_copy_and_the_local_map_the_full_image():
    """DIM §4.3: with occlusion the global Y never sees the hidden square (its gradient there is zero),
    while the local features still depend on every pixel. (Eval mode, so that BatchNorm's batch statistics,
    which mix the full and occluded copies, do not couple the images.)"""
    dim = make_method("dim", "dim32", {"mi_units": 32, "gamma": 0.0, "occlusion": 0.5}).eval()
    images = torch.randn(4, 3, 32, 32, requires_grad=True)
    torch.manual_seed(7)
    y_grad = torch.autograd.grad(dim([images], PROGRESS).embedding.sum(), images)[0]
    torch.manual_seed(7)
    hidden = occlude(torch.ones(4, 3, 32, 32), 0.5) == 0
    assert torch.all(y_grad[hidden] == 0) and torch.count_nonzero(y_grad[~hidden]) > 0
    torch.manual_seed(7)
    loss_grad = torch.autograd.grad(dim([images], PROGRESS).loss, images)[0]
    assert torch.count_nonzero(loss_grad[hidden]) > 0  # the local map still sees the hidden pixels
