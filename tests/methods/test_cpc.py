"""CPC v2: the patch grid, causality of the context network, independent patches."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from selfsup.methods.cpc import DIRECTIONS, extract_patches, jitter_patches, orient, patch_grid
from selfsup.models import build_backbone
from selfsup.presets import resolve_config
from tests.helpers import (
    make_method,
)

pytestmark = pytest.mark.usefixtures("one_thread")


class TestCPCGrid:
    def test_patches_are_the_overlapping_crops_in_row_major_order(self):
        images = torch.randn(2, 3, 32, 32)
        patches, rows, cols = extract_patches(images, 8, 4)
        assert (rows, cols) == (7, 7) and patches.shape == (2 * 49, 3, 8, 8)
        assert extract_patches(torch.randn(1, 1, 28, 28), 8, 4)[1:] == (6, 6)
        assert extract_patches(torch.randn(1, 3, 256, 256), 64, 32)[1:] == (7, 7)
        grid = patches.reshape(2, 7, 7, 3, 8, 8)
        assert torch.equal(grid[1, 2, 5], images[1, :, 8:16, 20:28])
        assert torch.equal(grid[0, 6, 0], images[0, :, 24:32, 0:8])

    @pytest.mark.parametrize("direction", ["top_down", "bottom_up", "left_right", "right_left"])
    def test_context_is_causal_in_every_direction(self, direction):
        """d(prediction at oriented row i)/d(codes) is exactly zero on every row after i, and not zero on
        rows <= i: the context sees exactly the rows above and including its own."""
        cpc = make_method(
            "cpc",
            "patchnet-small",
            {"latent_dim": 8, "context_dim": 16, "max_offset": 3, "directions": (direction,)},
            norm="group",
        )
        codes = torch.randn(2, 5, 5, 8, requires_grad=True)
        _, predictions = cpc.context_predictions(codes, direction)
        for k_index, prediction in enumerate(predictions):
            for i in range(prediction.shape[1]):
                (grad,) = torch.autograd.grad(prediction[:, i].sum(), codes, retain_graph=True)
                oriented = orient(grad, direction)
                assert torch.count_nonzero(oriented[:, i + 1 :]) == 0, (direction, k_index, i)
                assert torch.count_nonzero(oriented[:, : i + 1]) > 0, (direction, k_index, i)

    def test_prediction_never_sees_the_pixels_of_its_target(self):
        """End to end from pixels: the prediction made at row i has zero gradient on every pixel row of the
        patches at rows >= i + 2 (the first predicted offset), but it does see pixels of the row-(i+1) patch,
        which overlaps its own by 50 % (why CPC starts at offset 2)."""
        cpc = make_method("cpc", "patchnet-small", {"latent_dim": 8, "context_dim": 16, "max_offset": 2}, norm="group")
        images = torch.randn(2, 3, 24, 24, requires_grad=True)  # 5x5 grid of 8 px patches, stride 4
        codes = cpc.code_head(cpc.patch_features(images, augment=False))
        _, (prediction,) = cpc.context_predictions(codes, "top_down")
        for i in range(prediction.shape[1]):
            (grad,) = torch.autograd.grad(prediction[:, i].sum(), images, retain_graph=True)
            target_top = 4 * (i + 2)
            assert torch.count_nonzero(grad[:, :, target_top:]) == 0, i
            assert torch.count_nonzero(grad[:, :, 4 * (i + 1) : target_top]) > 0, i

    @pytest.mark.parametrize("backbone", ["patchnet", "resnet10"])
    @pytest.mark.parametrize("norm", ["group", "layer"])
    def test_patches_are_encoded_independently_in_train_mode(self, backbone, norm):
        encoder = build_backbone(backbone, "cifar", 3, norm=norm).train()
        patches = torch.randn(12, 3, 8, 8)
        changed = patches.clone()
        changed[5] = torch.randn(3, 8, 8) * 5
        before, after = encoder(patches), encoder(changed)
        assert not torch.allclose(before[5], after[5])
        others = [i for i in range(12) if i != 5]
        assert torch.equal(before[others], after[others])

    def test_batchnorm_would_connect_patches_so_cpc_refuses_it(self):
        encoder = build_backbone("patchnet", "cifar", 3, norm="batch").train()
        patches = torch.randn(12, 3, 8, 8)
        changed = patches.clone()
        changed[5] += 5
        assert not torch.allclose(encoder(patches)[0], encoder(changed)[0])  # the negative control
        with pytest.raises(ValueError, match="norm=group"):
            make_method("cpc", "patchnet", norm="batch")

    def test_patch_augmentation_drops_two_colour_channels_and_flips(self):
        cpc = make_method("cpc", "patchnet-small", {"patch_flip_prob": 0.5}, norm="group")
        patches = torch.rand(400, 3, 8, 8) + 1  # strictly positive, so dropped channels are exactly 0
        torch.manual_seed(3)
        out = cpc.augment_patches(patches)
        kept = (out.abs().sum(dim=(2, 3)) > 0).sum(dim=1)
        assert torch.equal(kept, torch.ones(400, dtype=torch.long))
        channel = out.abs().sum(dim=(2, 3)).argmax(dim=1)
        rows = torch.arange(400)
        same = (out[rows, channel] == patches[rows, channel]).flatten(1).all(1)
        flipped = (out[rows, channel] == patches[rows, channel].flip(-1)).flatten(1).all(1)
        assert bool((same | flipped).all())
        assert 120 < int(flipped.sum()) < 280 and 80 < int((channel == 0).sum()) < 190
        grey = torch.rand(10, 1, 8, 8) + 1
        assert bool((cpc.augment_patches(grey).abs().sum(dim=(1, 2, 3)) > 0).all())  # nothing to drop

    @pytest.mark.parametrize("jitter", [2, 3])
    def test_patch_jitter_keeps_a_sub_crop_padded_back_around_it(self, jitter):
        """CPC v1 §3.2: a random (P - j) px sub-crop of every patch, padded back to P px (j // 2 before it)."""
        patches = torch.rand(10, 3, 8, 8) + 1
        keep, before = 8 - jitter, jitter // 2
        for dy in range(jitter + 1):
            for dx in range(jitter + 1):
                out = jitter_patches(patches, torch.tensor([[dy, dx]] * 10), jitter)
                sub = patches[:, :, dy : dy + keep, dx : dx + keep]
                assert torch.equal(out, F.pad(sub, (before, jitter - before, before, jitter - before))), (dy, dx)

    def test_patch_jitter_draws_every_offset_per_patch(self):
        cpc = make_method(
            "cpc", "patchnet-small", {"patch_jitter": 2, "color_drop": False, "patch_flip_prob": 0.0}, norm="group"
        )
        patches = torch.rand(300, 3, 8, 8) + 1
        torch.manual_seed(4)
        out = cpc.augment_patches(patches)
        candidates = {
            (dy, dx): F.pad(patches[:, :, dy : dy + 6, dx : dx + 6], (1, 1, 1, 1)) for dy in range(3) for dx in range(3)
        }
        matches = torch.stack([(out == c).flatten(1).all(1) for c in candidates.values()], dim=1)  # (300, 9)
        assert torch.equal(matches.sum(1), torch.ones(300, dtype=torch.long))  # each patch: exactly one offset
        assert bool((matches.sum(0) > 10).all())  # all nine offsets drawn

    def test_patch_jitter_must_leave_pixels(self):
        with pytest.raises(ValueError, match="patch_jitter"):
            make_method("cpc", "patchnet-small", {"patch_size": 8, "patch_jitter": 8}, norm="group")


class TestCPCImagenetPreset:
    def test_resolves_with_the_verified_settings(self):
        """CPC v2: LayerNorm, all four directions, colour dropping per patch; CPC v1 §3.2 where v2's appendix
        could not be verified: 64 px patches at 32 px stride on 256 px images (a 7x7 grid), 60-of-64 px patch
        jitter, a 256 crop of fixed area (256/300)^2, flips with p = 0.5, Adam 2e-4, batch 32 x 16 = 512."""
        cfg = resolve_config("cpc", "imagenet")
        a = cfg.method_args
        assert cfg.norm == "layer"
        assert tuple(a["directions"]) == DIRECTIONS == ("top_down", "bottom_up", "left_right", "right_left")
        assert a["color_drop"] is True
        assert (a["patch_size"], a["patch_stride"], cfg.augment.image_size) == (64, 32, 256)
        assert patch_grid(cfg.augment.image_size, a["patch_size"], a["patch_stride"]) == 7
        assert a["patch_jitter"] == 4 and a["patch_size"] - a["patch_jitter"] == 60
        assert (a["min_offset"], a["max_offset"]) == (2, 5)  # v1: "We predict up to five rows"
        assert cfg.augment.crop_scale == (0.73, 0.73) and cfg.augment.crop_ratio == (1.0, 1.0)
        assert cfg.augment.flip_prob == (0.5,) and a["patch_flip_prob"] == 0.5
        assert cfg.augment.num_views == 1 and cfg.augment.grayscale_prob == (0.0,)
        assert (cfg.optimizer, cfg.lr, cfg.batch_size) == ("adam", 2e-4, 512)
