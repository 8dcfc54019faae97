"""Every setting of a run checked before anything is written: ranges, choices, and the constraints between
settings. :func:`validate` is called by :func:`selfsup.presets.resolve_config` (so by ``pretrain``,
``compare`` and ``--print-config``) and again when ``--resume`` changes a setting.

The ranges of the run and augmentation settings are declared here, the methods' in their ``ranges``
(:meth:`selfsup.methods.Method.check_args`). Settings that depend on the machine (fp16 where the device
turns out to be a CPU) are checked when the run starts (:class:`selfsup.engine.trainer.Trainer`), still
before anything is written.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from selfsup.checks import (
    FRACTION,
    NON_NEGATIVE,
    POSITIVE,
    PROBABILITY,
    Range,
    at_least,
    check_finite,
    check_interval,
    one_of,
)
from selfsup.config import LR_SCALINGS, SWITCHES, ConfigError, TrainConfig
from selfsup.data import DATA_PATHS, DATASETS
from selfsup.methods import Method, split_variant
from selfsup.models import BACKBONES, STEMS, is_library_name
from selfsup.models.backbones import NORMS
from selfsup.models.library import POS_EMBEDS, BackboneNameError, check_name, is_transformer, parse_args
from selfsup.optim import OPTIMIZERS, SCHEDULES
from selfsup.runtime import DEVICES, PRECISIONS

BELOW_ONE = Range(0, 1, high_open=True)

RUN_RANGES: dict[str, Range] = {
    "stem": one_of(*STEMS),
    "norm": one_of(*NORMS),
    "epochs": at_least(1),
    "batch_size": at_least(2),
    "optimizer": one_of(*OPTIMIZERS),
    "base_lr": POSITIVE,
    "lr_scaling": one_of(*LR_SCALINGS),
    "weight_decay": NON_NEGATIVE,
    "momentum": BELOW_ONE,
    "lars_eta": POSITIVE,
    "adam_betas": BELOW_ONE,
    "schedule": one_of(*SCHEDULES),
    "warmup_epochs": NON_NEGATIVE,
    "warmup_start_ratio": PROBABILITY,
    "final_lr_ratio": PROBABILITY,
    "lr_milestones": POSITIVE,
    "lr_gamma": POSITIVE,
    "grad_clip": NON_NEGATIVE,
    "device": one_of(*DEVICES),
    "precision": one_of(*PRECISIONS),
    "channels_last": one_of(*SWITCHES),
    "seed": NON_NEGATIVE,
    "num_workers": NON_NEGATIVE,
    "data_path": one_of(*DATA_PATHS),
    "memory_budget_mb": NON_NEGATIVE,
    "channels": one_of(0, 1, 3),
    "sync_bn_group": NON_NEGATIVE,
    "backbone_patch_size": NON_NEGATIVE,
    "pos_embed": one_of(*POS_EMBEDS),
    "max_bad_fraction": BELOW_ONE,
    "train_subset": NON_NEGATIVE,
    "max_steps": at_least(1),
    "log_every": NON_NEGATIVE,
    "knn_every": NON_NEGATIVE,
    "knn_bank": at_least(1),
    "knn_queries": at_least(1),
    "checkpoint_every_min": NON_NEGATIVE,
    "keep_checkpoints": at_least(1),
}

AUGMENT_RANGES: dict[str, Range] = {
    "image_size": at_least(1),
    "flip_prob": PROBABILITY,
    "jitter_prob": PROBABILITY,
    "brightness": NON_NEGATIVE,
    "contrast": NON_NEGATIVE,
    "saturation": NON_NEGATIVE,
    "hue": Range(0, 0.5),
    "grayscale_prob": PROBABILITY,
    "blur_prob": PROBABILITY,
    "blur_kernel_fraction": POSITIVE,
    "solarize_prob": PROBABILITY,
    "solarize_threshold": PROBABILITY,
    "num_views": at_least(1),
    "small_crops": NON_NEGATIVE,
    "small_size": at_least(1),
}
AUGMENT_INTERVALS: dict[str, Range] = {
    "crop_scale": FRACTION,
    "crop_ratio": POSITIVE,
    "blur_sigma": POSITIVE,
    "small_crop_scale": FRACTION,
    "large_crop_scale": FRACTION,
}


def _check_fields(obj: Any, prefix: str, ranges: dict[str, Range], intervals: dict[str, Range]) -> None:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = prefix + f.name
        check_finite(key, value)
        if f.name in ranges:
            ranges[f.name].check(key, value)
        if f.name in intervals:
            check_interval(key, value, intervals[f.name])


def validate(cfg: TrainConfig) -> None:
    """Raise :class:`ConfigError` (saying what is valid) for any setting of ``cfg`` that cannot work."""
    if cfg.dataset not in DATASETS:
        raise ConfigError(DATASETS.unknown_message(cfg.dataset))
    if cfg.batch_size < 2:
        raise ConfigError(
            f"batch_size={cfg.batch_size} is impossible: self-supervised losses compare the images of a batch "
            "with each other (negatives, variance, covariance), so a batch needs at least 2 images"
        )
    _check_fields(cfg, "", RUN_RANGES, {})
    _check_fields(cfg.augment, "aug.", AUGMENT_RANGES, AUGMENT_INTERVALS)
    if cfg.warmup_epochs > cfg.epochs:
        raise ConfigError(f"warmup_epochs={cfg.warmup_epochs:g} is longer than the run (epochs={cfg.epochs})")
    late = [m for m in cfg.lr_milestones if m > cfg.epochs]
    if late:
        raise ConfigError(f"lr_milestones {late} lie after the last epoch (epochs={cfg.epochs})")
    if 0 < cfg.train_subset < cfg.batch_size:
        raise ConfigError(f"train_subset={cfg.train_subset} is smaller than one batch of {cfg.batch_size}")
    if cfg.precision == "fp16" and cfg.device == "cpu":
        raise ConfigError(FP16_ON_CPU)
    method_cls, _ = split_variant(cfg.method)
    check_backbone(method_cls, cfg)
    args = method_cls.make_args(cfg.method_args)
    method_cls.check_args(args)
    method_cls.check_config(args, cfg)
    check_views(method_cls, args, cfg)


def check_backbone(method_cls: type[Method], cfg: TrainConfig) -> None:
    """The backbone exists (with the library's closest names if not), its options apply to it, and the method
    can use it (CPC, DIM and AMDIM read spatial maps that only selfsup's encoders and ResNets give)."""
    vit_options = cfg.freeze_patch_embed or cfg.pos_embed != "learned"
    if not is_library_name(cfg.backbone):
        if cfg.backbone not in BACKBONES:
            raise ConfigError(BACKBONES.unknown_message(cfg.backbone) + " Or any timm:NAME or tv:NAME model.")
        if vit_options or cfg.backbone_args or cfg.backbone_patch_size:
            raise ConfigError(
                "backbone_args, backbone_patch_size, freeze_patch_embed and pos_embed apply to timm:/tv: backbones, "
                f"not to {cfg.backbone!r}"
            )
        return
    try:
        check_name(cfg.backbone)
        parse_args(cfg.backbone_args)
    except (BackboneNameError, ValueError) as err:
        raise ConfigError(str(err)) from None
    if vit_options and not is_transformer(cfg.backbone):
        raise ConfigError(f"freeze_patch_embed and pos_embed=sincos apply to Vision Transformers, not {cfg.backbone}")
    if method_cls.needs_stage_maps:
        raise ConfigError(f"{cfg.method} cannot train {cfg.backbone}: {method_cls.needs_stage_maps}")


def check_views(method_cls: type[Method], args: Any, cfg: TrainConfig) -> None:
    """The augmentation must give the method the large views its loss compares."""
    needed = method_cls.num_views(args)
    if cfg.augment.num_views < needed:
        raise ConfigError(
            f"{cfg.method} compares {needed} views of every image, and aug.num_views={cfg.augment.num_views} "
            f"gives {cfg.augment.num_views}: set aug.num_views={needed}"
        )


FP16_ON_CPU = (
    "precision=fp16 is not supported on the CPU: PyTorch emulates it there (about 100x slower than float32) "
    "and float16 needs a gradient scaler; use precision=bf16 (native on CPUs with AVX512-BF16 or AMX) or fp32"
)
