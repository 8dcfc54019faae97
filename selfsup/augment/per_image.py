"""The conventional per-image augmentation pipeline (PIL image -> normalised tensor), the baseline.

One torchvision ``Compose`` per view, built only from torchvision's own per-image transforms, in the
order of SimCLR Appendix A (and BYOL Table 6)::

    RandomResizedCrop -> RandomHorizontalFlip -> RandomApply(ColorJitter) -> RandomGrayscale
    -> RandomApply(GaussianBlur) -> RandomSolarize -> ToTensor -> Normalize

The views of the recipe (:mod:`selfsup.augment.views`) are shared with the batched and streaming paths,
so every path reads the configuration the same way.

Differences from the batched path, all inherent to torchvision's PIL backend:

* resizing is PIL's bilinear filter, which antialiases when a crop is *down*-scaled (the batched path
  resamples like ``antialias=False``; the two agree whenever the crop is up-scaled, which is always the
  case when the output size equals the image size, e.g. Fashion-MNIST and CIFAR);
* every op rounds to uint8 (PIL images are 8-bit), and PIL's grayscale uses integer luma weights;
* ``shared_flip`` (AMDIM) is ignored: each view's transform flips independently, because one per-view
  ``Compose`` cannot see the decision made for another view.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torchvision.transforms as T
from PIL import Image

from selfsup.augment.views import ViewSpec, blur_kernel_size, require_resolved, view_specs
from selfsup.config import AugmentConfig

EVAL_CROP_FRACTION = 0.875
"""ImageNet's evaluation convention: short side to ``size / 0.875`` (256 for 224), then crop ``size``."""


class _ToMode:
    """PIL image -> ``L`` (1 channel) or ``RGB`` (3); a class, so that transforms pickle (spawned workers)."""

    def __init__(self, channels: int) -> None:
        self.mode = "L" if channels == 1 else "RGB"

    def __call__(self, img: Image.Image) -> Image.Image:
        return img if img.mode == self.mode else img.convert(self.mode)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.mode!r})"


def _check_channels(channels: int, mean: Sequence[float], std: Sequence[float]) -> None:
    if channels not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, got {channels}")
    if len(mean) != channels or len(std) != channels:
        raise ValueError(f"mean/std need {channels} values, got {len(mean)} and {len(std)}")


def view_transform(
    cfg: AugmentConfig, spec: ViewSpec, channels: int, mean: Sequence[float], std: Sequence[float]
) -> T.Compose:
    """torchvision's per-image transform for one view (SimCLR Appendix A; BYOL Table 6).

    ``RandomGrayscale`` keeps the input's channel count (1 for ``L`` images, 3 for ``RGB``), which is
    ``num_output_channels = channels``. For ``L`` images ColorJitter's saturation and hue are no-ops
    (torchvision follows PIL). Solarize acts on uint8 PIL images, so its threshold is
    ``solarize_threshold * 255`` (pixels >= threshold are inverted, exactly as on [0, 1] images).
    """
    _check_channels(channels, mean, std)
    i = spec.index
    ops: list[Callable] = [
        _ToMode(channels),
        T.RandomResizedCrop(
            spec.size,
            scale=spec.scale,
            ratio=tuple(cfg.crop_ratio),
            interpolation=T.InterpolationMode.BILINEAR,
            antialias=True,
        ),
        T.RandomHorizontalFlip(cfg.for_view(i, "flip_prob")),
    ]
    if cfg.for_view(i, "jitter_prob") > 0 and max(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue) > 0:
        jitter = T.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue)
        ops.append(T.RandomApply([jitter], p=cfg.for_view(i, "jitter_prob")))
    if cfg.for_view(i, "grayscale_prob") > 0:
        ops.append(T.RandomGrayscale(cfg.for_view(i, "grayscale_prob")))
    if cfg.for_view(i, "blur_prob") > 0:
        blur = T.GaussianBlur(blur_kernel_size(spec.size, cfg.blur_kernel_fraction), tuple(cfg.blur_sigma))
        ops.append(T.RandomApply([blur], p=cfg.for_view(i, "blur_prob")))
    if cfg.for_view(i, "solarize_prob") > 0:
        ops.append(T.RandomSolarize(cfg.solarize_threshold * 255.0, p=cfg.for_view(i, "solarize_prob")))
    ops += [T.ToTensor(), T.Normalize(list(mean), list(std))]
    return T.Compose(ops)


def per_image_view_transforms(
    cfg: AugmentConfig, channels: int, mean: Sequence[float], std: Sequence[float]
) -> list[Callable[[Image.Image], torch.Tensor]]:
    """One transform per view (large views, then small crops): PIL image -> float32 ``(C, S, S)`` tensor.

    ``cfg`` must be resolved (as a run's config is), so that the small-image defaults of
    :meth:`AugmentConfig.resolved` (crop scale (0.2, 1), no blur at 28-32 px) are the ones applied.
    Randomness comes from torch's global generator, as with any torchvision transform. ``shared_flip``
    is ignored here (each view flips independently); the batched path honours it.
    """
    require_resolved(cfg)
    return [view_transform(cfg, spec, channels, mean, std) for spec in view_specs(cfg)]


class _EvalTransform:
    """PIL image -> normalised ``(C, size, size)`` tensor without randomness (see :func:`eval_transform`)."""

    def __init__(
        self, image_size: int, channels: int, mean: Sequence[float], std: Sequence[float], crop_fraction: float
    ) -> None:
        _check_channels(channels, mean, std)
        self.image_size = image_size
        self.convert = _ToMode(channels)
        self.finish = T.Compose([T.ToTensor(), T.Normalize(list(mean), list(std))])
        larger = int(round(image_size / crop_fraction))
        self.shrink = T.Compose([T.Resize(larger, antialias=True), T.CenterCrop(image_size)])
        self.fit = T.Compose([T.Resize(image_size, antialias=True), T.CenterCrop(image_size)])

    def __call__(self, img: Image.Image) -> torch.Tensor:
        img = self.convert(img)
        width, height = img.size
        if (width, height) != (self.image_size, self.image_size):
            img = self.shrink(img) if min(width, height) > self.image_size else self.fit(img)
        return self.finish(img)


def eval_transform(
    image_size: int,
    channels: int,
    mean: Sequence[float],
    std: Sequence[float],
    crop_fraction: float = EVAL_CROP_FRACTION,
) -> Callable[[Image.Image], torch.Tensor]:
    """The evaluation transform: PIL image -> normalised float32 ``(C, image_size, image_size)`` tensor.

    Images already ``image_size`` square are only converted and normalised. Larger images follow the
    ImageNet convention (short side to ``image_size / crop_fraction``, then a central ``image_size``
    crop); smaller or non-square ones are resized to ``image_size`` on the short side and centre-cropped.
    """
    return _EvalTransform(image_size, channels, mean, std, crop_fraction)
