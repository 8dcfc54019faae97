"""The views of the augmentation recipe, shared by every data path (batched, streaming, per-image).

``AugmentConfig`` describes ``num_views`` large views and ``small_crops`` small ones (SwAV's multi-crop);
:func:`view_specs` lists them with their size and crop scale, and :func:`blur_kernel_size` gives the
Gaussian-blur kernel side for a view size. The config must be resolved (its image-size-dependent fields
filled in, which :func:`selfsup.presets.resolve_config` does once for a run).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from selfsup.config import AugmentConfig, ConfigError


@dataclass(frozen=True)
class ViewSpec:
    """One view of the multi-crop recipe: its index (for the per-view probabilities), size and crop scale."""

    index: int
    size: int
    scale: tuple[float, float]
    small: bool


def require_resolved(cfg: AugmentConfig) -> AugmentConfig:
    """Return ``cfg`` if every size-dependent field is filled, else raise :class:`ConfigError`."""
    missing = [name for name in ("image_size", "crop_scale", "blur_prob") if getattr(cfg, name) is None]
    if missing:
        raise ConfigError(
            f"AugmentConfig fields {missing} are unresolved: resolve the run config first "
            "(selfsup.presets.resolve_config fills them from the image size)"
        )
    return cfg


def view_specs(cfg: AugmentConfig) -> list[ViewSpec]:
    """The views of one image: ``num_views`` large views, then ``small_crops`` small ones (SwAV multi-crop).

    Large views have size ``image_size`` and crop scale ``large_crop_scale or crop_scale``; small views
    have ``small_size`` and ``small_crop_scale``. ``cfg`` must be resolved.
    """
    require_resolved(cfg)
    large_scale = tuple(cfg.large_crop_scale or cfg.crop_scale)  # type: ignore[arg-type]
    specs = [
        ViewSpec(i, int(cfg.image_size), large_scale, False)  # type: ignore[arg-type]
        for i in range(cfg.num_views)
    ]
    specs += [
        ViewSpec(cfg.num_views + j, int(cfg.small_size), cast(tuple[float, float], tuple(cfg.small_crop_scale)), True)
        for j in range(cfg.small_crops)
    ]
    return specs


def blur_kernel_size(size: int, fraction: float) -> int:
    """Gaussian-blur kernel side: the odd integer nearest ``fraction * size``, at least 3.

    SimCLR Appendix A uses 10% of the image side (23 px for 224 px images, as in BYOL and solo-learn).
    """
    k = max(3, int(round(fraction * size)))
    return k if k % 2 else k + 1
