"""TiCo (Zhu, Moraes, Karakulak, Sobol, Canziani, LeCun 2022, arXiv 2206.10698).

Backbone + BYOL-style projector Linear(d, 4096)-BN-ReLU-Linear(4096, 256); loss
:func:`selfsup.losses.tico` with the running second-moment matrix C kept as the buffer
``self.C``, so checkpoints carry it and DDP broadcasts it.

**EMA target branch (``ema_target``), default off.** The paper's pseudo-code (as quoted in the
review of lightly's implementation) uses the same encoder for both views; lightly's ImageNet
benchmark and sayannag/TiCo-pytorch compute the second view with a BYOL-style momentum encoder
instead. We default to the paper's shared encoder, which is cheaper (one network, no copy) and
what the loss is derived for; ``--set ema_target=true`` gives the re-implementations' variant, with
τ rising from ``momentum_base`` to 1 on BYOL's cosine schedule.

**Which branch updates C (``covariance_branch``), default ``same``.** Both reference codes
(sayannag/TiCo-pytorch, lightly) update C with the first branch z' (the online branch when ``ema_target`` is
set), so that at β = 0 the covariance term is the same-view pairwise form (ρ/N²) Σ_ij (z'_i·z'_j)².
``--set covariance_branch=other`` updates C with the second view's embedding z'' instead, which at β = 0 gives
the cross-view pairwise form (ρ/N²) Σ_ij (z'_i·z''_j)² (:func:`selfsup.losses.tico`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from selfsup.checks import NON_NEGATIVE, PROBABILITY, Range, at_least, one_of
from selfsup.losses.tico import COVARIANCE_BRANCHES, tico
from selfsup.methods.base import CPU_LARS, Progress, StepOutput, register_method
from selfsup.methods.momentum import MomentumMethod
from selfsup.models.backbones import Backbone
from selfsup.models.heads import mlp


@register_method
class TiCo(MomentumMethod):
    name = "tico"
    summary = "invariance + covariance contrast against a running second moment C"
    paper = "Zhu et al., TiCo: Transformation Invariance and Covariance Contrast, arXiv 2206.10698, 2022"

    @dataclass
    class Args:
        latent_dim: int = 256
        hidden_dim: int = 4096
        beta: float = 0.9
        rho: float = 8.0
        ema_target: bool = False
        momentum_base: float = 0.99
        covariance_branch: str = "same"

    ranges = {
        "latent_dim": at_least(1),
        "hidden_dim": at_least(1),
        "beta": Range(0, 1, high_open=True),
        "rho": NON_NEGATIVE,
        "momentum_base": PROBABILITY,
        "covariance_branch": one_of(*COVARIANCE_BRANCHES),
    }

    presets = {
        "imagenet": {
            "backbone": "resnet50",
            "stem": "imagenet",
            "batch_size": 4096,
            "epochs": 1000,
            "optimizer": "lars",
            "base_lr": 0.2,
            "weight_decay": 1.5e-6,
            "warmup_epochs": 10,
            "latent_dim": 256,
            "hidden_dim": 4096,
            "beta": 0.9,
            "rho": 8.0,
            "aug.crop_scale": (0.08, 1.0),
            "aug.blur_prob": (1.0, 0.1),
            "aug.solarize_prob": (0.0, 0.2),
        },
        "small": {
            "batch_size": 256,
            "epochs": 1000,
            "optimizer": "lars",
            "base_lr": 0.3,
            "weight_decay": 1e-5,
            "warmup_epochs": 10,
            "latent_dim": 256,
            "hidden_dim": 4096,
            "aug.solarize_prob": (0.0, 0.2),
        },
        # LARS as in the paper: with the shared cpu base's SGD the embeddings lost rank (effective rank 7 of 128)
        # and h fell below the random-init encoder (docs/cpu-preset.md, "Loss-scale-sensitive methods").
        "cpu": {
            **CPU_LARS,
            "latent_dim": 128,
            "hidden_dim": 1024,
        },
    }

    C: torch.Tensor  # registered buffer: the running second moment
    # made by make_momentum_copy when ema_target is set
    momentum_backbone: nn.Module
    momentum_projector: nn.Module

    def __init__(self, backbone: Backbone, args: Args, gather_distributed: bool = False) -> None:
        super().__init__(backbone, args, gather_distributed)
        self.projector = mlp([backbone.out_dim, args.hidden_dim, args.latent_dim])
        self.register_buffer("C", torch.zeros(args.latent_dim, args.latent_dim))
        if args.ema_target:
            self.make_momentum_copy("backbone")
            self.make_momentum_copy("projector")

    def training_step(self, views: Sequence[torch.Tensor], progress: Progress) -> StepOutput:
        z1 = self.project(self.backbone(views[0]))
        if self.args.ema_target:
            with torch.no_grad():
                z2 = self.momentum_projector(self.momentum_backbone(views[1]))
        else:
            z2 = self.project(self.backbone(views[1]))
        a = self.args
        # C is updated with z1 (covariance_branch="same") or with the second view's z2 ("other")
        loss, C_new = tico(z1, z2, self.C, a.beta, a.rho, self.gather_distributed, a.covariance_branch)
        self.C.copy_(C_new)
        return StepOutput(loss, {}, z1)
