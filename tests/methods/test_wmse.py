"""W-MSE: the method's views and sub-batches."""

from __future__ import annotations

import pytest
import torch

from selfsup.methods import METHODS
from tests.helpers import (
    images,
    make_method,
    progress,
)


class TestWMSEMethod:
    @pytest.mark.parametrize("views", [2, 4])
    def test_step_end_to_end(self, views):
        method = make_method("wmse", hidden_dim=32, latent_dim=2, w_size=4, num_samples=views)
        assert METHODS.get("wmse").num_views(method.args) == views
        out = method([images(8, 8, s) for s in range(views)], progress())
        assert torch.isfinite(out.loss) and 0 <= out.loss.item() <= 4
        assert out.embedding.shape == (8, 2)
        out.loss.backward()
        assert all(p.grad is not None for p in method.parameters())

    def test_clear_errors(self):
        with pytest.raises(ValueError, match="w_size=64 must be larger than latent_dim=64"):
            make_method("wmse", hidden_dim=32, latent_dim=64, w_size=64)
        with pytest.raises(ValueError, match="num_samples must be 2"):
            make_method("wmse", num_samples=3)
        method = make_method("wmse", hidden_dim=32, latent_dim=4, w_size=8, num_samples=4)
        with pytest.raises(ValueError, match="aug.num_views=4"):
            method([images(16), images(16, seed=1)], progress())
        method = make_method("wmse", hidden_dim=32, latent_dim=4, w_size=32)
        with pytest.raises(ValueError, match="fewer than w_size=32"):
            method([images(16), images(16, seed=1)], progress())

    def test_permutation_uses_the_global_rng(self):
        method = make_method("wmse", hidden_dim=32, latent_dim=4, w_size=8).eval()  # eval: BN without batch stats
        views = [images(16, 8, 0), images(16, 8, 1)]
        torch.manual_seed(123)
        a = method(views, progress()).loss
        torch.manual_seed(123)
        b = method(views, progress()).loss
        c = method(views, progress()).loss
        assert a.item() == b.item() and a.item() != c.item()
