"""Run configuration: one dataclass tree, filled from presets, CLI flags and ``--set key=value``.

Resolution order (later wins):

1. the dataclass defaults below;
2. the preset's common settings (:data:`selfsup.presets.PRESET_BASES`);
3. the method's own preset (``Method.presets[preset]``);
4. explicit CLI flags (``--epochs``, ``--batch-size`` ...);
5. ``--set key=value`` overrides.

Keys use one grammar everywhere (presets, ``--set`` and ``config.json``):

* ``epochs``, ``base_lr`` ... name a field of :class:`TrainConfig`;
* ``aug.blur_prob`` names a field of :class:`AugmentConfig`;
* any other key (``temperature``, ``latent_dim`` ...) names a field of the method's ``Args``
  dataclass; ``method.temperature`` is the explicit spelling.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any

PerView = tuple[float, ...]
"""A probability given per view: ``(p,)`` applies to every view, ``(p1, p2)`` to views 1 and 2."""


class ConfigError(ValueError):
    """A configuration value or key is invalid. The message says what is valid."""


@dataclass
class AugmentConfig:
    """Parameters of the SimCLR-family augmentation recipe (SimCLR Appendix A, BYOL Table 6).

    Probabilities are :data:`PerView` tuples so that asymmetric recipes are expressible:
    BYOL and VICReg use ``blur_prob=(1.0, 0.1)`` and ``solarize_prob=(0.0, 0.2)``.
    ``None`` means "choose from the image size" (see :meth:`resolved`).
    """

    image_size: int | None = None
    crop_scale: tuple[float, float] | None = None
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_prob: PerView = (0.5,)
    jitter_prob: PerView = (0.8,)
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    grayscale_prob: PerView = (0.2,)
    blur_prob: PerView | None = None
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel_fraction: float = 0.1
    solarize_prob: PerView = (0.0,)
    solarize_threshold: float = 0.5
    num_views: int = 2
    small_crops: int = 0
    small_size: int = 96
    small_crop_scale: tuple[float, float] = (0.05, 0.14)
    large_crop_scale: tuple[float, float] | None = None
    shared_flip: bool = False

    def resolved(self, native_size: int) -> AugmentConfig:
        """Fill the ``None`` fields with defaults that fit the image size.

        For images of 64 px or less (Fashion-MNIST, CIFAR): crop scale (0.2, 1), the crop of MoCo v2 and
        SimSiam (``RandomResizedCrop(scale=(0.2, 1.))``) and of W-MSE's CIFAR recipe, which keeps more of a
        small image than Inception's (0.08, 1); and no blur, as every CIFAR recipe (SimCLR Appendix B.9). Larger
        images get the ImageNet values: crop (0.08, 1) and blur with p = 0.5 (SimCLR Appendix A). A method's
        preset overrides either, e.g. SimCLR's CIFAR recipe crops (0.08, 1), as its ImageNet one.
        """
        size = self.image_size or native_size
        small = size <= 64
        return dataclasses.replace(
            self,
            image_size=size,
            crop_scale=self.crop_scale or ((0.2, 1.0) if small else (0.08, 1.0)),
            blur_prob=self.blur_prob if self.blur_prob is not None else ((0.0,) if small else (0.5,)),
        )

    def for_view(self, view: int, name: str) -> float:
        """The value of the per-view field ``name`` for view number ``view`` (0-based)."""
        values = getattr(self, name)
        if values is None:
            raise ConfigError(f"aug.{name} is unresolved; call AugmentConfig.resolved() first")
        return float(values[view] if view < len(values) else values[-1])


@dataclass
class TrainConfig:
    """Everything a pretraining run needs. ``selfsup pretrain --help`` documents the flags."""

    method: str = "simclr"
    dataset: str = "fashion-mnist"
    preset: str = "cpu"
    data_dir: str | None = None
    out: str | None = None
    # model
    backbone: str = "resnet18"
    stem: str = "cifar"
    zero_init_residual: bool = False
    norm: str = "batch"
    sync_bn: bool = False  # BatchNorm over the global batch when several processes train (selfsup.cross_rank_bn)
    sync_bn_group: int = 0  # sync within groups of this many consecutive ranks (SwAV: 8); 0: every rank
    # timm:/tv: backbones (selfsup.models.library)
    backbone_args: tuple[str, ...] = ()  # "key=value" constructor arguments, e.g. num_heads=12,drop_path_rate=0.1
    backbone_patch_size: int = 0  # ViT patch size; 0: 4 on images of 64 px or less, else the model's own
    freeze_patch_embed: bool = False  # ViT: MoCo v3's frozen random patch projection
    pos_embed: str = "learned"  # ViT: learned, or sincos (MoCo v3's fixed 2-D sine-cosine embedding)
    # optimisation
    epochs: int = 100
    batch_size: int = 256
    optimizer: str = "lars"
    base_lr: float = 0.3
    lr_scaling: str = "linear"
    weight_decay: float = 1e-6
    momentum: float = 0.9
    lars_eta: float = 1e-3
    lars_clip: bool = False
    lars_exclude_1d: bool = True  # LARS: norms, biases (ndim <= 1) and ViT position embedding / class token
    # take neither weight decay nor the trust ratio
    weight_decay_exclude: bool = False  # SGD/Adam/AdamW: the same parameters take no weight decay
    adam_betas: tuple[float, float] = (0.9, 0.999)
    schedule: str = "warmup_cosine"
    warmup_epochs: float = 10.0
    warmup_start_ratio: float = 0.0
    final_lr_ratio: float = 0.0
    lr_milestones: tuple[float, ...] = ()
    lr_gamma: float = 0.1
    schedule_per_step: bool = True
    grad_clip: float = 0.0
    # execution
    device: str = "auto"
    precision: str = "auto"  # auto, fp32, bf16, fp16; auto is settled by measurement (selfsup.engine.autotune)
    channels_last: str = "auto"  # auto, true, false; auto is settled by measurement like precision
    compile: bool = False
    seed: int = 0
    num_workers: int = 0
    data_path: str = "auto"  # auto, batched, streaming, per-image (selfsup.data.pipeline)
    memory_budget_mb: int | None = None  # image folders up to this size are decoded once and held in RAM;
    # None: half of the available memory (selfsup.data.cache.memory_budget_bytes); 0: always stream
    cache_dir: str | None = None  # decoded image folders (default $SELFSUP_CACHE_DIR or ~/.cache/selfsup/decoded)
    channels: int = 0  # input channels of an image folder: 0 = the majority of its files, else 1 or 3
    max_bad_fraction: float = 0.01  # unreadable image files are skipped with a warning; more than this fails
    train_subset: int = 0
    max_steps: int | None = None
    # monitoring
    log_every: int = 10
    knn_every: int = 1
    knn_bank: int = 5000
    knn_queries: int = 1000
    progress: bool = True
    # checkpoints
    checkpoint_every_min: float = 10.0  # also write a checkpoint every N minutes of training (0: epoch ends only)
    keep_checkpoints: int = 1  # keep the last K checkpoints (checkpoints/step-*.pt) besides last.pt when K > 1
    # parts
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    method_args: dict[str, Any] = field(default_factory=dict)

    @property
    def lr(self) -> float:
        """The effective peak learning rate: ``base_lr`` scaled by the global batch size."""
        return scaled_lr(self.base_lr, self.batch_size, self.lr_scaling)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        data = dict(data)
        aug = AugmentConfig(**_tuples(AugmentConfig, data.pop("augment", {}) or {}))
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown config keys {sorted(unknown)}")
        cfg = cls(augment=aug, **_tuples(cls, data))
        cfg.channels_last = switch(cfg.channels_last, "channels_last")  # config.json of older runs: a bool
        return cfg


LR_SCALINGS = ("linear", "sqrt", "none")
SWITCHES = ("auto", "true", "false")
"""Values of a setting that is on, off, or settled at run time (``channels_last``)."""
RUNTIME_SETTINGS = ("precision", "channels_last")
"""Settings whose ``auto`` is replaced by the measured choice when a run starts (:mod:`selfsup.engine.autotune`):
``config.json`` holds the choice, ``--print-config`` shows ``auto``."""


def switch(value: Any, key: str) -> str:
    """``auto``, ``true`` or ``false`` from a bool or any usual spelling (yes/no, on/off, 1/0)."""
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return "true"
    if text in ("0", "false", "no", "off"):
        return "false"
    if text == "auto":
        return "auto"
    raise ConfigError(f"{key} expects auto, true or false, got {value!r}")


def scaled_lr(base_lr: float, batch_size: int, rule: str) -> float:
    """Learning-rate scaling with the global batch (SimCLR §B.1, Goyal et al. 2017).

    ``linear``: base × B/256; ``sqrt``: base × √B (SimCLR's alternative); ``none``: base as is.
    """
    if rule == "linear":
        return base_lr * batch_size / 256
    if rule == "sqrt":
        return base_lr * batch_size**0.5
    if rule == "none":
        return base_lr
    raise ConfigError(f"unknown lr_scaling {rule!r}. Valid: {', '.join(LR_SCALINGS)}")


def _tuples(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """JSON turns tuples into lists; turn them back for the fields typed as tuples."""
    hints = typing.get_type_hints(cls)
    out = {}
    for key, value in data.items():
        if isinstance(value, list) and "tuple" in str(hints.get(key, "")):
            value = tuple(value)
        out[key] = value
    return out


# ----------------------------------------------------------------------------- overrides


def parse_assignment(text: str) -> tuple[str, str]:
    """Split ``key=value`` from the command line."""
    if "=" not in text:
        raise ConfigError(f"--set expects key=value, got {text!r}")
    key, value = text.split("=", 1)
    return key.strip(), value.strip()


def coerce(value: Any, annotation: Any, key: str) -> Any:
    """Convert ``value`` (often a string from the CLI) to the type of a dataclass field."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (types.UnionType, typing.Union):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        non_none = [a for a in args if a is not type(None)]
        return coerce(value, non_none[0], key)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        text = str(value).lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{key} expects true or false, got {value!r}")
    if annotation in (int, float):
        try:
            number = float(value) if isinstance(value, str) else value
            if annotation is int:
                if float(number) != int(float(number)):
                    raise ValueError
                return int(float(number))
            return float(number)
        except (TypeError, ValueError):
            raise ConfigError(
                f"{key} expects a{'n integer' if annotation is int else ' number'}, got {value!r}"
            ) from None
    if origin is tuple:
        items = value
        if isinstance(value, str):
            text = value.strip().strip("()[]")
            items = [part for part in text.split(",") if part.strip()] if text else []
        if not isinstance(items, (list, tuple)):
            items = (items,)
        item_type = args[0] if args else float
        return tuple(coerce(item, item_type, key) for item in items)
    if origin is dict or annotation is dict:
        if isinstance(value, str):
            value = ast.literal_eval(value)
        return dict(value)
    if annotation is str:
        return str(value)
    if annotation is typing.Any:
        if isinstance(value, str):
            try:
                return ast.literal_eval(value)
            except (ValueError, SyntaxError):
                return value
        return value
    return value


def field_types(cls: type) -> dict[str, Any]:
    return {f.name: typing.get_type_hints(cls)[f.name] for f in dataclasses.fields(cls)}


TOP_LEVEL_SKIP = {"augment", "method_args"}


def apply_overrides(cfg: TrainConfig, overrides: dict[str, Any], method_args_cls: type | None) -> None:
    """Apply ``{key: value}`` in the key grammar described in the module docstring, in place."""
    top = {k: v for k, v in field_types(TrainConfig).items() if k not in TOP_LEVEL_SKIP}
    aug = field_types(AugmentConfig)
    method = field_types(method_args_cls) if method_args_cls is not None else {}
    for raw_key, value in overrides.items():
        key = raw_key.replace("-", "_")
        if key.startswith(("aug.", "augment.")):
            name = key.split(".", 1)[1]
            if name not in aug:
                raise ConfigError(f"unknown augmentation key {raw_key!r}. Valid: " + ", ".join(f"aug.{k}" for k in aug))
            setattr(cfg.augment, name, coerce(value, aug[name], raw_key))
        elif key.startswith("method."):
            name = key.split(".", 1)[1]
            if name not in method:
                raise ConfigError(_unknown_key_message(raw_key, top, aug, method, cfg.method))
            cfg.method_args[name] = coerce(value, method[name], raw_key)
        elif key in top:
            setattr(cfg, key, coerce(value, top[key], raw_key))
        elif key in method:
            cfg.method_args[key] = coerce(value, method[key], raw_key)
        else:
            raise ConfigError(_unknown_key_message(raw_key, top, aug, method, cfg.method))


def _unknown_key_message(key: str, top: dict, aug: dict, method: dict, method_name: str) -> str:
    return (
        f"unknown setting {key!r}.\n"
        f"  run settings: {', '.join(top)}\n"
        f"  augmentation: {', '.join('aug.' + k for k in aug)}\n"
        f"  {method_name} settings: {', '.join(method) or '(none)'}"
    )


def config_differences(saved: TrainConfig, wanted: TrainConfig, ignore: tuple[str, ...] = ()) -> list[str]:
    """The keys (run keys, ``aug.x``, ``method.x``) whose values differ between two configs, leaving out the
    keys in ``ignore`` and the runtime settings that ``saved`` settled from an ``auto`` that ``wanted`` asks
    for (:data:`RUNTIME_SETTINGS`). Tuples and lists compare equal, as they do once in ``config.json``."""
    a, b = saved.to_dict(), wanted.to_dict()
    diffs = []
    for key in sorted(set(a) | set(b)):
        if key in ignore or (key in RUNTIME_SETTINGS and b.get(key) == "auto"):
            continue
        if key in ("augment", "method_args"):
            prefix = "aug." if key == "augment" else "method."
            sub_a, sub_b = a.get(key) or {}, b.get(key) or {}
            diffs += [prefix + k for k in sorted(set(sub_a) | set(sub_b)) if _json(sub_a.get(k)) != _json(sub_b.get(k))]
        elif _json(a.get(key)) != _json(b.get(key)):
            diffs.append(key)
    return diffs


def _json(value: Any) -> Any:
    return json.loads(json.dumps(value))
