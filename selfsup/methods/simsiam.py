"""SimSiam: Exploring Simple Siamese Representation Learning (Chen & He, CVPR 2021).

One encoder f (backbone + projector) for both views, a predictor h on top, and the symmetrised
negative cosine with stop-gradient (:func:`selfsup.losses.simsiam`, Eq. 4):

    L = ½·D(h(f(x1)), stopgrad(f(x2))) + ½·D(h(f(x2)), stopgrad(f(x1)))

No negatives, no EMA: the stop-gradient and the predictor prevent collapse (§4.1-4.2).

Heads as in ``simsiam/builder.py``:

* projector (3 layers, ``projector_layers=3``): Linear(d, 2048, no bias)-BN-ReLU-Linear(2048, 2048,
  no bias)-BN-ReLU-Linear(2048, 2048)-BN(affine=False). The official code keeps the last fc's bias
  but freezes it because a BN follows; here that bias is absent, which is the same function.
  The CIFAR recipe (paper Appendix) uses 2 layers.
* predictor (bottleneck): Linear(2048, 512, no bias)-BN-ReLU-Linear(512, 2048, with bias).

``fix_pred_lr`` (the README's ``--fix-pred-lr``, Table 1's last row): the predictor stays at the
peak LR while the rest follows the cosine schedule (:meth:`parameter_groups` marks its group
``fixed_lr``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from selfsup.checks import at_least
from selfsup.losses.cosine import simsiam
from selfsup.methods.base import Method, Progress, StepOutput, register_method
from selfsup.models.backbones import Backbone
from selfsup.models.heads import mlp

# MoCo v2's augmentation, which SimSiam uses (symmetric)
_MOCO_V2_AUG = {
    "aug.crop_scale": (0.2, 1.0),
    "aug.brightness": 0.4,
    "aug.contrast": 0.4,
    "aug.saturation": 0.4,
    "aug.hue": 0.1,
    "aug.jitter_prob": (0.8,),
    "aug.grayscale_prob": (0.2,),
    "aug.solarize_prob": (0.0,),
}


@register_method
class SimSiam(Method):
    name = "simsiam"
    summary = "siamese -cos with stop-gradient and a predictor; no negatives, no EMA"
    paper = "Chen & He, Exploring Simple Siamese Representation Learning, CVPR 2021"

    @dataclass
    class Args:
        latent_dim: int = 2048
        hidden_dim: int = 2048
        pred_hidden_dim: int = 512
        projector_layers: int = 3
        fix_pred_lr: bool = True

    ranges = {
        "latent_dim": at_least(1),
        "hidden_dim": at_least(1),
        "pred_hidden_dim": at_least(1),
        "projector_layers": at_least(1),
    }

    presets = {
        "imagenet": {
            "backbone": "resnet50",
            "stem": "imagenet",
            "zero_init_residual": True,
            "sync_bn": True,  # main_simsiam.py converts the whole model with nn.SyncBatchNorm
            "batch_size": 512,
            "epochs": 100,
            "optimizer": "sgd",
            "base_lr": 0.05,
            "weight_decay": 1e-4,
            "momentum": 0.9,
            "schedule": "warmup_cosine",
            "warmup_epochs": 0,
            "schedule_per_step": False,
            "latent_dim": 2048,
            "hidden_dim": 2048,
            "pred_hidden_dim": 512,
            "projector_layers": 3,
            "fix_pred_lr": True,
            **_MOCO_V2_AUG,
            "aug.blur_prob": (0.5,),
        },
        # the paper's CIFAR-10 recipe (Appendix): 2-layer projector, lr 0.03 x B/256, wd 5e-4, 800 epochs
        "small": {
            "batch_size": 512,
            "epochs": 800,
            "optimizer": "sgd",
            "base_lr": 0.03,
            "weight_decay": 5e-4,
            "momentum": 0.9,
            "schedule": "warmup_cosine",
            "warmup_epochs": 0,
            "schedule_per_step": False,
            "latent_dim": 2048,
            "hidden_dim": 2048,
            "pred_hidden_dim": 512,
            "projector_layers": 2,
            "fix_pred_lr": True,
            **_MOCO_V2_AUG,
            "aug.blur_prob": (0.0,),
        },
        "cpu": {
            "latent_dim": 512,
            "hidden_dim": 512,
            "pred_hidden_dim": 128,
            "projector_layers": 2,
        },
    }

    def __init__(self, backbone: Backbone, args: Args, gather_distributed: bool = False) -> None:
        super().__init__(backbone, args, gather_distributed)
        if args.projector_layers < 1:
            raise ValueError(f"projector_layers must be >= 1, got {args.projector_layers}")
        dims = [backbone.out_dim] + [args.hidden_dim] * (args.projector_layers - 1) + [args.latent_dim]
        self.projector = mlp(dims, bias=False, last_bn=True, last_bn_affine=False)
        self.predictor = mlp([args.latent_dim, args.pred_hidden_dim, args.latent_dim], bias=False, last_bias=True)

    def parameter_groups(self) -> list[dict[str, Any]]:
        predictor = {id(p) for p in self.predictor.parameters()}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in predictor]
        return [
            {"params": rest},
            {"params": list(self.predictor.parameters()), "fixed_lr": bool(self.args.fix_pred_lr)},
        ]

    def training_step(self, views: Sequence[torch.Tensor], progress: Progress) -> StepOutput:
        # one forward per view, as simsiam/builder.py does (BatchNorm statistics per view)
        z1 = self.project(self.backbone(views[0]))
        z2 = self.project(self.backbone(views[1]))
        p1, p2 = self.predictor(z1), self.predictor(z2)
        loss = simsiam(p1, p2, z1, z2)
        return StepOutput(loss, {}, z1)
