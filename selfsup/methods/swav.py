"""SwAV (Caron, Misra, Mairal, Goyal, Bojanowski, Joulin, NeurIPS 2020): swapped assignments between views.

Crops → backbone → projector Linear(d, 2048)-BN-ReLU-Linear(2048, 128) → L2-normalise (z) → prototypes
Linear(128, K, no bias), whose rows are re-normalised to unit length at the start of every step (under
no_grad, as ``main_swav.py``), so that the scores are cosine similarities. The codes of the two large
crops come from Sinkhorn-Knopp and every other crop predicts them (:func:`selfsup.losses.swav`).

Details that follow the official code (facebookresearch/swav ``main_swav.py``, ``src/resnet50.py``):

* multi-crop: the engine passes the ``aug.num_views`` large crops first, then ``aug.small_crops`` small
  ones; the backbone runs once per resolution (consecutive crops of equal size are concatenated) and
  the projector once on all crops, so its BatchNorm sees every crop;
* prototypes frozen (their gradient set to None in :meth:`before_optimizer_step`) for the first
  ``freeze_prototypes_epochs`` epochs (313 iterations ≈ 1 epoch at batch 4096);
* the optional queue (``queue_length`` > 0, from epoch ``queue_start_epoch``) stores the embeddings
  of the assignment crops, newest first; its length is rounded down to a multiple of the global
  batch; once full, the prototype scores of its rows are prepended before Sinkhorn.

**Prototype scores in float32 (a departure).** The scores s = C z (of the batch and of the queue) are
computed with autocast disabled, in float32, as the losses are (:mod:`selfsup.losses.float32`):
Sinkhorn takes exp(s/ε) with ε = 0.05, and bf16's ~3 significant digits on s ∈ [−1, 1] (a rounding
error up to 2⁻⁹ ≈ 0.002 near |s| = 1) become errors up to about 4 % in exp(s/ε). The official code,
under apex O1 (``--use_fp16 true`` in every script), computes the prototype layer's ``F.linear`` in fp16
(10 mantissa bits; bf16 has 7).

**The queue under DDP.** The official code keeps a queue shard per GPU. Here the queue is a buffer
that holds the *global* embeddings (gathered without gradient) and is identical on every rank, so
that (a) DistributedDataParallel's buffer broadcast from rank 0 cannot overwrite a rank's own shard,
(b) checkpoints written by rank 0 hold the whole queue, and (c) the run equals one process. Each rank
prepends only its own 1/world slice of the rows, so that every queued embedding enters the
all-reduced Sinkhorn sums exactly once, as in the official code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from selfsup import distributed as dist
from selfsup.checks import NON_NEGATIVE, POSITIVE, at_least
from selfsup.losses.float32 import at_least_float32
from selfsup.losses.swav import swav
from selfsup.methods.base import Method, Progress, StepOutput, register_method
from selfsup.models.backbones import Backbone
from selfsup.models.heads import mlp


@register_method
class SwAV(Method):
    name = "swav"
    summary = "online clustering: swapped prediction of Sinkhorn codes, multi-crop"
    paper = "Caron et al., Unsupervised Learning of Visual Features by Contrasting Cluster Assignments, NeurIPS 2020"

    @dataclass
    class Args:
        latent_dim: int = 128
        hidden_dim: int = 2048
        nmb_prototypes: int = 3000
        temperature: float = 0.1
        epsilon: float = 0.05
        sinkhorn_iterations: int = 3
        crops_for_assign: tuple[int, ...] = (0, 1)
        freeze_prototypes_epochs: float = 1.0
        queue_length: int = 0
        queue_start_epoch: int = 15

    ranges = {
        "latent_dim": at_least(1),
        "hidden_dim": at_least(1),
        "nmb_prototypes": at_least(1),
        "temperature": POSITIVE,
        "epsilon": POSITIVE,
        "sinkhorn_iterations": at_least(1),
        "crops_for_assign": NON_NEGATIVE,
        "freeze_prototypes_epochs": NON_NEGATIVE,
        "queue_length": NON_NEGATIVE,
        "queue_start_epoch": NON_NEGATIVE,
    }

    presets = {
        # bash script swav_800ep_pretrain.sh: 64 GPUs x 64 = 4096, LARC on every parameter, 75.3% top-1.
        "imagenet": {
            "backbone": "resnet50",
            "stem": "imagenet",
            # --sync_bn apex --syncbn_process_group_size 8 in the large-batch scripts: BN statistics of one
            # 8-GPU node (8 x 64 images per crop size); the batch-256 scripts sync globally
            "sync_bn": True,
            "sync_bn_group": 8,
            "batch_size": 4096,
            "epochs": 800,
            "optimizer": "lars",
            "lars_exclude_1d": False,
            "base_lr": 4.8,
            "lr_scaling": "none",
            "final_lr_ratio": 0.001,
            "warmup_epochs": 10,
            "warmup_start_ratio": 0.0625,
            "weight_decay": 1e-6,
            "latent_dim": 128,
            "hidden_dim": 2048,
            "nmb_prototypes": 3000,
            "temperature": 0.1,
            "epsilon": 0.05,
            "freeze_prototypes_epochs": 1.0,
            "queue_length": 0,
            "aug.num_views": 2,
            "aug.large_crop_scale": (0.14, 1.0),
            "aug.small_crops": 6,
            "aug.small_size": 96,
            "aug.small_crop_scale": (0.05, 0.14),
            "aug.brightness": 0.8,
            "aug.contrast": 0.8,
            "aug.saturation": 0.8,
            "aug.hue": 0.2,
            "aug.blur_prob": (0.5,),
        },
        # solo-learn's CIFAR recipe (89.17%: LARS 0.6 at 256, eta 0.02, clip, 1-D params excluded, queue 3840
        # from epoch 50, prototypes frozen 2 epochs, K = 3000), plus a scaled-down multi-crop (2x32 + 4x16 px)
        # in the proportions of the ImageNet recipe; solo-learn trains with the 2 large crops only.
        "small": {
            "batch_size": 256,
            "epochs": 1000,
            "optimizer": "lars",
            "base_lr": 0.6,
            "weight_decay": 1e-6,
            "warmup_epochs": 10,
            "lars_eta": 0.02,
            "lars_clip": True,
            "latent_dim": 128,
            "hidden_dim": 2048,
            "nmb_prototypes": 3000,
            "temperature": 0.1,
            "freeze_prototypes_epochs": 2.0,
            "queue_length": 3840,
            "queue_start_epoch": 50,
            "aug.num_views": 2,
            "aug.large_crop_scale": (0.14, 1.0),
            "aug.small_crops": 4,
            "aug.small_size": 16,
            "aug.small_crop_scale": (0.05, 0.14),
            "aug.brightness": 0.8,
            "aug.contrast": 0.8,
            "aug.saturation": 0.8,
            "aug.hue": 0.2,
        },
        # two crops only (multi-crop costs compute); LARC on every parameter as the paper.
        "cpu": {
            "lars_exclude_1d": False,
            "final_lr_ratio": 0.001,
            "latent_dim": 128,
            "hidden_dim": 512,
            "nmb_prototypes": 300,
            "freeze_prototypes_epochs": 0.5,
            "queue_length": 0,
        },
    }

    queue: torch.Tensor | None  # registered buffer (None without a queue)

    def __init__(self, backbone: Backbone, args: Args, gather_distributed: bool = False) -> None:
        super().__init__(backbone, args, gather_distributed)
        if not args.crops_for_assign or len(set(args.crops_for_assign)) != len(args.crops_for_assign):
            raise ValueError(f"crops_for_assign must list distinct crop indices, got {args.crops_for_assign}")
        if args.queue_length < 0:
            raise ValueError(f"queue_length must be >= 0, got {args.queue_length}")
        self.projector = mlp([backbone.out_dim, args.hidden_dim, args.latent_dim])
        self.prototypes = nn.Linear(args.latent_dim, args.nmb_prototypes, bias=False)
        queue_shape = (len(args.crops_for_assign), args.queue_length, args.latent_dim)
        # without a queue the buffer is None: nothing in the state dict
        self.register_buffer("queue", torch.zeros(queue_shape) if args.queue_length else None)

    def project(self, h: torch.Tensor) -> torch.Tensor:
        """The unit embedding z (the input of the prototypes)."""
        return F.normalize(self.projector(h), dim=1)

    # ------------------------------------------------------------------ pieces of the step

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        """Project every prototype back onto the unit sphere (done before every step, as the official code)."""
        self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))

    def prototype_scores(self, z: torch.Tensor) -> torch.Tensor:
        """s = C z, the cosine similarities of unit embeddings z (N, latent_dim) to the K unit prototypes,
        (N, K) in (at least) float32 with autocast disabled: the input of the Sinkhorn-Knopp codes exp(s/ε) and of the
        swapped prediction's softmax(s/τ) (SwAV §3.1, Eq. 2). Gradients reach z and the prototypes as through
        ``self.prototypes(z)``."""
        with torch.autocast(device_type=z.device.type, enabled=False):
            return F.linear(at_least_float32(z), at_least_float32(self.prototypes.weight))

    def embed_crops(self, views: Sequence[torch.Tensor]) -> torch.Tensor:
        """Unit embeddings of every crop, concatenated in crop order: one backbone pass per run of
        equal-size crops, one projector pass over all crops."""
        features, start = [], 0
        while start < len(views):
            end = start + 1
            while end < len(views) and views[end].shape[-2:] == views[start].shape[-2:]:
                end += 1
            features.append(self.backbone(torch.cat(list(views[start:end]))))
            start = end
        return self.project(torch.cat(features))

    def queue_size(self, batch: int) -> int:
        """The queue length actually used: ``queue_length`` rounded down to a multiple of the global batch."""
        world = dist.world_size() if self.gather_distributed else 1
        global_batch = batch * world
        size = self.args.queue_length - self.args.queue_length % global_batch
        if self.args.queue_length and size == 0:
            raise ValueError(
                f"queue_length={self.args.queue_length} is shorter than the global batch {global_batch}; "
                "set it to a multiple of the batch (or 0 for no queue)"
            )
        return size

    @torch.no_grad()
    def queue_scores(self, batch: int) -> list[torch.Tensor | None] | None:
        """Prototype scores of this rank's slice of the queue, per assignment crop, once the queue is full."""
        size = self.queue_size(batch)
        if self.queue is None or not size or bool((self.queue[:, size - 1] == 0).all()):
            return None
        world = dist.world_size() if self.gather_distributed else 1
        share = size // world
        start = (dist.rank() if self.gather_distributed else 0) * share
        rows = self.queue[:, start : start + share]
        return [self.prototype_scores(rows[i]) for i in range(len(rows))]

    @torch.no_grad()
    def push_to_queue(self, embeddings: Sequence[torch.Tensor]) -> None:
        """Shift the queue by one global batch and put the newest embeddings (gathered, no grad) in front."""
        if self.queue is None:
            return
        size = self.queue_size(embeddings[0].shape[0])
        for i, z in enumerate(embeddings):
            z = z.detach().to(self.queue.dtype)
            if self.gather_distributed:
                z = dist.gather(z, with_grad=False)
            n = z.shape[0]
            self.queue[i, n:size] = self.queue[i, : size - n].clone()
            self.queue[i, :n] = z

    # ------------------------------------------------------------------ the step and its hooks

    def training_step(self, views: Sequence[torch.Tensor], progress: Progress) -> StepOutput:
        a = self.args
        if len(views) < 2 or max(a.crops_for_assign) >= len(views):
            raise ValueError(
                f"SwAV got {len(views)} crops, but crops_for_assign={a.crops_for_assign} (the large crops come first)"
            )
        self.normalize_prototypes()
        z_all = self.embed_crops(views)
        scores = list(self.prototype_scores(z_all).chunk(len(views)))
        z = z_all.chunk(len(views))
        use_queue = a.queue_length > 0 and progress.epoch >= a.queue_start_epoch
        extra = self.queue_scores(z[0].shape[0]) if use_queue else None
        if use_queue:
            self.push_to_queue([z[c] for c in a.crops_for_assign])
        loss, _ = swav(
            scores, a.temperature, a.epsilon, a.sinkhorn_iterations, a.crops_for_assign, self.gather_distributed, extra
        )
        logs: dict[str, float | torch.Tensor] = {
            "queue_used": float(extra is not None),
            "prototypes_frozen": float(self.prototypes_frozen(progress)),
        }
        return StepOutput(loss, logs, z[0])

    def prototypes_frozen(self, progress: Progress) -> bool:
        return progress.epoch_fraction < self.args.freeze_prototypes_epochs

    def before_optimizer_step(self, progress: Progress) -> None:
        """Freeze the prototypes during the first ``freeze_prototypes_epochs`` (gradient set to None)."""
        if self.prototypes_frozen(progress):
            for parameter in self.prototypes.parameters():
                parameter.grad = None
