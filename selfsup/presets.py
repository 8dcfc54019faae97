"""Presets: the single source of truth for every recipe.

A run's config is the :class:`~selfsup.config.TrainConfig` defaults, overlaid with
:data:`PRESET_BASES` ``[preset]`` (what every method shares at that scale), then with the method's
own ``Method.presets[preset]`` (its paper recipe), then with CLI flags and ``--set``.

* ``imagenet``: the papers' ImageNet recipes (ResNet-50, ImageNet stem). For SimCLR, TiCo and
  VICReg these are exactly the recipe table of the reference this project started from (README).
* ``small``: 28-96 px datasets (CIFAR, STL-10, Fashion-MNIST), from the CIFAR recipes in the
  reference (solo-learn, the official CIFAR commands). ResNet-18 with the CIFAR stem.
* ``cpu``: sized so that the demo (pretrain, then evaluate) finishes in about 10 minutes on
  2 CPU cores; see ``docs/cpu-preset.md`` for the measurements behind it.

**Vision Transformers.** When the backbone is a ViT (``timm:vit_*``, ``timm:deit_*``, ``tv:vit_*``:
:func:`selfsup.models.library.is_transformer`), :data:`VIT_BASES` ``[preset]`` and the method's
``presets["<preset>+vit"]`` (and its variant's) come on top of the ResNet recipe, before the CLI flags: ViTs
train with AdamW, not LARS or SGD, and with no weight decay on norms, biases, the position embedding and the
class token. MoCo v3's ``imagenet+vit`` is its paper's ViT-S/ViT-B recipe.

``selfsup methods [--preset P] [--json]`` prints them as one recipe table.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from selfsup.config import ConfigError, TrainConfig, apply_overrides, switch
from selfsup.data.datasets import resolve_augment
from selfsup.methods import Method, method_names, split_variant
from selfsup.models.library import is_transformer
from selfsup.validate import validate

PRESETS = ("imagenet", "small", "cpu")

PRESET_BASES: dict[str, dict[str, Any]] = {
    "imagenet": {
        "backbone": "resnet50",
        "stem": "imagenet",
        "optimizer": "lars",
        "warmup_epochs": 10,
        "schedule": "warmup_cosine",
        "knn_every": 10,
    },
    "small": {
        "backbone": "resnet18",
        "stem": "cifar",
        "optimizer": "lars",
        "warmup_epochs": 10,
        "schedule": "warmup_cosine",
        "batch_size": 256,
        "knn_every": 10,
    },
    "cpu": {
        # Measured in docs/cpu-preset.md: the fastest setting found that beats the random-init encoder
        # and raw pixels on Fashion-MNIST kNN within the demo's 10-minute training budget on 2 cores.
        "backbone": "resnet10",
        "stem": "imagenet",
        "batch_size": 128,
        "epochs": 8,
        "optimizer": "sgd",
        "base_lr": 0.7,
        "weight_decay": 5e-4,
        "warmup_epochs": 0.1,
        "schedule": "warmup_cosine",
        "knn_every": 1,
        "aug.image_size": 32,
        "aug.crop_scale": (0.5, 1.0),
        "aug.blur_prob": (0.0,),
        "aug.solarize_prob": (0.0,),
    },
}


VIT_BASES: dict[str, dict[str, Any]] = {
    # MoCo v3's ViT optimiser (CONFIG.md: AdamW, lr 1.5e-4 x B/256, wd 0.1, 40 warmup epochs), the one
    # self-supervised ViT recipe among the twelve methods' official codes; norms, biases, position embedding
    # and class token without weight decay, as timm's and DeiT's recipes
    "imagenet": {
        "optimizer": "adamw",
        "base_lr": 1.5e-4,
        "weight_decay": 0.1,
        "weight_decay_exclude": True,
        "warmup_epochs": 40,
    },
    # solo-learn's one CIFAR ViT config (scripts/pretrain/cifar/mae.yaml: vit_small, patch 4 at 32 px, AdamW
    # lr 2e-4 x B/256, betas (0.9, 0.95), wd 0.05, 10 warmup epochs); patch 4 is automatic at <= 64 px
    "small": {
        "optimizer": "adamw",
        "base_lr": 2e-4,
        "adam_betas": (0.9, 0.95),
        "weight_decay": 0.05,
        "weight_decay_exclude": True,
        "warmup_epochs": 10,
    },
    # the small recipe on a short CPU schedule: 2 epochs (a ViT-Tiny step at 32 px costs about 10 of the demo's
    # ResNet-10 steps on 2 cores), so a higher LR and half an epoch of warmup
    # (docs/results/vit-tiny-fashion-mnist.md)
    "cpu": {
        "epochs": 2,
        "optimizer": "adamw",
        "base_lr": 1e-3,
        "adam_betas": (0.9, 0.95),
        "weight_decay": 0.05,
        "weight_decay_exclude": True,
        "warmup_epochs": 0.5,
    },
}
"""What every method shares when its backbone is a Vision Transformer (see the module docstring)."""


def check_preset(preset: str) -> None:
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}. Valid presets: {', '.join(PRESETS)}")


def preset_overrides(
    method: type[Method], preset: str, variant: str | None = None, vit: bool = False
) -> dict[str, Any]:
    """The merged preset dict (base, then method, then variant; with ``vit``, then the ViT base and the
    method's and variant's ``<preset>+vit``) for ``method`` at ``preset``."""
    check_preset(preset)
    variant_presets = method.variants[variant] if variant else {}
    merged = {**PRESET_BASES[preset], **method.presets.get(preset, {}), **variant_presets.get(preset, {})}
    if vit:
        key = f"{preset}+vit"
        merged.update({**VIT_BASES[preset], **method.presets.get(key, {}), **variant_presets.get(key, {})})
    return merged


def resolve_config(
    method: str, preset: str = "cpu", flags: dict[str, Any] | None = None, sets: dict[str, Any] | None = None
) -> TrainConfig:
    """Build the full :class:`TrainConfig` for ``method`` at ``preset``.

    ``flags`` are explicit CLI flags (``epochs``, ``batch_size``, ``dataset`` ...) and ``sets``
    the ``--set key=value`` pairs; both use the key grammar of :mod:`selfsup.config`. The augmentation
    settings that depend on the image size are filled in from the dataset (``resolve_augment``), so the
    result is the whole recipe, as ``config.json`` and ``selfsup pretrain --print-config`` show it.
    """
    method_cls, variant = split_variant(method)
    cfg = _overlay(method_cls, preset, variant, False, flags, sets)
    if is_transformer(cfg.backbone):  # the backbone is known once flags and --set apply: redo with the ViT recipe
        cfg = _overlay(method_cls, preset, variant, True, flags, sets)
    cfg.method_args = dataclasses.asdict(method_cls.make_args(cfg.method_args))
    cfg.channels_last = switch(cfg.channels_last, "channels_last")
    validate(cfg)
    resolve_augment(cfg)
    return cfg


def _overlay(
    method_cls: type[Method],
    preset: str,
    variant: str | None,
    vit: bool,
    flags: dict[str, Any] | None,
    sets: dict[str, Any] | None,
) -> TrainConfig:
    cfg = TrainConfig(method=method_cls.name, preset=preset)
    apply_overrides(cfg, preset_overrides(method_cls, preset, variant, vit), method_cls.Args)
    apply_overrides(cfg, {k: v for k, v in (flags or {}).items() if v is not None}, method_cls.Args)
    apply_overrides(cfg, sets or {}, method_cls.Args)
    return cfg


OPTIMIZER_NAMES = {"lars": "LARS", "sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}


def schedule_text(cfg: TrainConfig) -> str:
    """The schedule column of the recipe table, e.g. ``linear warmup, cosine decay``."""
    if cfg.schedule == "warmup_cosine":
        text = "linear warmup, cosine decay" if cfg.warmup_epochs > 0 else "cosine decay"
        return text + (f" to {cfg.final_lr_ratio:g}x" if cfg.final_lr_ratio else "")
    if cfg.schedule == "step":
        steps = ", ".join(f"{m:g}" for m in cfg.lr_milestones)
        return f"step x{cfg.lr_gamma:g} at epochs {steps}"
    return "constant"


def recipe_row(method: str, preset: str, backbone: str | None = None) -> dict[str, Any]:
    """One row of the recipe table (the keys of ``selfsup methods --json``); with ``backbone``, the recipe on
    that backbone, labelled ``method + backbone`` (the ViT rows)."""
    cfg = resolve_config(method, preset, flags={"backbone": backbone} if backbone else None)
    method_cls, _ = split_variant(method)
    args = method_cls.make_args(cfg.method_args)
    return {
        "method": f"{method} + {backbone}" if backbone else method,
        "latent_dim": method_cls.latent_dim(args),
        "batch_size": cfg.batch_size,
        "optimizer": OPTIMIZER_NAMES.get(cfg.optimizer, cfg.optimizer),
        "lr": round(cfg.lr, 10),
        "weight_decay": cfg.weight_decay,
        "schedule": schedule_text(cfg),
        "epochs": cfg.epochs,
    }


VIT_EXAMPLES = {
    "imagenet": "timm:vit_small_patch16_224",
    "small": "timm:vit_tiny_patch16_224",
    "cpu": "timm:vit_tiny_patch16_224",
}
"""The ViT of the recipe table's ViT rows at each preset (ViT-S/16 as in MoCo v3's paper; ViT-Tiny for 32 px)."""


def has_vit_recipe(method: str, preset: str) -> bool:
    """Whether ``method`` (a CLI name) has a ViT recipe of its own at ``preset`` (``<preset>+vit``)."""
    method_cls, variant = split_variant(method)
    key = f"{preset}+vit"
    return key in method_cls.presets or (variant is not None and key in method_cls.variants[variant])


def recipe_table(preset: str) -> list[dict[str, Any]]:
    """Every method's recipe at ``preset``; a method with a ViT recipe of its own (MoCo v3) gets a second row on
    :data:`VIT_EXAMPLES` ``[preset]``."""
    check_preset(preset)
    rows = []
    for name in method_names():
        if split_variant(name)[0].variants and split_variant(name)[1] is None:
            continue
        rows.append(recipe_row(name, preset))
        if has_vit_recipe(name, preset):
            rows.append(recipe_row(name, preset, VIT_EXAMPLES[preset]))
    return rows
