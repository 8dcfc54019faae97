"""Augmentation for self-supervised learning: the SimCLR / BYOL recipe (SimCLR Appendix A, BYOL Table 6).

Two implementations of one recipe (:class:`selfsup.config.AugmentConfig`):

* :class:`BatchedViewAugmenter` (default for in-memory datasets): a whole uint8 batch on any device,
  per-sample parameters, batched tensor ops (:mod:`selfsup.augment.batched`);
* :func:`per_image_view_transforms`: torchvision's per-image PIL transforms, the conventional baseline
  (:mod:`selfsup.augment.per_image`); :func:`eval_transform` is its deterministic evaluation counterpart.
"""

from selfsup.augment.batched import BatchedViewAugmenter, ViewParams
from selfsup.augment.per_image import eval_transform, per_image_view_transforms
from selfsup.augment.views import ViewSpec, blur_kernel_size, view_specs

__all__ = [
    "BatchedViewAugmenter",
    "ViewParams",
    "ViewSpec",
    "blur_kernel_size",
    "eval_transform",
    "per_image_view_transforms",
    "view_specs",
]
