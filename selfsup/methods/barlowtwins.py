"""Barlow Twins (Zbontar, Jing, Misra, LeCun, Deny, ICML 2021): make the cross-correlation the identity.

Two views → the same backbone → projector "8192-8192-8192": Linear(d, 8192, no bias)-BN-ReLU-
Linear(8192, 8192, no bias)-BN-ReLU-Linear(8192, 8192, no bias) (facebookresearch/barlowtwins
``main.py``). The embeddings are standardised along the global batch inside the loss (an affine-free
BatchNorm with global statistics, see :mod:`selfsup.losses.barlow_twins`), so no SyncBatchNorm is needed.
Symmetric: no predictor, no stop-gradient, no EMA.

Optimisation as the official code: LARS whose 1-D parameters (biases, BN γ/β) skip weight decay and
adaptation and have their own learning rate, 0.0048 × B/256 against 0.2 × B/256 for the weights. The
base LR here is the weights' (0.2), and the 1-D group gets ``bias_lr_mult`` = 0.0048/0.2 = 0.024 of it
through the ``lr_mult_1d`` key of :meth:`parameter_groups` (it only applies with ``optimizer=lars``
and ``lars_exclude_1d=true``, which split the 1-D parameters off).

``scale_loss`` multiplies the loss: 1 in the current official code; the first release and ports of it
(solo-learn's CIFAR recipe: 0.1) use it instead of the separate bias learning rate.

``rank_local_gradient`` reproduces the official code's gradient under DDP. It sums the ranks' parts of C with
``torch.distributed.all_reduce``, which autograd does not see: each rank back-propagates dL/dC through its
own samples only and DDP then averages, so the applied gradient is 1/W of the loss's gradient with W ranks
(barlowtwins issue #8; lightly fixed the same pattern in PR #1980). Our loss gathers with gradients and gets
the exact gradient; with the option, its gradient (not its value) is divided by W. LARS's trust ratio cancels
the scale for the weights but not for the 1-D parameters, which skip the adaptation and so take a W times
smaller step: the ``imagenet`` preset turns it on, so that ``torchrun`` with the recipe's 32 processes does
what the official code does (``tests/distributed/test_official_gradients.py``). In one process it changes
nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from selfsup import distributed as dist
from selfsup.checks import NON_NEGATIVE, POSITIVE, at_least
from selfsup.losses.barlow_twins import barlow_twins_terms
from selfsup.methods.base import CPU_LARS, Method, Progress, StepOutput, register_method
from selfsup.models.backbones import Backbone
from selfsup.models.heads import mlp


@register_method
class BarlowTwins(Method):
    name = "barlowtwins"
    summary = "redundancy reduction: cross-correlation of the two views towards the identity"
    paper = "Zbontar et al., Barlow Twins: Self-Supervised Learning via Redundancy Reduction, ICML 2021"

    @dataclass
    class Args:
        projector: tuple[int, ...] = (8192, 8192, 8192)
        lambd: float = 0.0051
        bn_eps: float = 1e-5
        bias_lr_mult: float = 0.024
        scale_loss: float = 1.0
        rank_local_gradient: bool = False

    ranges = {
        "projector": at_least(1),
        "lambd": NON_NEGATIVE,
        "bn_eps": POSITIVE,
        "bias_lr_mult": NON_NEGATIVE,
        "scale_loss": POSITIVE,
    }

    presets = {
        # main.py defaults and README: batch 2048, 1000 epochs, LARS, lr 0.2 / 0.0048 x B/256, wd 1e-6 (the paper
        # says 1.5e-6), 10 warmup epochs, cosine to 0.001x, zero-init residuals; BYOL's asymmetric augmentation.
        "imagenet": {
            "backbone": "resnet50",
            "stem": "imagenet",
            "zero_init_residual": True,
            "sync_bn": True,
            "rank_local_gradient": True,
            "batch_size": 2048,
            "epochs": 1000,
            "optimizer": "lars",
            "base_lr": 0.2,
            "bias_lr_mult": 0.024,
            "weight_decay": 1e-6,
            "warmup_epochs": 10,
            "final_lr_ratio": 0.001,
            "projector": (8192, 8192, 8192),
            "lambd": 0.0051,
            "aug.crop_scale": (0.08, 1.0),
            "aug.blur_prob": (1.0, 0.1),
            "aug.solarize_prob": (0.0, 0.2),
        },
        # solo-learn's CIFAR recipe (92.10%): LARS 0.3 at 256 (eta 0.02, clip, one LR for every parameter),
        # wd 1e-4, projector 2048-2048-2048, scale_loss 0.1, asymmetric augmentation without blur, crop 0.08.
        "small": {
            "batch_size": 256,
            "epochs": 1000,
            "optimizer": "lars",
            "base_lr": 0.3,
            "weight_decay": 1e-4,
            "warmup_epochs": 10,
            "lars_eta": 0.02,
            "lars_clip": True,
            "bias_lr_mult": 1.0,
            "scale_loss": 0.1,
            "projector": (2048, 2048, 2048),
            "lambd": 0.0051,
            "aug.crop_scale": (0.08, 1.0),
            "aug.blur_prob": (0.0,),
            "aug.solarize_prob": (0.0, 0.2),
        },
        # LARS as in the paper: with the shared cpu base's SGD the embeddings collapsed (kNN monitor 0.698 ->
        # 0.592 in one epoch; docs/cpu-preset.md, "Loss-scale-sensitive methods").
        "cpu": {
            **CPU_LARS,
            "projector": (1024, 1024, 1024),
            "bias_lr_mult": 0.024,
            "final_lr_ratio": 0.001,
        },
    }

    def __init__(self, backbone: Backbone, args: Args, gather_distributed: bool = False) -> None:
        super().__init__(backbone, args, gather_distributed)
        self.projector = mlp([backbone.out_dim, *args.projector], bias=False)

    @classmethod
    def latent_dim(cls, args: Args) -> int:
        return int(args.projector[-1])

    def training_step(self, views: Sequence[torch.Tensor], progress: Progress) -> StepOutput:
        z1 = self.project(self.backbone(views[0]))
        z2 = self.project(self.backbone(views[1]))
        terms = barlow_twins_terms(z1, z2, self.args.bn_eps, self.gather_distributed)
        loss = self.args.scale_loss * terms.total(self.args.lambd)
        if self.args.rank_local_gradient and self.gather_distributed:
            loss = dist.scale_gradient(loss, 1.0 / dist.world_size())
        logs: dict[str, float | torch.Tensor] = {
            "on_diagonal": terms.on_diagonal.detach(),
            "off_diagonal": terms.off_diagonal.detach(),
        }
        return StepOutput(loss, logs, z1)

    def parameter_groups(self) -> list[dict[str, Any]]:
        """One group; its 1-D parameters (biases, BN) get ``bias_lr_mult`` × the LR under LARS."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr_mult_1d": self.args.bias_lr_mult}]
