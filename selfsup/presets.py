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

``selfsup methods [--preset P] [--json]`` prints them as one recipe table.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from selfsup.config import ConfigError, TrainConfig, apply_overrides, switch
from selfsup.data.datasets import resolve_augment
from selfsup.methods import Method, method_names, split_variant
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


def check_preset(preset: str) -> None:
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}. Valid presets: {', '.join(PRESETS)}")


def preset_overrides(method: type[Method], preset: str, variant: str | None = None) -> dict[str, Any]:
    """The merged preset dict (base, then method, then variant) for ``method`` at ``preset``."""
    check_preset(preset)
    extra = method.variants[variant].get(preset, {}) if variant else {}
    return {**PRESET_BASES[preset], **method.presets.get(preset, {}), **extra}


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
    cfg = TrainConfig(method=method_cls.name, preset=preset)
    apply_overrides(cfg, preset_overrides(method_cls, preset, variant), method_cls.Args)
    apply_overrides(cfg, {k: v for k, v in (flags or {}).items() if v is not None}, method_cls.Args)
    apply_overrides(cfg, sets or {}, method_cls.Args)
    cfg.method_args = dataclasses.asdict(method_cls.make_args(cfg.method_args))
    cfg.channels_last = switch(cfg.channels_last, "channels_last")
    validate(cfg)
    resolve_augment(cfg)
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


def recipe_row(method: str, preset: str) -> dict[str, Any]:
    """One row of the recipe table (the keys of ``selfsup methods --json``)."""
    cfg = resolve_config(method, preset)
    method_cls, _ = split_variant(method)
    args = method_cls.make_args(cfg.method_args)
    return {
        "method": method,
        "latent_dim": method_cls.latent_dim(args),
        "batch_size": cfg.batch_size,
        "optimizer": OPTIMIZER_NAMES.get(cfg.optimizer, cfg.optimizer),
        "lr": round(cfg.lr, 10),
        "weight_decay": cfg.weight_decay,
        "schedule": schedule_text(cfg),
        "epochs": cfg.epochs,
    }


def recipe_table(preset: str) -> list[dict[str, Any]]:
    check_preset(preset)
    return [
        recipe_row(name, preset)
        for name in method_names()
        if not (split_variant(name)[0].variants and split_variant(name)[1] is None)
    ]
