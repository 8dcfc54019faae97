"""SimCLR v1 (Chen, Kornblith, Norouzi, Hinton, ICML 2020).

h = f(x) (ResNet), z = g(h) (projection head), loss = NT-Xent over the 2N views (Eq. 1), with the
negatives of the whole (global) batch. Head as in the v1 code (``model_util.py`` at tag 1.0):
Linear(d, 2048) + BN + ReLU, Linear(2048, 128, no bias) + BN with a learnable scale and no shift
(``center=False, scale=True``; ``last_bn_scale``). Evaluation uses h.

The v1 code adds the two directions' losses, ``loss_a + loss_b``, each a mean over its anchors
(``objective.py``), so its gradient is twice that of :func:`selfsup.losses.nt_xent`, the mean over the 2N
anchors; with LARS the weights' steps do not depend on that scale, but the BN parameters and biases, which
skip LARS's adaptation, take twice the step. ``scale_loss=2`` (the ``imagenet`` preset) reproduces it.
The preset also syncs BN over the global batch (``global_bn``, v1 §2.2 and ``model_util.py``) and
zero-initialises the last BN of each residual block (``resnet.py``: ``init_zero=True``).

``projector`` and ``loss`` are ablation switches for SimCLR's own questions (SimCLR §4.2, Table 2
and Fig. 8): ``projector="none" | "linear" | "mlp"`` and ``loss="nt_xent" | "nt_logistic" |
"margin_triplet"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from selfsup.checks import NON_NEGATIVE, POSITIVE, at_least, one_of
from selfsup.losses import margin_triplet, nt_logistic, nt_xent
from selfsup.methods.base import Method, Progress, StepOutput, register_method
from selfsup.models.backbones import Backbone
from selfsup.models.heads import mlp

PROJECTORS = ("mlp", "linear", "none")
CONTRASTIVE_LOSSES = ("nt_xent", "nt_logistic", "margin_triplet")


def build_projector(
    kind: str,
    in_dim: int,
    hidden_dim: int,
    latent_dim: int,
    hidden_bn: bool = True,
    last_bn: bool = True,
    layers: int = 2,
    last_bn_scale: bool = True,
) -> nn.Module:
    """The projection head g for the projector ablation: ``mlp`` (``layers`` linear layers),
    ``linear`` (one linear layer) or ``none`` (z = h). ``last_bn_scale``: the last BN learns a scale (no
    shift), else it is affine-free."""
    if kind == "none":
        return nn.Identity()
    affine: bool | Literal["scale"] = "scale" if last_bn_scale else False
    if kind == "linear":
        return mlp([in_dim, latent_dim], last_bn=last_bn, last_bn_affine=affine, last_bias=not last_bn)
    if kind == "mlp":
        dims = [in_dim] + [hidden_dim] * (layers - 1) + [latent_dim]
        return mlp(dims, hidden_bn=hidden_bn, last_bn=last_bn, last_bn_affine=affine, last_bias=not last_bn)
    raise ValueError(f"unknown projector {kind!r}. Valid: {', '.join(PROJECTORS)}")


@register_method
class SimCLR(Method):
    name = "simclr"
    summary = "contrastive: NT-Xent over 2N views, global negatives"
    paper = "Chen et al., A Simple Framework for Contrastive Learning of Visual Representations, ICML 2020"

    @dataclass
    class Args:
        latent_dim: int = 128
        hidden_dim: int = 2048
        projector_layers: int = 2
        temperature: float = 0.1
        projector: str = "mlp"
        hidden_bn: bool = True
        last_bn: bool = True
        last_bn_scale: bool = True
        loss: str = "nt_xent"
        margin: float = 0.5
        scale_loss: float = 1.0

    ranges = {
        "latent_dim": at_least(1),
        "hidden_dim": at_least(1),
        "projector_layers": at_least(1),
        "temperature": POSITIVE,
        "projector": one_of(*PROJECTORS),
        "loss": one_of(*CONTRASTIVE_LOSSES),
        "margin": NON_NEGATIVE,
        "scale_loss": POSITIVE,
    }

    presets = {
        "imagenet": {
            "backbone": "resnet50",
            "stem": "imagenet",
            "zero_init_residual": True,
            "sync_bn": True,
            "batch_size": 4096,
            "epochs": 100,
            "optimizer": "lars",
            "base_lr": 0.3,
            "weight_decay": 1e-6,
            "warmup_epochs": 10,
            "temperature": 0.1,
            "latent_dim": 128,
            "hidden_dim": 2048,
            "scale_loss": 2.0,
            "aug.brightness": 0.8,
            "aug.contrast": 0.8,
            "aug.saturation": 0.8,
            "aug.hue": 0.2,
            "aug.blur_prob": (0.5,),
            "aug.crop_scale": (0.08, 1.0),
        },
        "small": {
            "batch_size": 512,
            "epochs": 1000,
            "optimizer": "lars",
            "base_lr": 0.5,
            "weight_decay": 1e-6,
            "warmup_epochs": 10,
            "temperature": 0.5,
            "latent_dim": 128,
            "hidden_dim": 2048,
            "aug.crop_scale": (0.08, 1.0),  # the v1 code's one Inception crop, at 32 px too
            "aug.brightness": 0.4,
            "aug.contrast": 0.4,
            "aug.saturation": 0.4,
            "aug.hue": 0.1,
        },
        "cpu": {
            "temperature": 0.2,
            "latent_dim": 128,
            "hidden_dim": 512,
        },
    }

    def __init__(self, backbone: Backbone, args: Args, gather_distributed: bool = False) -> None:
        super().__init__(backbone, args, gather_distributed)
        if args.loss not in CONTRASTIVE_LOSSES:
            raise ValueError(f"unknown loss {args.loss!r}. Valid: {', '.join(CONTRASTIVE_LOSSES)}")
        self.projector = build_projector(
            args.projector,
            backbone.out_dim,
            args.hidden_dim,
            args.latent_dim,
            args.hidden_bn,
            args.last_bn,
            args.projector_layers,
            args.last_bn_scale,
        )

    def contrastive_loss(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        if self.args.loss == "nt_xent":
            return nt_xent(z1, z2, self.args.temperature, self.gather_distributed)
        if self.args.loss == "nt_logistic":
            return nt_logistic(z1, z2, self.args.temperature, self.gather_distributed)
        return margin_triplet(z1, z2, self.args.margin, self.gather_distributed)

    def training_step(self, views: Sequence[torch.Tensor], progress: Progress) -> StepOutput:
        x1, x2 = views[0], views[1]
        z = self.project(self.backbone(torch.cat([x1, x2])))
        z1, z2 = z.chunk(2)
        loss = self.args.scale_loss * self.contrastive_loss(z1, z2)
        return StepOutput(loss, {}, z1)
