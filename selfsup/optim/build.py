"""Build the optimizer from a method's parameter groups and the run config.

Each group a method declares is split in two when the optimizer is LARS and ``lars_exclude_1d`` is on:
tensors with ndim ≥ 2 (conv and linear weights) get weight decay and the trust ratio; the *exempt*
parameters get neither: every tensor with ndim ≤ 1 (biases, BN/LayerNorm γ/β) and the ``exempt`` ones the
method names (:meth:`selfsup.methods.Method.no_weight_decay_parameters`: a ViT's position embedding and class
token, 3-D tensors that the ndim rule misses; timm's ``no_weight_decay()``). This is the exclusion of SimCLR,
BYOL, MoCo v3, VICReg and Barlow Twins (``exclude_bias_and_norm``). SwAV's LARC adapts every parameter: its
preset sets ``lars_exclude_1d=false``. For SGD, Adam and AdamW, ``weight_decay_exclude`` gives the exempt
parameters no weight decay (the usual ViT recipe); off by default, as the official ResNet recipes decay
every parameter.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from selfsup.config import TrainConfig
from selfsup.optim.lars import LARS

OPTIMIZERS = ("lars", "sgd", "adamw", "adam")


def _split_groups(
    groups: list[dict[str, Any]], cfg: TrainConfig, exempt: Iterable[torch.Tensor] = ()
) -> list[dict[str, Any]]:
    lars = cfg.optimizer == "lars"
    split_1d = cfg.lars_exclude_1d if lars else cfg.weight_decay_exclude
    exempt_ids = {id(p) for p in exempt}
    out = []
    for group in groups:
        params = [p for p in group["params"] if p.requires_grad]
        meta = {
            "lr_mult": float(group.get("lr_mult", 1.0)),
            "fixed_lr": bool(group.get("fixed_lr", False)),
            "weight_decay": float(group.get("weight_decay", cfg.weight_decay)),
        }
        if split_1d:
            matrices = [p for p in params if p.ndim > 1 and id(p) not in exempt_ids]
            vectors = [p for p in params if p.ndim <= 1 or id(p) in exempt_ids]
            if matrices:
                out.append({"params": matrices, **meta, "lars_exclude": False})
            if vectors:
                lr_mult_1d = float(group.get("lr_mult_1d", meta["lr_mult"])) if lars else meta["lr_mult"]
                out.append(
                    {"params": vectors, **meta, "lr_mult": lr_mult_1d, "weight_decay": 0.0, "lars_exclude": lars}
                )
        elif params:
            out.append({"params": params, **meta, "lars_exclude": False})
    return out


def build_optimizer(
    groups: list[dict[str, Any]], cfg: TrainConfig, exempt: Iterable[torch.Tensor] = ()
) -> torch.optim.Optimizer:
    """The optimizer named by ``cfg.optimizer`` over ``groups``; ``exempt`` parameters take no weight decay or
    adaptation like the norms and biases (see the module docstring)."""
    param_groups = _split_groups(groups, cfg, exempt)
    lr = cfg.lr
    for group in param_groups:
        group["lr"] = lr * group["lr_mult"]
    name = cfg.optimizer.lower()
    if name == "lars":
        return LARS(
            param_groups,
            lr=lr,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
            eta=cfg.lars_eta,
            clip=cfg.lars_clip,
        )
    if name == "sgd":
        return torch.optim.SGD(param_groups, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(param_groups, lr=lr, betas=cfg.adam_betas, weight_decay=cfg.weight_decay)
    if name == "adam":
        return torch.optim.Adam(param_groups, lr=lr, betas=cfg.adam_betas, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}. Valid: {', '.join(OPTIMIZERS)}")


def apply_lr(optimizer: torch.optim.Optimizer, peak_lr: float, factor: float) -> None:
    """Set every group's LR to peak × lr_mult × factor (``fixed_lr`` groups ignore the factor)."""
    for group in optimizer.param_groups:
        scale = 1.0 if group.get("fixed_lr") else factor
        group["lr"] = peak_lr * group.get("lr_mult", 1.0) * scale
