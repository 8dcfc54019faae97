"""Deep InfoMax (Hjelm et al., "Learning deep representations by mutual information estimation and
maximization", ICLR 2019), after rdevon/DIM (``cortex_DIM/models/dim.py``, ``prior_matching.py``).

The encoder gives a local feature map C(x) (M x M positions) and a global vector Y = E(x). The
objective (DIM Eq. 8) maximises

    α · I(X; Y)  +  (β / M²) Σ_i I(C^(i)(X); Y)  +  γ · prior matching

with the defaults of DIM(L): α = 0, β = 1, γ = 0.1.

* **Encoder.** The backbone's pooled output is h; a linear head gives the ``global_dim``-d global Y
  (64 in the paper). The local map is the backbone's stage ``local_stage`` (-1: the encoder's choice: the
  128-channel 8x8 map of ``dim32`` for 32 px images, ``layer3`` of a ResNet).
* **Local MI** (β). "Encode-and-dot-product" (DIM Appendix A.2, ``MI1x1ConvNet``): the local map and Y
  (as a 1x1 map) each go through a 1x1-conv net conv-BN-ReLU-conv with a linear shortcut initialised
  near the identity, then LayerNorm over channels, to ``mi_units`` channels; the score of a (global,
  local) pair is their dot product, fed to the estimator ``estimator`` (``jsd`` default, ``nce``, ``dv``,
  :mod:`selfsup.losses.dim`) with the other images of the (global) batch as negatives.
* **Global MI** (α, optional). The local map is encoded by two 3x3 convs (64, 32) + ReLU, pooled to 4x4
  and a linear layer to ``mi_units`` (the paper's global discriminator, Appendix A.2, in
  encode-and-dot-product form), Y by an ``MIFCNet`` (Linear-BN-ReLU-Linear plus a near-identity linear
  shortcut); the same estimator with one "position".
* **Prior matching** (γ, optional). A discriminator D (``global_dim`` -> 1000 -> 200 -> 1, ReLU) tells
  samples of the uniform prior on [0, 1]^d from sigmoid(Y). Its GAN loss trains D, and γ times the
  non-saturating loss −log σ(D(sigmoid(Y))) trains the encoder. Both are in the one loss the engine
  back-propagates, and one optimizer (the same Adam) steps both: D's loss sees Y detached, and the
  encoder's term calls D with detached parameters (``torch.func.functional_call``), so each gradient
  reaches only its own player, exactly as the code's two alternating updates would compute them from
  the same batch. (A gradient-reversal layer would give the encoder the saturating minimax gradient
  instead.) D's loss also carries ``prior_penalty`` (1.0) times the zero-centred gradient penalty
  0.5 · (E_prior ||∇D||² + E_Y ||∇D||²) at the prior samples and at the detached sigmoid(Y)
  (rdevon/DIM ``cortex_DIM/models/discriminator.py::Discriminator.routine``; Mescheder et al., ICML 2018):
  :func:`selfsup.losses.dim.gradient_penalty`. Only D's parameters receive its gradient.

* **Occlusion** (``occlusion`` > 0, optional; DIM §4.3, Table 5). Y is computed from a copy of the image
  with a random square (``occlusion`` x the side) set to 0, the local map from the full image, so Y must
  predict local features it has not seen. Both copies go through the encoder in one batch.

DIM takes one view per image (``aug.num_views=1``); the paper's CIFAR runs use no augmentation.
Every preset trains with Adam, lr 1e-4, betas (0.5, 0.999): cortex's optimizer defaults (rdevon/cortex
``cortex/_lib/optimizer.py``, ``_optimizer_defaults``), which the code's plugins keep; one optimizer steps
the encoder, the MI networks and D (the code gives every network its own Adam with these settings; Adam
is per-parameter, so that is the same update). The 64 px preset (``imagenet``) uses ``alex64``, the code's
``alex64x64`` encoder (its STL-10 and Tiny ImageNet network).
Evaluation features: h (the 1024-unit layer of ``dim32``, the 4096-unit layer of ``alex64``, or a ResNet's
pooled output); z = Y.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from selfsup.checks import NON_NEGATIVE, Range, at_least, one_of
from selfsup.losses.dim import (
    MI_ESTIMATORS,
    gradient_penalty,
    local_global_mi_loss,
    prior_discriminator_loss,
    prior_generator_loss,
)
from selfsup.methods.base import Method, Progress, StepOutput, register_method
from selfsup.models.backbones import Backbone
from selfsup.models.encoders import default_local_stage, feature_pyramid, stage_channels


def _near_identity_(weight: torch.Tensor) -> None:
    """DIM's shortcut init: U(−0.01, 0.01) with ones on the diagonal (when it has one)."""
    out_features, in_features = weight.shape[:2]
    with torch.no_grad():
        weight.uniform_(-0.01, 0.01)
        if out_features >= in_features:
            index = torch.arange(in_features)
            weight.view(out_features, in_features, -1)[index, index] = 1.0


class MI1x1ConvNet(nn.Module):
    """DIM's score encoder for feature maps: LayerNorm_c(conv1x1-BN-ReLU-conv1x1(x) + W·x)."""

    def __init__(self, in_channels: int, units: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(in_channels, units, 1, bias=False),
            nn.BatchNorm2d(units),
            nn.ReLU(inplace=True),
            nn.Conv2d(units, units, 1),
        )
        self.shortcut = nn.Conv2d(in_channels, units, 1, bias=False)
        _near_identity_(self.shortcut.weight)
        self.norm = nn.LayerNorm(units)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x) + self.shortcut(x)
        return self.norm(y.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class MIFCNet(nn.Module):
    """DIM's score encoder for vectors: Linear-BN-ReLU-Linear(x) + W·x (near-identity W)."""

    def __init__(self, in_features: int, units: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Linear(in_features, units), nn.BatchNorm1d(units), nn.ReLU(inplace=True), nn.Linear(units, units)
        )
        self.shortcut = nn.Linear(in_features, units)
        _near_identity_(self.shortcut.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x) + self.shortcut(x)


def occlude(images: torch.Tensor, fraction: float, offset: int = 0, total: int | None = None) -> torch.Tensor:
    """A copy of ``images`` with a square of side ``fraction`` x the image side set to 0 (the dataset mean
    after normalisation) at a uniformly random place in each image (DIM §4.3, "occlusion").

    The places are drawn for ``total`` images (default: this batch) and rows ``offset:offset + n`` are used,
    so that under DDP every rank slices the same global draw and N processes equal one.
    """
    n, _, height, width = images.shape
    total = n if total is None else total
    side_h, side_w = max(1, round(fraction * height)), max(1, round(fraction * width))
    top = torch.randint(0, height - side_h + 1, (total,))[offset : offset + n].to(images.device)
    left = torch.randint(0, width - side_w + 1, (total,))[offset : offset + n].to(images.device)
    rows = torch.arange(height, device=images.device)[None, :, None]
    cols = torch.arange(width, device=images.device)[None, None, :]
    top, left = top[:, None, None], left[:, None, None]
    hidden = (rows >= top) & (rows < top + side_h) & (cols >= left) & (cols < left + side_w)
    return images.masked_fill(hidden[:, None], 0.0)


@register_method
class DIM(Method):
    name = "dim"
    summary = "Deep InfoMax: local-global MI (JSD / NCE / DV) + prior matching"
    paper = "Hjelm et al., Learning deep representations by mutual information estimation and maximization, ICLR 2019"
    needs_stage_maps = (
        "DIM compares local features, an intermediate spatial feature map of the encoder, with its global vector "
        "(Hjelm et al. 2019, §3.1); a Vision Transformer has no such maps and selfsup reads them from its own "
        "encoders (dim32, dim64, alex64) and ResNets only"
    )

    @dataclass
    class Args:
        global_dim: int = 64
        mi_units: int = 2048
        estimator: str = "jsd"
        alpha: float = 0.0
        beta: float = 1.0
        gamma: float = 0.1
        local_stage: int = -1
        prior_hidden: tuple[int, ...] = (1000, 200)
        act_penalty: float = 0.0
        occlusion: float = 0.0
        prior_penalty: float = 1.0

    _no_augmentation = {
        "aug.num_views": 1,
        "aug.crop_scale": (1.0, 1.0),
        "aug.crop_ratio": (1.0, 1.0),
        "aug.jitter_prob": (0.0,),
        "aug.grayscale_prob": (0.0,),
        "aug.blur_prob": (0.0,),
        "aug.solarize_prob": (0.0,),
    }
    # cortex's Adam defaults (rdevon/cortex cortex/_lib/optimizer.py): lr 1e-4, betas (0.5, 0.999).
    _adam = {
        "optimizer": "adam",
        "base_lr": 1e-4,
        "adam_betas": (0.5, 0.999),
        "lr_scaling": "none",
        "weight_decay": 0.0,
    }
    ranges = {
        "global_dim": at_least(1),
        "mi_units": at_least(1),
        "estimator": one_of(*MI_ESTIMATORS),
        "alpha": NON_NEGATIVE,
        "beta": NON_NEGATIVE,
        "gamma": NON_NEGATIVE,
        "local_stage": at_least(-1),
        "prior_hidden": at_least(1),
        "act_penalty": NON_NEGATIVE,
        "occlusion": Range(0, 1, high_open=True),
        "prior_penalty": NON_NEGATIVE,
    }

    presets = {
        # DIM has no ImageNet recipe: the closest documented setting is the paper's 64 px one (Tiny ImageNet,
        # STL-10 resized): the alex64x64 encoder the code names for them (alex64), batch 64, Adam 1e-4, the
        # code's 1000 epochs, flips.
        "imagenet": {
            "backbone": "alex64",
            "batch_size": 64,
            "epochs": 1000,
            "schedule": "constant",
            "warmup_epochs": 0.0,
            **_adam,
            **_no_augmentation,
            "aug.image_size": 64,
            "aug.flip_prob": (0.5,),
        },
        "small": {
            "backbone": "dim32",
            "batch_size": 64,
            "epochs": 1000,
            "schedule": "constant",
            "warmup_epochs": 0.0,
            **_adam,
            **_no_augmentation,
            "aug.image_size": 32,
            "aug.flip_prob": (0.0,),
        },
        # 24 epochs, not the shared 8: DIM's kNN dips below its random-init encoder's in the first epochs and
        # only passes it from about epoch 6 (docs/methods/dim.md, measured); an epoch costs half of SimCLR's.
        "cpu": {
            "backbone": "dim32",
            "mi_units": 512,
            "epochs": 24,
            **_adam,
            **_no_augmentation,
        },
    }

    def __init__(self, backbone: Backbone, args: Args, gather_distributed: bool = False) -> None:
        super().__init__(backbone, args, gather_distributed)
        if args.estimator not in MI_ESTIMATORS:
            raise ValueError(f"unknown estimator {args.estimator!r}. Valid: {', '.join(MI_ESTIMATORS)}")
        channels = stage_channels(backbone)
        self.local_stage = default_local_stage(backbone) if args.local_stage < 0 else args.local_stage
        if not 0 <= self.local_stage < len(channels):
            raise ValueError(f"local_stage={args.local_stage}: the backbone has stages 0..{len(channels) - 1}")
        local_channels = channels[self.local_stage]
        self.global_head = nn.Linear(backbone.out_dim, args.global_dim)
        if args.beta > 0:
            self.local_mi = MI1x1ConvNet(local_channels, args.mi_units)
            self.global_mi = MI1x1ConvNet(args.global_dim, args.mi_units)
        if args.alpha > 0:
            self.map_encoder = nn.Sequential(
                nn.Conv2d(local_channels, 64, 3),
                nn.ReLU(inplace=True),
                nn.Conv2d(64, 32, 3),
                nn.ReLU(inplace=True),
                nn.AdaptiveAvgPool2d(4),
                nn.Flatten(),
                nn.Linear(32 * 16, args.mi_units),
            )
            self.vector_encoder = MIFCNet(args.global_dim, args.mi_units)
        if args.gamma > 0:
            dims = [args.global_dim, *args.prior_hidden]
            layers: list[nn.Module] = []
            for width_in, width_out in zip(dims[:-1], dims[1:]):
                layers += [nn.Linear(width_in, width_out), nn.ReLU(inplace=True)]
            self.discriminator = nn.Sequential(*layers, nn.Linear(dims[-1], 1))

    @classmethod
    def num_views(cls, args: Args) -> int:
        return 1

    @classmethod
    def latent_dim(cls, args: Args) -> int:
        return int(args.global_dim)

    def project(self, h: torch.Tensor) -> torch.Tensor:
        return self.global_head(h)

    def _prior_sample(self, like: torch.Tensor) -> torch.Tensor:
        """Uniform [0, 1) prior samples for this rank, drawn for the global batch and sliced (so 1 and N
        processes use the same samples)."""
        n = like.shape[0]
        start, total = self.global_rows(n)
        return torch.rand(total, like.shape[1])[start : start + n].to(like.device, like.dtype)

    @torch.compiler.disable
    def _discriminator_loss(self, encoded: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """D's GAN loss on prior samples and the detached ``encoded`` = sigmoid(Y), plus ``prior_penalty`` x the
        gradient penalty 0.5 (P + Q) at both (rdevon/DIM ``cortex_DIM/models/discriminator.py``,
        ``Discriminator.routine``); returns (loss, penalty or None when ``prior_penalty`` = 0).

        Runs eagerly under ``torch.compile``: the penalty differentiates D with respect to its inputs inside the
        forward pass (``autograd.grad`` with ``create_graph``), which a compiled graph does not support.
        """
        weight = self.args.prior_penalty
        prior = self._prior_sample(encoded).requires_grad_(weight > 0)
        fake = encoded.detach().requires_grad_(weight > 0)
        prior_scores, fake_scores = self.discriminator(prior), self.discriminator(fake)
        loss = prior_discriminator_loss(prior_scores, fake_scores)
        if weight == 0:
            return loss, None
        penalty = 0.5 * (gradient_penalty(prior_scores, prior) + gradient_penalty(fake_scores, fake))
        return loss + weight * penalty, penalty

    def training_step(self, views: Sequence[torch.Tensor], progress: Progress) -> StepOutput:
        a = self.args
        images = views[0]
        if a.occlusion > 0:
            # DIM §4.3: Y sees an occluded copy, the local map the full image; one forward pass for both.
            n = images.shape[0]
            start, total = self.global_rows(n)
            occluded = occlude(images, a.occlusion, offset=start, total=total)
            maps, h = feature_pyramid(self.backbone, torch.cat([images, occluded]))
            local_map, h = maps[self.local_stage][:n], h[n:]
        else:
            maps, h = feature_pyramid(self.backbone, images)
            local_map = maps[self.local_stage]
        y = self.global_head(h)
        loss = y.new_zeros((), dtype=torch.float32)
        logs: dict[str, float | torch.Tensor] = {}
        if a.beta > 0:
            local = self.local_mi(local_map).flatten(2).transpose(1, 2)  # (N, M*M, units)
            glob = self.global_mi(y[:, :, None, None]).flatten(1)  # (N, units)
            local_loss = local_global_mi_loss(local, glob, a.estimator, self.gather_distributed)
            loss = loss + a.beta * local_loss
            logs["local_mi_loss"] = local_loss.detach()
        if a.alpha > 0:
            map_code = self.map_encoder(local_map)[:, None, :]  # one "position"
            global_loss = local_global_mi_loss(map_code, self.vector_encoder(y), a.estimator, self.gather_distributed)
            loss = loss + a.alpha * global_loss
            logs["global_mi_loss"] = global_loss.detach()
        if a.gamma > 0:
            encoded = torch.sigmoid(y)
            disc_loss, penalty = self._discriminator_loss(encoded)
            if penalty is not None:
                logs["prior_gradient_penalty"] = penalty.detach()
            frozen = {name: p.detach() for name, p in self.discriminator.named_parameters()}
            gen_loss = prior_generator_loss(functional_call(self.discriminator, frozen, (encoded,)))
            loss = loss + a.gamma * gen_loss + disc_loss
            logs["prior_generator"] = gen_loss.detach()
            logs["prior_discriminator"] = disc_loss.detach()
        if a.act_penalty > 0:
            loss = loss + a.act_penalty * y.float().pow(2).sum(1).mean()
        return StepOutput(loss, logs, y)
