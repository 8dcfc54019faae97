"""AMDIM: Augmented Multiscale Deep InfoMax (Bachman, Hjelm, Buchwalter, "Learning Representations by
Maximizing Mutual Information Across Views", NeurIPS 2019), after Philip-Bachman/amdim-public.

Two augmented views A and B of each image (sharing one horizontal flip: ``aug.shared_flip=true``, as
the code flips once before the two augmentations) go through the encoder, which gives features at
three scales: the 1x1 global r1, a 5x5 map r5 and a 7x7 map r7. Each goes through a "fake RKHS" head
to ``n_rkhs`` dimensions: a 1x1-conv residual block conv-ReLU-conv(zero init) plus a near-identity
1x1 shortcut, then BatchNorm (``FakeRKHSConvNet``; r1 passes unchanged when the encoder already
outputs ``n_rkhs`` channels, as AMDIM's does). The loss (:func:`selfsup.losses.amdim_terms`) is the
InfoNCE of the tasks 1→5, 1→7 and 5→5 (one random 5x5 location of A per image against every 5x5
location of B), each in both directions, with raw scores ⟨s, t⟩/√n_rkhs, a 0.05·mean(raw²) penalty and
soft clipping 20·tanh(raw/20); positives are all locations of the same image, negatives all locations
of every other image of the (global) batch.

Encoders: AMDIM's no-padding residual encoders ``amdim32`` / ``amdim64`` / ``amdim128``
(:mod:`selfsup.models.encoders`), whose 7x7 and 5x5 maps are the last maps of those sizes (the code's
``dim2layer``). **ResNet adaptation**: r1 = h (the pooled ``layer4``), r7 = ``layer3`` and r5 = ``layer4``
average-pooled to 7x7 and 5x5 (adaptive pooling, which repeats cells when a map is smaller). With the
CIFAR stem at 32 px those maps are 8x8 and 4x4, with the ImageNet stem at 224 px 14x14 and 7x7. ResNets
pad their convolutions, so their local features see more of the image than AMDIM's, which the paper
warns weakens the local tasks.

Evaluation features: h = r1 (the encoder's 1x1 output), z = its RKHS embedding. The code's online
MLP/linear classifiers are not part of the method: the engine's kNN monitor plays that role.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.checks import NON_NEGATIVE, POSITIVE, at_least
from selfsup.losses.amdim import amdim_terms
from selfsup.methods.base import Method, Progress, StepOutput, register_method
from selfsup.models.backbones import Backbone
from selfsup.models.encoders import feature_pyramid, stage_channels


class FakeRKHSConvNet(nn.Module):
    """AMDIM's embedding head: BN(conv1x1(ReLU(conv1x1(x))) + shortcut(x)); the residual branch's last
    conv starts at zero and the shortcut near the identity, so the head starts as (almost) BN(x)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 1, bias=False)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1, bias=True)
        self.bn_out = nn.BatchNorm2d(out_channels)
        nn.init.zeros_(self.conv2.weight)
        if out_channels >= in_channels:
            with torch.no_grad():
                self.shortcut.weight.uniform_(-0.01, 0.01)
                index = torch.arange(in_channels)
                self.shortcut.weight[index, index, 0, 0] = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn_out(self.conv2(F.relu(self.conv1(x))) + self.shortcut(x))


@register_method
class AMDIM(Method):
    name = "amdim"
    summary = "multiscale InfoNCE 1->5, 1->7, 5->5 across two views, tanh-clipped scores"
    paper = (
        "Bachman, Hjelm, Buchwalter, Learning Representations by Maximizing Mutual Information Across Views, "
        "NeurIPS 2019"
    )
    needs_stage_maps = (
        "AMDIM predicts between the encoder's 1x1, 5x5 and 7x7 feature maps (Bachman et al. 2019, §3.2); a "
        "Vision Transformer has no such maps and selfsup reads them from its own encoders (amdim32, amdim64, ...) "
        "and ResNets only"
    )

    @dataclass
    class Args:
        n_rkhs: int = 1024
        tclip: float = 20.0
        score_penalty: float = 0.05

    _adam = {
        "optimizer": "adam",
        "base_lr": 2e-4,
        "lr_scaling": "none",
        "adam_betas": (0.8, 0.999),
        "weight_decay": 1e-5,
        "aug.shared_flip": True,
        "aug.flip_prob": (0.5,),
        "aug.blur_prob": (0.0,),
        "aug.solarize_prob": (0.0,),
        "aug.grayscale_prob": (0.25,),
        "aug.jitter_prob": (0.8,),
        "aug.brightness": 0.4,
        "aug.contrast": 0.4,
        "aug.saturation": 0.4,
    }
    ranges = {
        "n_rkhs": at_least(1),
        "tclip": POSITIVE,
        "score_penalty": NON_NEGATIVE,
    }

    presets = {
        # README command (ndf 192, n_rkhs 1536, n_depth 8, batch 480) and task_self_supervised.py: 50 epochs,
        # x0.2 at 30 and 45; warmup over 500 updates = 500 / (1,281,167 / 480 = 2669 steps per epoch).
        "imagenet": {
            "backbone": "amdim128",
            "batch_size": 480,
            "epochs": 50,
            "schedule": "step",
            "lr_milestones": (30, 45),
            "lr_gamma": 0.2,
            "warmup_epochs": 500 / 2669,
            "n_rkhs": 1536,
            **_adam,
            "aug.image_size": 128,
            "aug.crop_scale": (0.3, 1.0),
            "aug.crop_ratio": (0.7, 1.4),
            "aug.hue": 0.1,
        },
        # The code's CIFAR defaults (ndf 128, n_rkhs 1024, n_depth 3, batch 200; 300 epochs, x0.2 at 250
        # and 280); warmup 500 updates = 2 epochs of 250 steps. The 4 px reflect-padded translation is
        # approximated by a mild random resized crop.
        "small": {
            "backbone": "amdim32",
            "batch_size": 200,
            "epochs": 300,
            "schedule": "step",
            "lr_milestones": (250, 280),
            "lr_gamma": 0.2,
            "warmup_epochs": 2.0,
            "n_rkhs": 1024,
            **_adam,
            "aug.image_size": 32,
            "aug.crop_scale": (0.6, 1.0),
            "aug.crop_ratio": (0.9, 1.1),
            "aug.hue": 0.2,
        },
        "cpu": {
            "backbone": "amdim32-small",
            "n_rkhs": 256,
            **_adam,
            "aug.image_size": 32,
            "aug.hue": 0.2,
        },
    }

    def __init__(self, backbone: Backbone, args: Args, gather_distributed: bool = False) -> None:
        super().__init__(backbone, args, gather_distributed)
        channels = stage_channels(backbone)
        sizes = getattr(backbone, "stage_sizes", None)
        if sizes is not None:
            if 7 not in sizes or 5 not in sizes:
                raise ValueError(f"AMDIM needs 7x7 and 5x5 maps; this encoder's maps are {sizes} px wide")
            self.index7 = max(i for i, s in enumerate(sizes) if s == 7)
            self.index5 = max(i for i, s in enumerate(sizes) if s == 5)
        else:  # ResNet adaptation (module docstring)
            self.index7, self.index5 = len(channels) - 2, len(channels) - 1
        self.rkhs_1 = (
            nn.Identity() if backbone.out_dim == args.n_rkhs else FakeRKHSConvNet(backbone.out_dim, args.n_rkhs)
        )
        self.rkhs_5 = FakeRKHSConvNet(channels[self.index5], args.n_rkhs)
        self.rkhs_7 = FakeRKHSConvNet(channels[self.index7], args.n_rkhs)

    @classmethod
    def latent_dim(cls, args: Args) -> int:
        return int(args.n_rkhs)

    def project(self, h: torch.Tensor) -> torch.Tensor:
        return self.rkhs_1(h[:, :, None, None]).flatten(1)

    def multiscale(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """RKHS embeddings r1 (N, d), r5 (N, 25, d) and r7 (N, 49, d) of a batch of images."""
        maps, h = feature_pyramid(self.backbone, images)
        m7, m5 = maps[self.index7], maps[self.index5]
        if m7.shape[-1] != 7 or m7.shape[-2] != 7:
            m7 = F.adaptive_avg_pool2d(m7, 7)
        if m5.shape[-1] != 5 or m5.shape[-2] != 5:
            m5 = F.adaptive_avg_pool2d(m5, 5)
        r1 = self.project(h)
        r5 = self.rkhs_5(m5).flatten(2).transpose(1, 2)
        r7 = self.rkhs_7(m7).flatten(2).transpose(1, 2)
        return r1, r5, r7

    def _source_locations(self, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """One uniformly random 5x5 location per image and view (the code's ``_sample_src_ftr``), drawn for
        the global batch and sliced, so that 1 and N processes pick the same locations."""
        start, total = self.global_rows(n)
        draws = torch.randint(0, 25, (2, total))[:, start : start + n].to(device)
        return draws[0], draws[1]

    def training_step(self, views: Sequence[torch.Tensor], progress: Progress) -> StepOutput:
        a = self.args
        r1_a, r5_a, r7_a = self.multiscale(views[0])
        r1_b, r5_b, r7_b = self.multiscale(views[1])
        locations = self._source_locations(r1_a.shape[0], r1_a.device)
        terms = amdim_terms(
            (r1_a, r1_b), (r5_a, r5_b), (r7_a, r7_b), locations, a.tclip, a.score_penalty, self.gather_distributed
        )
        logs: dict[str, float | torch.Tensor] = {
            "loss_1t5": terms.global_to_5.detach(),
            "loss_1t7": terms.global_to_7.detach(),
            "loss_5t5": terms.local_5_to_5.detach(),
            "score_penalty": terms.penalty.detach(),
        }
        return StepOutput(terms.total(), logs, r1_a)
