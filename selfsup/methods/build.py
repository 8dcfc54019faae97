"""Build a registered method from a run's config: the one constructor every part of selfsup uses."""

from __future__ import annotations

from selfsup.config import TrainConfig
from selfsup.methods.base import METHODS, Method
from selfsup.models import build_backbone


def build_method(cfg: TrainConfig, channels: int, gather_distributed: bool = False) -> Method:
    """The method of ``cfg`` on a fresh backbone with ``channels`` input channels (seed first, with
    :func:`selfsup.rng.seed_everything`, for a reproducible initialisation)."""
    method_cls = METHODS.get(cfg.method)
    args = method_cls.make_args(cfg.method_args)
    backbone = build_backbone(cfg.backbone, cfg.stem, channels, cfg.zero_init_residual, cfg.norm)
    return method_cls(backbone, args, gather_distributed=gather_distributed)
