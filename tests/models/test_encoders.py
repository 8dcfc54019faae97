"""The encoders of DIM, AMDIM and CPC: shapes, stage maps, receptive fields."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import (
    make_method,
)

pytestmark = pytest.mark.usefixtures("one_thread")


class TestEncoders:
    def test_dim32_local_map_is_128_channels_8x8(self):
        dim = make_method("dim", "dim32", {"mi_units": 16})
        from selfsup.models.encoders import feature_pyramid

        maps, h = feature_pyramid(dim.backbone, torch.randn(2, 3, 32, 32))
        assert maps[dim.local_stage].shape == (2, 128, 8, 8) and h.shape == (2, 1024)

    def test_amdim_encoder_gives_7x7_5x5_1x1_without_padding(self):
        amdim = make_method("amdim", "amdim32-small", {"n_rkhs": 256})
        images = torch.randn(2, 3, 32, 32, requires_grad=True)
        r1, r5, r7 = amdim.multiscale(images)
        assert r1.shape == (2, 256) and r5.shape == (2, 25, 256) and r7.shape == (2, 49, 256)
        amdim.eval()  # BatchNorm at the output would otherwise connect all locations
        from selfsup.models.encoders import feature_pyramid

        maps, _ = feature_pyramid(amdim.backbone, images)
        five = maps[amdim.index5]
        (grad,) = torch.autograd.grad(five[0, :, 0, 0].sum(), images)
        # no padding: the top-left 5x5 feature sees only a top-left window of the image
        assert torch.count_nonzero(grad[0, :, 24:, :]) == 0 and torch.count_nonzero(grad[0, :, :, 24:]) == 0
        assert torch.count_nonzero(grad[0, :, :8, :8]) > 0

    def test_resnet_adaptation_for_amdim(self):
        amdim = make_method("amdim", "resnet10", {"n_rkhs": 32})
        r1, r5, r7 = amdim.multiscale(torch.randn(2, 3, 32, 32))
        assert r1.shape == (2, 32) and r5.shape == (2, 25, 32) and r7.shape == (2, 49, 32)
