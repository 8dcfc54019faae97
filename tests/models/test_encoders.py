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


class TestAlex64:
    """DIM's alex64x64 (rdevon/DIM cortex_DIM/configs/convnets.py), registered as ``alex64``."""

    def test_maps_at_64px_and_the_384x15x15_local_map(self):
        from selfsup.models import build_backbone
        from selfsup.models.encoders import default_local_stage, feature_pyramid

        alex = build_backbone("alex64", "cifar", 3)
        maps, h = feature_pyramid(alex, torch.randn(2, 3, 64, 64))
        shapes = [tuple(m.shape[1:]) for m in maps]
        assert shapes == [(96, 31, 31), (192, 15, 15), (384, 15, 15), (384, 15, 15), (192, 7, 7)]
        assert h.shape == (2, 4096) and alex.out_dim == 4096
        assert default_local_stage(alex) == 2 and shapes[2] == (384, 15, 15)
        assert alex.stage_channels == [s[0] for s in shapes] and alex.stage_sizes == [s[1] for s in shapes]
        assert alex.feature_map(torch.randn(2, 3, 64, 64)).shape == (2, 192, 7, 7)
        alex.eval()
        x = torch.randn(2, 3, 64, 64)
        assert torch.allclose(alex(x), feature_pyramid(alex, x)[1])

    def test_layers_follow_the_config(self):
        """3x3 stride-1 padding-1 convs 96-192-384-384-192 without bias (each followed by BN), three 3x3
        stride-2 max-pools, two 4096-unit linear layers without bias, each followed by BN and ReLU."""
        from selfsup.models import build_backbone

        alex = build_backbone("alex64", "cifar", 3)
        convs = [m for m in alex.modules() if isinstance(m, torch.nn.Conv2d)]
        assert [c.out_channels for c in convs] == [96, 192, 384, 384, 192]
        assert all(c.kernel_size == (3, 3) and c.stride == (1, 1) and c.padding == (1, 1) for c in convs)
        assert all(c.bias is None for c in convs)
        pools = [m for m in alex.modules() if isinstance(m, torch.nn.MaxPool2d)]
        assert len(pools) == 3 and all(p.kernel_size == 3 and p.stride == 2 and p.padding == 0 for p in pools)
        fcs = [m for m in alex.modules() if isinstance(m, torch.nn.Linear)]
        assert [(f.in_features, f.out_features) for f in fcs] == [(192 * 7 * 7, 4096), (4096, 4096)]
        assert all(f.bias is None for f in fcs)
        assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in alex.modules()) == 5
        assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in alex.modules()) == 2

    def test_dim_on_alex64_scores_the_384_channel_map_and_a_64d_global(self):
        dim = make_method("dim", "alex64", {"mi_units": 16})
        assert dim.local_stage == 2 and dim.local_mi.shortcut.in_channels == 384
        assert (dim.global_head.in_features, dim.global_head.out_features) == (4096, 64)
