"""Method names and construction: ``--method`` names (with variants, ``moco-v3``), and building a registered
method from a run's config, the one constructor every part of selfsup uses."""

from __future__ import annotations

from selfsup.config import TrainConfig
from selfsup.methods.base import METHODS, Method
from selfsup.models import LibraryOptions, build_backbone
from selfsup.registry import UnknownNameError


def build_method(cfg: TrainConfig, channels: int, gather_distributed: bool = False) -> Method:
    """The method of ``cfg`` on a fresh backbone with ``channels`` input channels (seed first, with
    :func:`selfsup.rng.seed_everything`, for a reproducible initialisation)."""
    method_cls = METHODS.get(cfg.method)
    args = method_cls.make_args(cfg.method_args)
    backbone = build_backbone(cfg.backbone, cfg.stem, channels, cfg.zero_init_residual, cfg.norm, library_options(cfg))
    return method_cls(backbone, args, gather_distributed=gather_distributed)


def library_options(cfg: TrainConfig) -> LibraryOptions:
    """What a ``timm:``/``tv:`` backbone takes from the run: the image size and the ViT options."""
    return LibraryOptions(
        image_size=int(cfg.augment.image_size or 224),
        patch_size=cfg.backbone_patch_size,
        args=tuple(cfg.backbone_args),
        freeze_patch_embed=cfg.freeze_patch_embed,
        pos_embed=cfg.pos_embed,
    )


TABLE_ORDER = (
    "cpc",
    "dim",
    "amdim",
    "moco",
    "simclr",
    "swav",
    "byol",
    "simsiam",
    "wmse",
    "tico",
    "vicreg",
    "barlowtwins",
)
"""The order of the methods in the recipe table and the reports: roughly by publication, mutual-information
methods first, then contrastive, clustering, distillation and redundancy-reduction methods."""


def method_names(include_unlisted: bool = False) -> list[str]:
    """Every name ``--method`` accepts: registered methods and their ``name-variant`` forms, in table order.
    Methods that are not ``listed`` (the supervised baseline) only with ``include_unlisted``."""
    names = []
    for name in sorted(METHODS.names(), key=lambda n: (TABLE_ORDER.index(n) if n in TABLE_ORDER else 99, n)):
        method = METHODS.get(name)
        if method.listed or include_unlisted:
            names += [name] + [f"{name}-{v}" for v in method.variants]
    return names


def split_variant(method: str) -> tuple[type[Method], str | None]:
    """``"moco-v3"`` -> (MoCo, "v3"); ``"simclr"`` -> (SimCLR, None). Unknown names list the valid ones."""
    if method in METHODS:
        return METHODS.get(method), None
    base, _, variant = method.rpartition("-")
    if base in METHODS and variant in METHODS.get(base).variants:
        return METHODS.get(base), variant
    raise UnknownNameError(f"unknown method {method!r}. Valid methods: {', '.join(method_names())}.")
