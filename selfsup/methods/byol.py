"""BYOL: Bootstrap Your Own Latent (Grill et al., NeurIPS 2020).

Online network: backbone f_θ → projector g_θ → predictor q_θ. Target network: f_ξ → g_ξ, an EMA of
the online backbone and projector (no predictor), updated **after** each optimizer step (§3.1):

    ξ ← τ·ξ + (1 − τ)·θ,   τ = 1 − (1 − τ_base)·(cos(πk/K) + 1)/2                   (§3.2)

Loss: :func:`selfsup.losses.byol`, 2 − 2·cos(q, z') symmetrised over the two views, with a
stop-gradient on the target. Heads (``byol/utils/networks.py``): Linear(d, 4096, bias)-BN-ReLU-
Linear(4096, 256, no bias) for the projector, the same shape 256 → 4096 → 256 for the predictor.

The target is a frozen copy made by :meth:`MomentumMethod.make_momentum_copy`; it runs in train
mode, so its BatchNorm uses batch statistics, as in BYOL. Evaluation uses the online backbone h
(``project`` gives the online projection z).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from selfsup.checks import PROBABILITY, at_least
from selfsup.losses.byol import byol
from selfsup.methods.base import CPU_LARS, Progress, StepOutput, register_method
from selfsup.methods.momentum import MomentumMethod
from selfsup.models.backbones import Backbone
from selfsup.models.heads import mlp


@register_method
class BYOL(MomentumMethod):
    name = "byol"
    summary = "online predictor regresses an EMA target: 2 - 2cos, no negatives"
    paper = "Grill et al., Bootstrap Your Own Latent, NeurIPS 2020"

    @dataclass
    class Args:
        latent_dim: int = 256
        hidden_dim: int = 4096
        pred_hidden_dim: int = 4096
        momentum_base: float = 0.996
        momentum_final: float = 1.0
        momentum_cosine: bool = True

    ranges = {
        "latent_dim": at_least(1),
        "hidden_dim": at_least(1),
        "pred_hidden_dim": at_least(1),
        "momentum_base": PROBABILITY,
        "momentum_final": PROBABILITY,
    }

    presets = {
        "imagenet": {
            "backbone": "resnet50",
            "stem": "imagenet",
            "sync_bn": True,  # cross-replica BN in the encoder and both MLPs (bn_config, byol_experiment.py)
            "batch_size": 4096,
            "epochs": 1000,
            "optimizer": "lars",
            "base_lr": 0.2,
            "weight_decay": 1.5e-6,
            "warmup_epochs": 10,
            "latent_dim": 256,
            "hidden_dim": 4096,
            "pred_hidden_dim": 4096,
            "momentum_base": 0.996,
            "aug.crop_scale": (0.08, 1.0),
            "aug.brightness": 0.4,
            "aug.contrast": 0.4,
            "aug.saturation": 0.2,
            "aug.hue": 0.1,
            "aug.jitter_prob": (0.8,),
            "aug.grayscale_prob": (0.2,),
            "aug.blur_prob": (1.0, 0.1),
            "aug.solarize_prob": (0.0, 0.2),
        },
        # solo-learn's CIFAR recipe (scripts/pretrain/cifar/byol.yaml + augmentations/asymmetric.yaml)
        "small": {
            "batch_size": 256,
            "epochs": 1000,
            "optimizer": "lars",
            "base_lr": 1.0,
            "weight_decay": 1e-5,
            "warmup_epochs": 10,
            "lars_eta": 0.02,
            "lars_clip": True,
            "latent_dim": 256,
            "hidden_dim": 4096,
            "pred_hidden_dim": 4096,
            "momentum_base": 0.99,
            "aug.crop_scale": (0.08, 1.0),
            "aug.brightness": 0.4,
            "aug.contrast": 0.4,
            "aug.saturation": 0.2,
            "aug.hue": 0.1,
            "aug.blur_prob": (0.0,),
            "aug.solarize_prob": (0.0, 0.2),
        },
        # LARS with solo-learn's small-scale LR/WD: in one epoch of the cpu demo the shared SGD setting left the
        # kNN monitor at its initial value (0.691 vs 0.698) while this reached 0.730 (docs/methods/byol.md)
        "cpu": {
            **CPU_LARS,
            "latent_dim": 128,
            "hidden_dim": 1024,
            "pred_hidden_dim": 1024,
            "momentum_base": 0.99,
        },
    }

    # made by make_momentum_copy
    momentum_backbone: nn.Module
    momentum_projector: nn.Module

    def __init__(self, backbone: Backbone, args: Args, gather_distributed: bool = False) -> None:
        super().__init__(backbone, args, gather_distributed)
        self.projector = mlp([backbone.out_dim, args.hidden_dim, args.latent_dim], last_bias=False)
        self.predictor = mlp([args.latent_dim, args.pred_hidden_dim, args.latent_dim], last_bias=False)
        self.make_momentum_copy("backbone")
        self.make_momentum_copy("projector")

    def training_step(self, views: Sequence[torch.Tensor], progress: Progress) -> StepOutput:
        # each view in its own forward, as byol_experiment.py does: BatchNorm statistics per view
        x1, x2 = views[0], views[1]
        z1 = self.project(self.backbone(x1))
        z2 = self.project(self.backbone(x2))
        q1, q2 = self.predictor(z1), self.predictor(z2)
        with torch.no_grad():
            t1 = self.momentum_projector(self.momentum_backbone(x1))
            t2 = self.momentum_projector(self.momentum_backbone(x2))
        loss = byol(q1, q2, t1, t2)
        return StepOutput(loss, {"tau": self.momentum_at(progress)}, z1)
