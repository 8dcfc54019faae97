"""Tests of ``selfsup.augment``: the batched ops against torchvision's per-image functional ops, the
parameter distributions, determinism, shapes, and the per-image (torchvision) pipeline.

Tolerances: every batched op is compared on float images in [0, 1] (no uint8 rounding) with the
torchvision op at the same parameters. Unless a test says otherwise the tolerance is 1e-5, i.e. float32
rounding of a few operations done in a different order (for example the separable blur versus
torchvision's 2-D kernel, or the closed-form HSV -> RGB versus torchvision's six sectors).
"""

from __future__ import annotations

import dataclasses
import math
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms as T
import torchvision.transforms.v2.functional as TF
from PIL import Image

from selfsup.augment import BatchedViewAugmenter, ViewParams, eval_transform, per_image_view_transforms
from selfsup.augment import batched as B
from selfsup.augment.views import blur_kernel_size, view_specs
from selfsup.config import AugmentConfig, ConfigError

TOL = 1e-5


pytestmark = pytest.mark.usefixtures("one_thread")

MEAN3, STD3 = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
MEAN1, STD1 = (0.29,), (0.35,)


def stats(channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    return (MEAN1, STD1) if channels == 1 else (MEAN3, STD3)


def real_looking(n: int, channels: int, size: int | tuple[int, int], seed: int = 0) -> torch.Tensor:
    """Float images in [0, 1] that look like photos: smooth colour fields, a sharp-edged square,
    saturated (clipped) regions, flat grey areas and a little noise."""
    h, w = (size, size) if isinstance(size, int) else size
    g = torch.Generator().manual_seed(seed)
    x = F.interpolate(
        torch.rand(n, channels, 4, 4, generator=g) * 1.6 - 0.3, size=(h, w), mode="bicubic", align_corners=False
    )
    x = x + 0.03 * torch.randn(n, channels, h, w, generator=g)
    y0, x0 = h // 4, w // 3
    x[:, :, y0 : y0 + h // 3, x0 : x0 + w // 3] = torch.rand(n, channels, 1, 1, generator=g)
    x[: n // 8, :, : h // 5, :] = 0.5  # flat grey band (zero chroma, exactly on the solarize threshold)
    return x.clamp(0, 1)


def as_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x * 255).round().to(torch.uint8)


def augmenter(channels: int = 3, **cfg_fields) -> BatchedViewAugmenter:
    cfg = AugmentConfig(**cfg_fields).resolved(32)
    mean, std = stats(channels)
    return BatchedViewAugmenter(cfg, channels, mean, std)


def binomial_ok(hits: int, n: int, p: float, sigmas: float = 4.5) -> bool:
    """Is ``hits / n`` within ``sigmas`` binomial standard errors of ``p`` (exact when p is 0 or 1)?"""
    return abs(hits / n - p) <= sigmas * math.sqrt(p * (1 - p) / n) + 1e-12


# ----------------------------------------------------------------------------- each op vs torchvision


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("in_hw, size", [((32, 30), 32), ((32, 30), 14), ((32, 30), 45), ((96, 96), 96)])
def test_resized_crop_flip_matches_torchvision(channels: int, in_hw: tuple[int, int], size: int) -> None:
    """Crop + bilinear resize (antialias=False) + hflip like torchvision, borders included: the source
    coordinates are clamped to the crop like F.interpolate. Output sizes: equal to the input, smaller
    (14: down-scaling, antialias off in both) and larger (45); 96 px checks the grid's precision."""
    x = real_looking(48, channels, in_hw, seed=1)
    aug = augmenter(channels)
    p = aug.sample_params(48, 0, torch.Generator().manual_seed(3), in_hw)
    p.flip[:8] = torch.tensor([True, False] * 4)  # make sure both branches appear
    out = B.resized_crop_flip(x, p.top, p.left, p.height, p.width, p.flip, size)
    for i in range(48):
        ref = TF.resized_crop(
            x[i], int(p.top[i]), int(p.left[i]), int(p.height[i]), int(p.width[i]), [size, size], antialias=False
        )
        if p.flip[i]:
            ref = TF.horizontal_flip(ref)
        torch.testing.assert_close(out[i], ref, atol=TOL, rtol=0)


def test_resized_crop_uint8_is_float_over_255() -> None:
    """uint8 input is scaled to [0, 1]: within 1e-6 of resampling x / 255."""
    x8 = as_uint8(real_looking(16, 3, 32, seed=2))
    p = augmenter().sample_params(16, 0, torch.Generator().manual_seed(0), (32, 32))
    a = B.resized_crop_flip(x8, p.top, p.left, p.height, p.width, p.flip, 32)
    b = B.resized_crop_flip(x8.float() / 255, p.top, p.left, p.height, p.width, p.flip, 32)
    assert a.dtype == torch.float32
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


JITTER_CASES = [
    (B.adjust_brightness, TF.adjust_brightness, (0.0, 2.0)),
    (B.adjust_contrast, TF.adjust_contrast, (0.0, 2.0)),
    (B.adjust_saturation, TF.adjust_saturation, (0.0, 2.0)),
    (B.adjust_hue, TF.adjust_hue, (-0.5, 0.5)),
]


@pytest.mark.parametrize(
    "ours, theirs, factor_range", JITTER_CASES, ids=["brightness", "contrast", "saturation", "hue"]
)
@pytest.mark.parametrize("channels", [1, 3])
def test_colour_jitter_ops_match_torchvision(ours, theirs, factor_range, channels: int) -> None:
    """Per-sample factors over the full valid range (clamping to [0, 1] is exercised by factors > 1).
    For 1 channel saturation and hue must be identities, as in torchvision."""
    x = real_looking(40, channels, 24, seed=4)
    factors = torch.empty(40).uniform_(*factor_range, generator=torch.Generator().manual_seed(5))
    out = ours(x.clone(), factors)
    for i in range(40):
        torch.testing.assert_close(out[i], theirs(x[i], float(factors[i])), atol=TOL, rtol=0)
    if channels == 1 and ours in (B.adjust_saturation, B.adjust_hue):
        assert torch.equal(out, x)


def test_hue_on_grey_and_tied_pixels() -> None:
    """Hue edge cases: grey pixels (zero chroma), ties for the maximum channel, pure primaries."""
    values = torch.tensor([0.0, 0.25, 0.5, 1.0])
    grid = torch.cartesian_prod(values, values, values).T.reshape(1, 3, 8, 8).repeat(9, 1, 1, 1)
    factors = torch.linspace(-0.5, 0.5, 9)
    out = B.adjust_hue(grid.clone(), factors)
    for i in range(9):
        torch.testing.assert_close(out[i], TF.adjust_hue(grid[i], float(factors[i])), atol=TOL, rtol=0)


@pytest.mark.parametrize("channels", [1, 3])
def test_grayscale_matches_torchvision(channels: int) -> None:
    """Luma 0.2989 R + 0.587 G + 0.114 B kept at ``channels`` channels; tolerance 1e-6."""
    x = real_looking(8, channels, 20, seed=6)
    out = B.rgb_to_grayscale(x, channels)
    assert out.shape == x.shape
    torch.testing.assert_close(out, TF.rgb_to_grayscale(x, num_output_channels=channels), atol=1e-6, rtol=0)


@pytest.mark.parametrize("method", ["shift", "conv"])
@pytest.mark.parametrize("channels, size, kernel", [(3, 32, 3), (1, 28, 3), (3, 40, 5)])
def test_gaussian_blur_matches_torchvision(method: str, channels: int, size: int, kernel: int) -> None:
    """Separable per-sample blur with reflect padding vs torchvision's 2-D kernel blur."""
    x = real_looking(24, channels, size, seed=7)
    sigma = torch.empty(24).uniform_(0.1, 2.0, generator=torch.Generator().manual_seed(8))
    out = B.gaussian_blur(x, sigma, kernel, method=method)
    for i in range(24):
        ref = TF.gaussian_blur(x[i], [kernel, kernel], [float(sigma[i])] * 2)
        torch.testing.assert_close(out[i], ref, atol=TOL, rtol=0)


def test_solarize_matches_torchvision_exactly() -> None:
    """``|x - [x >= t]|`` is exact, including pixels equal to the threshold (the grey band is 0.5)."""
    x = real_looking(16, 3, 16, seed=9)
    for threshold in (0.5, 0.3):
        assert torch.equal(B.solarize(x, threshold), TF.solarize(x, threshold))


def test_normalize_matches_torchvision() -> None:
    x = real_looking(4, 3, 16, seed=10)
    mean, std = torch.tensor(MEAN3).view(1, 3, 1, 1), torch.tensor(STD3).view(1, 3, 1, 1)
    ref = TF.normalize(x, list(MEAN3), list(STD3))
    torch.testing.assert_close(B.normalize_(x.clone(), mean, std), ref, atol=1e-6, rtol=0)


def reference_view(
    x: torch.Tensor, p: ViewParams, i: int, size: int, cfg: AugmentConfig, channels: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample ``i`` through torchvision's functional ops with the batched path's parameters.
    Returns (image before solarization, normalised output)."""
    img = TF.resized_crop(
        x[i], int(p.top[i]), int(p.left[i]), int(p.height[i]), int(p.width[i]), [size, size], antialias=False
    )
    if p.flip[i]:
        img = TF.horizontal_flip(img)
    if p.jitter[i]:
        fns = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
        for op in p.order[i].tolist():
            img = fns[op](img, float(p.factors[i, op]))
    if p.grayscale[i]:
        img = TF.rgb_to_grayscale(img, num_output_channels=channels)
    if p.blur[i]:
        k = blur_kernel_size(size, cfg.blur_kernel_fraction)
        img = TF.gaussian_blur(img, [k, k], [float(p.sigma[i])] * 2)
    before = img
    if p.solarize[i]:
        img = TF.solarize(img, cfg.solarize_threshold)
    mean, std = stats(channels)
    return before, TF.normalize(img, list(mean), list(std))


@pytest.mark.parametrize("channels", [1, 3])
def test_full_view_matches_torchvision_chain(channels: int) -> None:
    """A whole view (crop, flip, jitter in each sample's random order, grayscale, blur, solarize,
    normalise) equals torchvision's functional ops chained per sample with the same parameters.
    Tolerance 1e-4 after normalisation (1/std ~ 4 amplifies the 1e-5 op tolerance, and errors compound
    over up to 8 ops). Pixels within 1e-4 of the solarize threshold are skipped: a rounding-level
    difference can legitimately put them on the other side of the discontinuity."""
    cfg = AugmentConfig(
        blur_prob=(0.5,), solarize_prob=(0.5,), jitter_prob=(0.9,), grayscale_prob=(0.3,), hue=0.5
    ).resolved(32)
    mean, std = stats(channels)
    aug = BatchedViewAugmenter(cfg, channels, mean, std)
    x = real_looking(48, channels, 32, seed=11)
    p = aug.sample_params(48, 0, torch.Generator().manual_seed(12), (32, 32))
    assert p.jitter.any() and p.blur.any() and p.solarize.any() and p.grayscale.any()
    out = aug.apply(x, p, 32)
    for i in range(48):
        before, ref = reference_view(x, p, i, 32, cfg, channels)
        keep = (before - cfg.solarize_threshold).abs() > 1e-4 if p.solarize[i] else torch.ones_like(before)
        torch.testing.assert_close(out[i][keep.bool()], ref[keep.bool()], atol=1e-4, rtol=0)


# ----------------------------------------------------------------------------- parameter distributions

N = 4000


def test_crop_boxes_within_scale_and_ratio() -> None:
    """Every box fits the image; area fraction in ``scale`` and aspect ratio in ``ratio`` up to the
    rounding of w and h to integers (torchvision rounds the same way), unless it is the fallback."""
    aug = augmenter(crop_scale=(0.08, 1.0))
    p = aug.sample_params(N, 0, torch.Generator().manual_seed(0), (64, 48))
    h, w = p.height.double(), p.width.double()
    assert (p.top >= 0).all() and (p.left >= 0).all()
    assert (p.top + p.height <= 64).all() and (p.left + p.width <= 48).all()
    fallback = (h == 64) & (w == 48)  # 48/64 = 0.75 is inside the ratio range: the whole image
    slack = (h + w + 1) / 2  # |round(a) round(b) - ab| <= (a + b) / 2 + 1/4
    area = h * w
    assert ((area >= 0.08 * 64 * 48 - slack) | fallback).all()
    log_ratio = torch.log(w / h)
    ratio_slack = 0.5 / h + 0.5 / w + 1e-9
    assert ((log_ratio >= math.log(3 / 4) - ratio_slack) & (log_ratio <= math.log(4 / 3) + ratio_slack)).all()


def test_aspect_ratio_is_log_uniform() -> None:
    """With small areas on a big image nothing is rejected, so log(w/h) ~ U[log 3/4, log 4/3]: each
    quarter of the range holds ~25% (binomial tolerance, widened by the integer rounding of w and h)."""
    aug = augmenter(crop_scale=(0.2, 0.4))
    p = aug.sample_params(N, 0, torch.Generator().manual_seed(1), (512, 512))
    lo, hi = math.log(3 / 4), math.log(4 / 3)
    u = (torch.log(p.width.double() / p.height.double()) - lo) / (hi - lo)
    counts = torch.histc(u.clamp(0, 1 - 1e-9).float(), bins=4, min=0, max=1)
    for c in counts.tolist():
        assert binomial_ok(int(c), N, 0.25, sigmas=5)
    assert abs(float(u.mean()) - 0.5) < 0.02


def test_crop_distribution_matches_torchvision_get_params() -> None:
    """Mean area fraction and mean log aspect ratio agree with torchvision's own sampler (which also
    rejects and falls back) on a 32 px image with scale (0.2, 1): two-sample z-test, 5 sigma."""
    torch.manual_seed(0)
    img = torch.zeros(1, 32, 32)
    theirs = torch.tensor(
        [T.RandomResizedCrop.get_params(img, [0.2, 1.0], [3 / 4, 4 / 3]) for _ in range(2000)], dtype=torch.float64
    )
    p = augmenter().sample_params(N, 0, torch.Generator().manual_seed(2), (32, 32))
    ours = torch.stack([p.top, p.left, p.height, p.width], 1).double()
    for stat in (lambda b: b[:, 2] * b[:, 3] / 1024, lambda b: torch.log(b[:, 3] / b[:, 2])):
        a, b = stat(ours), stat(theirs)
        se = math.sqrt(float(a.var()) / len(a) + float(b.var()) / len(b))
        assert abs(float(a.mean() - b.mean())) < 5 * se


def test_fallback_is_torchvision_central_crop() -> None:
    """An impossible scale forces torchvision's fallback: the central crop with clamped aspect ratio."""
    aug = augmenter(crop_scale=(1.5, 2.0))
    for hw in [(20, 40), (40, 20), (30, 30)]:
        p = aug.sample_params(64, 0, torch.Generator().manual_seed(3), hw)
        torch.manual_seed(0)
        expected = T.RandomResizedCrop.get_params(torch.zeros(1, *hw), [1.5, 2.0], [3 / 4, 4 / 3])
        got = torch.stack([p.top, p.left, p.height, p.width], 1)
        assert (got == torch.tensor(expected)).all()


def test_positions_cover_all_offsets() -> None:
    """Box offsets are uniform over the valid integer range: with a fixed 16 px box in a 20 px image
    all 5 x 5 positions occur."""
    aug = augmenter(crop_scale=(0.64, 0.64), crop_ratio=(1.0, 1.0))
    p = aug.sample_params(2000, 0, torch.Generator().manual_seed(4), (20, 20))
    assert (p.height == 16).all() and (p.width == 16).all()
    assert set(p.top.tolist()) == set(range(5)) and set(p.left.tolist()) == set(range(5))


def test_application_rates_follow_per_view_probabilities() -> None:
    """Asymmetric BYOL-style recipe: blur (1.0, 0.1), solarize (0.0, 0.2), flip 0.5, jitter 0.8,
    grayscale 0.2; rates within 4.5 binomial standard errors (exact for p = 0 and 1)."""
    aug = augmenter(
        blur_prob=(1.0, 0.1), solarize_prob=(0.0, 0.2), flip_prob=(0.5,), jitter_prob=(0.8,), grayscale_prob=(0.2,)
    )
    g = torch.Generator().manual_seed(5)
    expected = {
        0: dict(flip=0.5, jitter=0.8, grayscale=0.2, blur=1.0, solarize=0.0),
        1: dict(flip=0.5, jitter=0.8, grayscale=0.2, blur=0.1, solarize=0.2),
    }
    for view, probs in expected.items():
        p = aug.sample_params(N, view, g, (32, 32))
        for name, prob in probs.items():
            assert binomial_ok(int(getattr(p, name).sum()), N, prob), (view, name)


def test_small_crops_use_the_last_per_view_value() -> None:
    """Multi-crop: views past the tuple's length take its last value (AugmentConfig.for_view)."""
    aug = augmenter(num_views=2, small_crops=2, small_size=16, blur_prob=(1.0, 0.0))
    specs = aug.specs
    assert [s.size for s in specs] == [32, 32, 16, 16]
    p = aug.sample_params(500, 3, torch.Generator().manual_seed(6), (32, 32))
    assert not p.blur.any()
    area = (p.height * p.width).double() / 1024
    assert (area <= 0.14 + 0.05).all()  # small_crop_scale (0.05, 0.14), plus rounding slack


def test_jitter_factors_sigma_and_order() -> None:
    """Factors uniform in ColorJitter's ranges, sigma in blur_sigma, each order a permutation with a
    uniformly random first op."""
    aug = augmenter(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1, blur_sigma=(0.1, 2.0))
    p = aug.sample_params(N, 0, torch.Generator().manual_seed(7), (32, 32))
    for op, (lo, hi) in enumerate([(0.6, 1.4), (0.6, 1.4), (0.8, 1.2), (-0.1, 0.1)]):
        f = p.factors[:, op]
        assert f.min() >= lo - 1e-6 and f.max() <= hi + 1e-6
        assert abs(float(f.mean()) - (lo + hi) / 2) < 4 * (hi - lo) / math.sqrt(12 * N)
    assert p.sigma.min() >= 0.1 and p.sigma.max() <= 2.0
    assert abs(float(p.sigma.mean()) - 1.05) < 4 * 1.9 / math.sqrt(12 * N)
    assert (p.order.sort(dim=1).values == torch.arange(4)).all()
    for op in range(4):
        assert binomial_ok(int((p.order[:, 0] == op).sum()), N, 0.25)
    brightness_zero = augmenter(brightness=1.5).sample_params(N, 0, torch.Generator().manual_seed(8), (8, 8))
    assert brightness_zero.factors[:, 0].min() >= 0  # max(0, 1 - b)


def test_shared_flip() -> None:
    """shared_flip (AMDIM): every view of an image has the same flip, at rate ~ flip_prob."""
    aug = augmenter(1, shared_flip=True, num_views=3, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), jitter_prob=(0.0,))
    x = (torch.arange(32) * 8).to(torch.uint8).repeat(1000, 1, 32, 1)  # a horizontal ramp
    views = aug(x, torch.Generator().manual_seed(9))
    flips = [v[:, 0, 0, 0] > v[:, 0, 0, -1] for v in views]  # the ramp decreases when flipped
    assert all(torch.equal(flips[0], f) for f in flips[1:])
    assert binomial_ok(int(flips[0].sum()), 1000, 0.5)


# ----------------------------------------------------------------------------- determinism, shapes


def test_same_seed_same_views_different_seed_different() -> None:
    aug = augmenter(blur_prob=(0.5,), solarize_prob=(0.2,))
    x = as_uint8(real_looking(32, 3, 32, seed=13))
    a = aug(x, torch.Generator().manual_seed(1))
    b = aug(x, torch.Generator().manual_seed(1))
    c = aug(x, torch.Generator().manual_seed(2))
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not any(torch.equal(u, v) for u, v in zip(a, c))
    p = aug.sample_params(32, 0, torch.Generator().manual_seed(3), (32, 32))
    assert torch.equal(aug.apply(x, p, 32), aug.apply(x, p, 32))
    rebuilt = dataclasses.replace(p, selection=None)  # index sets recomputed from the masks
    assert torch.equal(aug.apply(x, rebuilt, 32), aug.apply(x, p, 32))


@pytest.mark.parametrize("channels", [1, 3])
def test_multicrop_shapes_dtypes(channels: int) -> None:
    cfg = AugmentConfig(
        num_views=2,
        small_crops=3,
        small_size=12,
        small_crop_scale=(0.1, 0.3),
        blur_prob=(1.0, 0.1),
        solarize_prob=(0.0, 0.2),
    ).resolved(28)
    mean, std = stats(channels)
    aug = BatchedViewAugmenter(cfg, channels, mean, std)
    x = as_uint8(real_looking(10, channels, 28, seed=14))
    views = aug(x, torch.Generator().manual_seed(0))
    assert [tuple(v.shape) for v in views] == [(10, channels, 28, 28)] * 2 + [(10, channels, 12, 12)] * 3
    for v in views:
        assert v.dtype == torch.float32 and v.device == x.device and torch.isfinite(v).all()


def test_an_unresolved_config_is_refused() -> None:
    """The image-size-dependent settings are filled in once, when a run is set up; nothing re-resolves them."""
    with pytest.raises(ConfigError, match="unresolved"):
        BatchedViewAugmenter(AugmentConfig(), 1, MEAN1, STD1)


def test_bad_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="channels"):
        BatchedViewAugmenter(AugmentConfig().resolved(32), 2, (0.5, 0.5), (0.2, 0.2))
    aug = augmenter(3)
    with pytest.raises(ValueError, match="expected"):
        aug(torch.zeros(2, 1, 32, 32, dtype=torch.uint8), torch.Generator())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    """Parameters are drawn on the CPU, so GPU and CPU views agree up to op rounding (the GPU uses the
    gather resampling and the conv blur): tolerance 1e-4 after normalisation; solarize-threshold pixels
    may flip, so at most 0.1% of values may differ by more."""
    aug = augmenter(blur_prob=(1.0, 0.1), solarize_prob=(0.0, 0.2), small_crops=2, small_size=16)
    x = as_uint8(real_looking(64, 3, 32, seed=15))
    cpu = aug(x, torch.Generator().manual_seed(4))
    gpu = aug(x.cuda(), torch.Generator().manual_seed(4))
    for a, b in zip(cpu, gpu):
        assert b.device.type == "cuda"
        assert ((a - b.cpu()).abs() > 1e-4).float().mean() < 1e-3


# ----------------------------------------------------------------------------- per-image pipeline


def pil_images(channels: int, size: int, n: int = 3) -> list[Image.Image]:
    arr = as_uint8(real_looking(n, channels, size, seed=16)).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a[..., 0] if channels == 1 else a) for a in arr]


def find(transform: T.Compose, kind: type) -> list:
    """Transforms of type ``kind`` in a Compose, looking inside RandomApply."""
    found = []
    for t in transform.transforms:
        inner = t.transforms if isinstance(t, T.RandomApply) else [t]
        found += [u for u in inner if isinstance(u, kind)]
    return found


@pytest.mark.parametrize("channels, size", [(1, 28), (3, 32)])
def test_per_image_outputs_and_small_image_defaults(channels: int, size: int) -> None:
    """The per-image views have shape (C, S, S) and use resolved()'s small-image defaults: crop scale
    (0.2, 1) and no blur at 28-32 px; jitter and grayscale work on 1-channel (L) images too."""
    cfg = AugmentConfig(small_crops=2, small_size=12).resolved(size)
    mean, std = stats(channels)
    transforms = per_image_view_transforms(cfg, channels, mean, std)
    assert len(transforms) == 4
    for transform, spec in zip(transforms, view_specs(cfg)):
        crop = find(transform, T.RandomResizedCrop)[0]
        assert crop.size == (spec.size, spec.size)
        assert tuple(crop.scale) == ((0.2, 1.0) if not spec.small else (0.05, 0.14))
        assert not find(transform, T.GaussianBlur)
        for img in pil_images(channels, size):
            out = transform(img)
            assert out.shape == (channels, spec.size, spec.size) and out.dtype == torch.float32


def test_per_image_blur_solarize_and_unresolved_config() -> None:
    """Large images get the ImageNet defaults (blur p 0.5, kernel ~10% of the side, odd); per-view
    probabilities reach the right view; solarize uses the threshold on the 0-255 scale, inverting the
    same pixels as the batched op on [0, 1] (value / 255 >= 0.5, i.e. value >= 128)."""
    cfg = AugmentConfig(solarize_prob=(0.0, 0.2)).resolved(96)
    views = per_image_view_transforms(cfg, 3, MEAN3, STD3)
    blur = find(views[0], T.GaussianBlur)[0]
    assert blur.kernel_size == (11, 11) and tuple(blur.sigma) == (0.1, 2.0)
    assert not find(views[0], T.RandomSolarize)
    solar = find(views[1], T.RandomSolarize)[0]
    assert solar.p == 0.2 and solar.threshold == pytest.approx(127.5)
    assert find(views[0], T.RandomResizedCrop)[0].scale == (0.08, 1.0)
    assert views[1](pil_images(3, 96, 1)[0]).shape == (3, 96, 96)
    ramp = Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16))
    inverted = np.asarray(T.RandomSolarize(solar.threshold, p=1.0)(ramp)).ravel()
    assert (inverted[:128] == np.arange(128)).all() and (inverted[128:] == 255 - np.arange(128, 256)).all()
    with pytest.raises(ConfigError):
        per_image_view_transforms(AugmentConfig(), 3, MEAN3, STD3)


def test_transforms_pickle() -> None:
    """DataLoader workers started with spawn pickle the dataset and its transforms."""
    cfg = AugmentConfig(blur_prob=(1.0, 0.1), solarize_prob=(0.0, 0.2)).resolved(32)
    views = pickle.loads(pickle.dumps(per_image_view_transforms(cfg, 1, MEAN1, STD1)))
    assert views[0](pil_images(1, 32, 1)[0]).shape == (1, 32, 32)
    evaluate = pickle.loads(pickle.dumps(eval_transform(32, 3, MEAN3, STD3)))
    assert evaluate(pil_images(3, 32, 1)[0]).shape == (3, 32, 32)
    aug = pickle.loads(pickle.dumps(augmenter(3)))
    assert aug(as_uint8(real_looking(2, 3, 32)), torch.Generator().manual_seed(0))[0].shape == (2, 3, 32, 32)


def test_blur_kernel_size() -> None:
    assert [blur_kernel_size(s, 0.1) for s in (28, 32, 64, 96, 224)] == [3, 3, 7, 11, 23]


def test_eval_transform() -> None:
    """Matching size: just ToTensor + Normalize; larger and non-square images: resize + centre crop."""
    img = pil_images(3, 32, 1)[0]
    out = eval_transform(32, 3, MEAN3, STD3)(img)
    expected = TF.normalize(TF.to_dtype(TF.to_image(img), torch.float32, scale=True), list(MEAN3), list(STD3))
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    big = Image.fromarray(np.zeros((70, 50), dtype=np.uint8))
    assert eval_transform(32, 1, MEAN1, STD1)(big).shape == (1, 32, 32)
    assert eval_transform(32, 3, MEAN3, STD3)(big).shape == (3, 32, 32)  # L converted to RGB
    small = Image.fromarray(np.zeros((20, 24, 3), dtype=np.uint8))
    assert eval_transform(32, 3, MEAN3, STD3)(small).shape == (3, 32, 32)


def test_the_batched_pipeline_gives_one_view_when_asked():
    cfg = AugmentConfig(num_views=1).resolved(28)
    views = BatchedViewAugmenter(cfg, 1, (0.5,), (0.5,))(
        torch.randint(0, 255, (4, 1, 28, 28), dtype=torch.uint8), torch.Generator().manual_seed(0)
    )
    assert len(views) == 1 and views[0].shape == (4, 1, 28, 28)
