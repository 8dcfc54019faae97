"""VICReg (Bardes, Ponce, LeCun, ICLR 2022), readable in one sitting.

Two views go through the same backbone and the same *expander* (the paper's name for the
projector), and the loss regularises the embeddings directly (see :mod:`selfsup.losses.vicreg`):
no normalisation, no negatives, no stop-gradient, no EMA. The ImageNet expander is
Linear(d, 8192)-BN-ReLU-Linear(8192, 8192)-BN-ReLU-Linear(8192, 8192, no bias).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from selfsup.checks import NON_NEGATIVE, POSITIVE, at_least, one_of
from selfsup.losses.vicreg import VARIANCE_MODES, vicreg_terms
from selfsup.methods.base import CPU_LARS, Method, Progress, StepOutput, register_method
from selfsup.models.backbones import Backbone
from selfsup.models.heads import mlp


@register_method
class VICReg(Method):
    name = "vicreg"
    summary = "variance-invariance-covariance regularisation, no negatives"
    paper = "Bardes, Ponce, LeCun, VICReg, ICLR 2022"

    @dataclass
    class Args:
        expander: tuple[int, ...] = (8192, 8192, 8192)
        sim_coeff: float = 25.0
        std_coeff: float = 25.0
        cov_coeff: float = 1.0
        gamma: float = 1.0
        eps: float = 1e-4
        variance_mode: str = "std"

    ranges = {
        "expander": at_least(1),
        "sim_coeff": NON_NEGATIVE,
        "std_coeff": NON_NEGATIVE,
        "cov_coeff": NON_NEGATIVE,
        "gamma": POSITIVE,
        "eps": POSITIVE,
        "variance_mode": one_of(*VARIANCE_MODES),
    }

    presets = {
        "imagenet": {
            "backbone": "resnet50",
            "stem": "imagenet",
            "zero_init_residual": True,
            "sync_bn": True,  # main_vicreg.py converts the whole model with nn.SyncBatchNorm
            "batch_size": 2048,
            "epochs": 1000,
            "optimizer": "lars",
            "base_lr": 0.2,
            "weight_decay": 1e-6,
            "warmup_epochs": 10,
            "final_lr_ratio": 0.001,
            "expander": (8192, 8192, 8192),
            "aug.crop_scale": (0.08, 1.0),
            "aug.blur_prob": (1.0, 0.1),
            "aug.solarize_prob": (0.0, 0.2),
        },
        "small": {
            "batch_size": 256,
            "epochs": 1000,
            "optimizer": "lars",
            "base_lr": 0.3,
            "weight_decay": 1e-4,
            "warmup_epochs": 10,
            "final_lr_ratio": 0.001,
            "expander": (2048, 2048, 2048),
            "aug.solarize_prob": (0.0, 0.1),
        },
        # LARS as in the paper: with the shared cpu base's SGD the loss (25/25/1 weights) diverged within
        # 35 steps (docs/cpu-preset.md, "Loss-scale-sensitive methods").
        "cpu": {
            **CPU_LARS,
            "expander": (1024, 1024, 1024),
            "final_lr_ratio": 0.001,
        },
    }

    def __init__(self, backbone: Backbone, args: Args, gather_distributed: bool = False) -> None:
        super().__init__(backbone, args, gather_distributed)
        if args.variance_mode not in VARIANCE_MODES:
            raise ValueError(f"unknown variance_mode {args.variance_mode!r}. Valid: {', '.join(VARIANCE_MODES)}")
        self.expander = mlp([backbone.out_dim, *args.expander], last_bias=False)

    @classmethod
    def latent_dim(cls, args: Args) -> int:
        return int(args.expander[-1])

    def project(self, h: torch.Tensor) -> torch.Tensor:
        return self.expander(h)

    def training_step(self, views: Sequence[torch.Tensor], progress: Progress) -> StepOutput:
        z1 = self.project(self.backbone(views[0]))
        z2 = self.project(self.backbone(views[1]))
        a = self.args
        terms = vicreg_terms(z1, z2, a.gamma, a.eps, self.gather_distributed, a.variance_mode)
        loss = terms.total(a.sim_coeff, a.std_coeff, a.cov_coeff)
        logs: dict[str, float | torch.Tensor] = {
            "invariance": terms.invariance,
            "variance": terms.variance,
            "covariance": terms.covariance,
        }
        return StepOutput(loss, logs, z1)
