"""MoCo v1, v2 and v3: momentum contrast, one class with three versions (``--method moco-v1|v2|v3``).

* **v1** (He et al., CVPR 2020): query encoder f_q = backbone + Linear(d, 128); key encoder f_k an
  EMA of it, m = 0.999 constant; InfoNCE (Eq. 1, :func:`selfsup.losses.moco_infonce`) of each query
  against its key and a queue of K = 65,536 past keys, τ = 0.07.
* **v2** (Chen, Fan, Girshick, He, arXiv 2003.04297): the head becomes an MLP Linear(d, 2048)-ReLU-
  Linear(2048, 128) (no BN), τ = 0.2, blur in the augmentation, cosine LR. ``moco`` alone is v2.
* **v3** (Chen, Xie, He, ICCV 2021): no queue; the keys of the global batch, gathered without
  gradient, are the negatives; a predictor on the query branch; symmetric loss
  ctr(q1, k2) + ctr(q2, k1), each term scaled by 2τ (:func:`selfsup.losses.moco_v3_contrastive`),
  τ = 1.0; projector Linear(d, 4096)-BN-ReLU-Linear(4096, 256)-BN(affine=False), predictor
  Linear(256, 4096)-BN-ReLU-Linear(4096, 256), all linear layers without bias; the key encoder's
  momentum rises from 0.99 to 1 on a cosine.

The official order is kept: the key encoder is updated **before** the keys are computed, inside the
step (``momentum_timing = "before_forward"``, so the engine does not update it a second time).

**Queue (v1/v2).** ``queue`` (K, D) and ``queue_ptr`` are registered buffers, so checkpoints carry
them. The queue starts as random unit vectors; after the loss is computed, the normalised keys of
**every** rank (gathered in rank order, no gradient) replace the oldest K entries, FIFO. As in the
official code, K must be a multiple of the number of keys enqueued per step (the global batch, twice
that with ``symmetric``): otherwise the first step raises a ``ValueError`` that says so.

**Shuffle-BN (v1/v2).** Under DDP the key batch is gathered, permuted across ranks with a permutation that
every rank draws identically (seeded by the run seed and the step), encoded, gathered again and
un-permuted, so that BatchNorm statistics of the key encoder never come from the same images as the
queries on that rank (He et al. §3.3). In one process, the official CIFAR-10 demo's split-batch BN
(:mod:`selfsup.models.split_bn`) emulates ``shuffle_bn_groups`` devices (8, as the demo): the query encoder
normalises 8 contiguous groups of its batch separately, the key encoder 8 groups of the shuffled key batch,
so that a query and its key never share statistics. With ``shuffle_bn_groups`` equal to the number of ranks
N, one process computes exactly what N ranks do (``tests/distributed``). ``shuffle_bn=false`` turns both
off; ``--set sync_bn=true`` (SyncBN) skips the shuffle automatically.

``symmetric`` (v1/v2, off by default) adds the swapped term ctr(q2, k1) and enqueues both key
batches (MoCo's CIFAR demo, solo-learn's "MoCo v2+"). The two terms are averaged, as solo-learn
does (the demo sums them: the same up to a factor 2 on the LR).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from selfsup import distributed as dist
from selfsup.checks import POSITIVE, PROBABILITY, at_least, one_of
from selfsup.config import ConfigError, TrainConfig
from selfsup.cross_rank_bn import is_synced
from selfsup.losses.float32 import at_least_float32
from selfsup.losses.moco import moco_infonce, moco_v3_contrastive
from selfsup.methods.base import Progress, StepOutput, register_method
from selfsup.methods.momentum import MomentumMethod
from selfsup.models.backbones import Backbone
from selfsup.models.heads import mlp
from selfsup.models.split_bn import make_splittable, split_batchnorm

VERSIONS = ("v1", "v2", "v3")


@torch.no_grad()
def enqueue(queue: torch.Tensor, queue_ptr: torch.Tensor, keys: torch.Tensor) -> None:
    """FIFO: write ``keys`` (n, D) over the oldest entries of ``queue`` (K, D) at ``queue_ptr``, in place.

    Raises ``ValueError`` unless K is a multiple of n (the official code asserts it), which keeps
    every write contiguous; the pointer wraps around to 0 after K/n steps. The write positions are computed
    on the queue's device, so that a GPU step does not wait for the host to read the pointer.
    """
    size, n = queue.shape[0], keys.shape[0]
    if n == 0 or size % n:
        suggestion = n * max(1, round(size / max(n, 1)))
        raise ValueError(
            f"MoCo's queue_size ({size}) must be a multiple of the number of keys enqueued per step ({n}: the "
            f"global batch size, times 2 with symmetric=true). Use e.g. --set queue_size={suggestion}, or "
            f"change the batch size."
        )
    rows = (queue_ptr[0] + torch.arange(n, device=queue.device)) % size
    queue.index_copy_(0, rows, keys.to(queue.dtype))
    queue_ptr.add_(n).remainder_(size)


def _shared_permutation(n: int, seed: int, device: torch.device) -> torch.Tensor:
    """A permutation of ``range(n)`` that is the same on every rank (no communication needed)."""
    generator = torch.Generator().manual_seed(seed % (2**63 - 1))
    return torch.randperm(n, generator=generator).to(device)


# augmentation recipes, as preset fragments
_AUG_V1 = {  # InstDisc's recipe: jitter (0.4, 0.4, 0.4, 0.4) always, grayscale 0.2, no blur
    "aug.crop_scale": (0.2, 1.0),
    "aug.brightness": 0.4,
    "aug.contrast": 0.4,
    "aug.saturation": 0.4,
    "aug.hue": 0.4,
    "aug.jitter_prob": (1.0,),
    "aug.grayscale_prob": (0.2,),
    "aug.blur_prob": (0.0,),
    "aug.solarize_prob": (0.0,),
}
_AUG_V2 = {  # --aug-plus: jitter (0.4, 0.4, 0.4, 0.1) p 0.8, grayscale 0.2, blur p 0.5
    "aug.crop_scale": (0.2, 1.0),
    "aug.brightness": 0.4,
    "aug.contrast": 0.4,
    "aug.saturation": 0.4,
    "aug.hue": 0.1,
    "aug.jitter_prob": (0.8,),
    "aug.grayscale_prob": (0.2,),
    "aug.blur_prob": (0.5,),
    "aug.solarize_prob": (0.0,),
}
_AUG_V3 = {  # BYOL's asymmetric recipe with crop_min 0.2 (every ResNet config of moco-v3)
    "aug.crop_scale": (0.2, 1.0),
    "aug.brightness": 0.4,
    "aug.contrast": 0.4,
    "aug.saturation": 0.2,
    "aug.hue": 0.1,
    "aug.jitter_prob": (0.8,),
    "aug.grayscale_prob": (0.2,),
    "aug.blur_prob": (1.0, 0.1),
    "aug.solarize_prob": (0.0, 0.2),
}
# the v2 recipe is the method's `presets` (``moco`` alone); v1 and v3 override every key it sets
_SGD_EPOCHWISE = {"optimizer": "sgd", "momentum": 0.9, "warmup_epochs": 0, "schedule_per_step": False}


@register_method
class MoCo(MomentumMethod):
    name = "moco"
    summary = "InfoNCE vs an EMA key encoder: queue of keys (v1/v2), in-batch keys + predictor (v3)"
    paper = (
        "He et al., Momentum Contrast, CVPR 2020; Chen et al., Improved Baselines with Momentum "
        "Contrastive Learning, 2020; Chen, Xie, He, An Empirical Study of Training Self-Supervised "
        "Vision Transformers, ICCV 2021"
    )
    momentum_timing = "before_forward"

    @dataclass
    class Args:
        version: str = "v2"
        latent_dim: int = 128
        hidden_dim: int = 2048
        pred_hidden_dim: int = 4096
        temperature: float = 0.2
        queue_size: int = 65536
        momentum_base: float = 0.999
        momentum_final: float = 1.0
        momentum_cosine: bool = False
        symmetric: bool = False
        shuffle_bn: bool = True
        shuffle_bn_groups: int = 8
        projector_layers: int = 2
        predictor_last_bn: bool = False

    ranges = {
        "shuffle_bn_groups": at_least(1),
        "projector_layers": at_least(2),
        "version": one_of(*VERSIONS),
        "latent_dim": at_least(1),
        "hidden_dim": at_least(1),
        "pred_hidden_dim": at_least(1),
        "temperature": POSITIVE,
        "queue_size": at_least(1),
        "momentum_base": PROBABILITY,
        "momentum_final": PROBABILITY,
    }

    presets = {
        "imagenet": {
            "backbone": "resnet50",
            "stem": "imagenet",
            "zero_init_residual": False,
            "batch_size": 256,
            "epochs": 200,
            **_SGD_EPOCHWISE,
            "base_lr": 0.03,
            "weight_decay": 1e-4,
            "schedule": "warmup_cosine",
            "version": "v2",
            "latent_dim": 128,
            "hidden_dim": 2048,
            "temperature": 0.2,
            "queue_size": 65536,
            "momentum_base": 0.999,
            "momentum_cosine": False,
            "symmetric": False,
            **_AUG_V2,
        },
        # solo-learn's "MoCo V2+" CIFAR recipe (scripts/pretrain/cifar/mocov2plus.yaml, symmetric_weak aug)
        "small": {
            "batch_size": 256,
            "epochs": 1000,
            "optimizer": "sgd",
            "momentum": 0.9,
            "base_lr": 0.3,
            "weight_decay": 1e-4,
            "schedule": "warmup_cosine",
            "warmup_epochs": 10,
            "schedule_per_step": True,
            "version": "v2",
            "latent_dim": 256,
            "hidden_dim": 2048,
            "temperature": 0.2,
            "queue_size": 32768,
            "momentum_base": 0.99,
            "momentum_final": 0.999,
            "momentum_cosine": True,
            "symmetric": True,
            **_AUG_V2,
            "aug.crop_scale": (0.08, 1.0),
        },
        "cpu": {
            "version": "v2",
            "latent_dim": 128,
            "hidden_dim": 512,
            "temperature": 0.2,
            "queue_size": 4096,
            "momentum_base": 0.99,
            "momentum_cosine": False,
            "symmetric": True,
        },
    }

    variants = {
        "v1": {
            "imagenet": {
                "version": "v1",
                "temperature": 0.07,
                "schedule": "step",
                "lr_milestones": (120, 160),
                "lr_gamma": 0.1,
                **_AUG_V1,
            },
            # MoCo's CIFAR-10 demo (colab/moco_cifar10_demo.ipynb): ResNet-18 with fc -> 128, K 4096,
            # m 0.99, T 0.1, lr 0.06 at batch 512, wd 5e-4, cosine per epoch, 200 epochs
            "small": {
                "version": "v1",
                "batch_size": 512,
                "epochs": 200,
                **_SGD_EPOCHWISE,
                "base_lr": 0.03,
                "weight_decay": 5e-4,
                "schedule": "warmup_cosine",
                "latent_dim": 128,
                "temperature": 0.1,
                "queue_size": 4096,
                "momentum_base": 0.99,
                "momentum_cosine": False,
                "symmetric": False,
                **_AUG_V2,
                "aug.crop_scale": (0.08, 1.0),
                "aug.blur_prob": (0.0,),
            },
            "cpu": {"version": "v1", "temperature": 0.1},
        },
        "v2": {},
        "v3": {
            "imagenet": {
                "version": "v3",
                "sync_bn": True,  # main_moco.py converts the whole model with nn.SyncBatchNorm
                "batch_size": 4096,
                "epochs": 100,
                "optimizer": "lars",
                "base_lr": 0.6,
                "weight_decay": 1e-6,
                "schedule": "warmup_cosine",
                "warmup_epochs": 10,
                "schedule_per_step": True,
                "zero_init_residual": True,
                "latent_dim": 256,
                "hidden_dim": 4096,
                "pred_hidden_dim": 4096,
                "temperature": 1.0,
                "momentum_base": 0.99,
                "momentum_final": 1.0,
                "momentum_cosine": True,
                **_AUG_V3,
            },
            # solo-learn's CIFAR recipe (scripts/pretrain/cifar/mocov3.yaml, asymmetric aug)
            "small": {
                "version": "v3",
                "batch_size": 256,
                "epochs": 1000,
                "optimizer": "lars",
                "base_lr": 0.3,
                "weight_decay": 1e-6,
                "lars_eta": 0.02,
                "lars_clip": True,
                "warmup_epochs": 10,
                "schedule_per_step": True,
                "latent_dim": 256,
                "hidden_dim": 4096,
                "pred_hidden_dim": 4096,
                "temperature": 0.2,
                "momentum_base": 0.99,
                "momentum_final": 1.0,
                "momentum_cosine": True,
                **_AUG_V3,
                "aug.crop_scale": (0.08, 1.0),
                "aug.blur_prob": (0.0,),
            },
            # MoCo v3's ViT recipe (moco-v3 CONFIG.md, main_moco.py, vits.py, builder.py): AdamW 1.5e-4 x B/256,
            # wd 0.1 on every trained parameter (main_moco.py gives AdamW model.parameters(): no exclusions),
            # 300 epochs with 40 of warmup, tau 0.2, the frozen random patch projection, a fixed 2-D sin-cos
            # position embedding, 12 heads (vits.py's vit_small has 12, DeiT-S 6), the 3-layer projector and the
            # predictor ending in an affine-free BN, and the default crop 0.08 (the ViT commands pass no
            # --crop-min)
            "imagenet+vit": {
                "epochs": 300,
                "optimizer": "adamw",
                "base_lr": 1.5e-4,
                "weight_decay": 0.1,
                "weight_decay_exclude": False,
                "warmup_epochs": 40,
                "temperature": 0.2,
                "freeze_patch_embed": True,
                "pos_embed": "sincos",
                "backbone_args": ("num_heads=12",),
                "projector_layers": 3,
                "predictor_last_bn": True,
                "aug.crop_scale": (0.08, 1.0),
            },
            # solo-learn's MoCo v3 for ViTs (mocov3.py: 3-layer projector, predictor with a final BN for every
            # backbone but ResNets) on the shared small ViT optimiser
            "small+vit": {"projector_layers": 3, "predictor_last_bn": True},
            "cpu+vit": {"projector_layers": 3, "predictor_last_bn": True},
            "cpu": {
                "version": "v3",
                "latent_dim": 128,
                "hidden_dim": 1024,
                "pred_hidden_dim": 1024,
                "temperature": 0.2,
                "momentum_base": 0.99,
                "momentum_cosine": True,
            },
        },
    }

    # made by make_momentum_copy
    momentum_backbone: nn.Module
    momentum_projector: nn.Module
    # registered buffers (v1/v2 only)
    queue: torch.Tensor
    queue_ptr: torch.Tensor

    def __init__(self, backbone: Backbone, args: Args, gather_distributed: bool = False) -> None:
        super().__init__(backbone, args, gather_distributed)
        if args.version not in VERSIONS:
            raise ValueError(f"unknown MoCo version {args.version!r}. Valid: {', '.join(VERSIONS)}")
        d = backbone.out_dim
        if args.version == "v1":
            self.projector = mlp([d, args.latent_dim])
        elif args.version == "v2":
            self.projector = mlp([d, args.hidden_dim, args.latent_dim], hidden_bn=False)
        else:  # moco-v3 builder.py: _build_mlp (no biases, affine-free last BN), 3 projector layers for ViTs
            hidden = [args.hidden_dim] * (args.projector_layers - 1)
            self.projector = mlp([d, *hidden, args.latent_dim], bias=False, last_bn=True)
            self.predictor = mlp(
                [args.latent_dim, args.pred_hidden_dim, args.latent_dim], bias=False, last_bn=args.predictor_last_bn
            )
        if args.version != "v3":
            make_splittable(self.backbone)  # the key encoder, a copy, is splittable too
        self.make_momentum_copy("backbone")
        self.make_momentum_copy("projector")
        if args.version != "v3":
            if args.queue_size < 1:
                raise ValueError(f"queue_size must be >= 1, got {args.queue_size}")
            self.register_buffer("queue", F.normalize(torch.randn(args.queue_size, args.latent_dim), dim=1))
            self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    # ------------------------------------------------------------------ keys

    def _shuffle_bn_active(self) -> bool:
        """Shuffle-BN runs for v1/v2 under DDP, unless the key encoder already uses SyncBN."""
        if not (
            self.args.shuffle_bn and self.args.version != "v3" and self.gather_distributed and dist.world_size() > 1
        ):
            return False
        return not is_synced(self.momentum_backbone)

    @classmethod
    def check_config(cls, args: Args, cfg: TrainConfig) -> None:
        """In one process, split-batch BN needs a batch of ``shuffle_bn_groups`` groups of 2 or more images."""
        groups = args.shuffle_bn_groups
        one_process = int(os.environ.get("WORLD_SIZE", "1") or 1) == 1
        splits = args.version != "v3" and args.shuffle_bn and groups > 1 and one_process
        if splits and (cfg.batch_size % groups or cfg.batch_size // groups < 2):
            raise ConfigError(
                f"moco's split-batch BN cuts the batch into shuffle_bn_groups={groups} groups: batch_size="
                f"{cfg.batch_size} must be a multiple of {groups} with 2 or more images per group "
                "(or set shuffle_bn_groups to a divisor of the batch)"
            )

    def _split_groups(self) -> int:
        """Split-batch BN groups in one process (1: off, e.g. under DDP, where each rank is a group)."""
        a = self.args
        if not a.shuffle_bn or a.version == "v3" or (self.gather_distributed and dist.world_size() > 1):
            return 1
        return a.shuffle_bn_groups

    def _queries(self, x: torch.Tensor) -> torch.Tensor:
        with split_batchnorm(self.backbone, self._split_groups()):
            return self.project(self.backbone(x))

    @torch.no_grad()
    def _key_encoder(self, x: torch.Tensor) -> torch.Tensor:
        return self.momentum_projector(self.momentum_backbone(x))

    @torch.no_grad()
    def encode_keys(self, x: torch.Tensor, seed: int = 0) -> torch.Tensor:
        """Normalised keys of the local images ``x`` from the momentum encoder (no gradient).

        With Shuffle-BN active, the key encoder sees a slice of the global batch shuffled by a
        permutation that every rank derives from ``seed``; the keys come back in the local order.
        """
        groups = self._split_groups()
        if groups > 1:  # one process: split-batch BN over groups of the shuffled batch
            perm = _shared_permutation(x.shape[0], seed, x.device)
            with split_batchnorm(self.momentum_backbone, groups):
                k = self._key_encoder(x[perm])
            return F.normalize(at_least_float32(k[torch.argsort(perm)]), dim=1)
        if not self._shuffle_bn_active():
            return F.normalize(at_least_float32(self._key_encoder(x)), dim=1)
        n, rank = x.shape[0], dist.rank()
        x_all = dist.gather(x, with_grad=False)
        perm = _shared_permutation(x_all.shape[0], seed, x.device)
        k = self._key_encoder(x_all[perm[rank * n : (rank + 1) * n]])
        k_all = dist.gather(k.contiguous(), with_grad=False)  # row j is the key of image perm[j]
        unshuffle = torch.argsort(perm)
        return F.normalize(at_least_float32(k_all[unshuffle[rank * n : (rank + 1) * n]]), dim=1)

    # ------------------------------------------------------------------ steps

    def training_step(self, views: Sequence[torch.Tensor], progress: Progress) -> StepOutput:
        tau = self.momentum_at(progress)
        self.momentum_update(tau)  # the official order: update the key encoder, then compute the keys
        if self.args.version == "v3":
            return self._v3_step(views, tau)
        return self._queue_step(views, progress, tau)

    def _queue_step(self, views: Sequence[torch.Tensor], progress: Progress, tau: float) -> StepOutput:
        a = self.args
        x1, x2 = views[0], views[1]
        seed = torch.initial_seed() * 1_000_003 + 2 * progress.step
        queue = self.queue.clone()  # the queue is overwritten below; autograd needs the old values
        z1 = self._queries(x1)
        k2 = self.encode_keys(x2, seed)
        loss = moco_infonce(z1, k2, queue, a.temperature)
        new_keys = [dist.gather(k2, with_grad=False) if self.gather_distributed else k2]
        if a.symmetric:
            z2 = self._queries(x2)
            k1 = self.encode_keys(x1, seed + 1)
            loss = 0.5 * (loss + moco_infonce(z2, k1, queue, a.temperature))
            new_keys.append(dist.gather(k1, with_grad=False) if self.gather_distributed else k1)
        enqueue(self.queue, self.queue_ptr, torch.cat(new_keys))
        return StepOutput(loss, {"tau": tau}, z1)

    def _v3_step(self, views: Sequence[torch.Tensor], tau: float) -> StepOutput:
        a = self.args
        x1, x2 = views[0], views[1]
        z1 = self.project(self.backbone(x1))
        z2 = self.project(self.backbone(x2))
        q1, q2 = self.predictor(z1), self.predictor(z2)
        k1, k2 = self.encode_keys(x1), self.encode_keys(x2)
        loss = moco_v3_contrastive(q1, k2, a.temperature, self.gather_distributed) + moco_v3_contrastive(
            q2, k1, a.temperature, self.gather_distributed
        )
        return StepOutput(loss, {"tau": tau}, z1)
