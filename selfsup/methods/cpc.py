"""CPC v2: Contrastive Predictive Coding on a grid of image patches (Hénaff et al., ICML 2020; the
objective of van den Oord, Li, Vinyals 2018: InfoNCE §2.3, images §3.2).

1. **Patches.** Each image is cut into a grid of overlapping ``patch_size`` patches with stride
   ``patch_stride`` (50 % overlap by default). 32 px images with 8 px patches at stride 4 give a 7x7 grid,
   28 px images a 6x6 grid, and 256 px images with 64 px patches at stride 32 the 7x7 grid of CPC v1;
   rows and columns that do not fit a whole patch are dropped.
2. **Patch augmentation** (training only, independently per patch): with ``patch_jitter`` = j > 0 each
   P px patch keeps a random (P − j) px sub-crop, padded back to P px with 0 around it (centred), so its
   content moves by up to j/2 px: the spatial jitter of CPC v1 §3.2 ("For each of the 64x64 crops we
   randomly take a 60x60 subcrop and pad them back to a 64x64 image"; j = 4), which CPC v2 keeps and extends
   ("The original CPC model spatially jitters individual patches independently. We further this logic by
   adopting the 'color dropping' method"). Then colour dropping (CPC v2): the patch keeps one random
   colour channel and the other two are set to 0, the dataset mean after normalisation (skipped for
   1-channel images, which have no colour to drop); and a horizontal flip with probability
   ``patch_flip_prob``.
3. **Encoder.** The backbone encodes every patch on its own: the patches are folded into the batch
   dimension, and the backbone must not contain BatchNorm, whose batch statistics would connect the
   patches (CPC v2 §3, "layer normalisation"): use ``norm=group`` or ``norm=layer``. h_{i,j} is the
   backbone's pooled output; a linear map (the "target head" of Lightning-Bolts' CPC task) gives the code
   z_{i,j} (``latent_dim``).
4. **Context.** A PixelCNN-style masked convolutional network per direction: residual blocks whose
   3-row convolution is padded only above, so c_{i,j} depends on the codes of rows <= i (all columns).
   ``directions`` picks any of ``top_down`` (the default), ``bottom_up``, ``left_right`` and
   ``right_left`` (CPC v2 §3 uses all four): the grid is flipped or transposed, and each direction has
   its own context network and predictors.
5. **Loss.** For every offset k in [``min_offset``, ``max_offset``] a separate linear W_k predicts
   ẑ_{i+k,j} = W_k c_{i,j}; InfoNCE (:func:`selfsup.losses.cpc_infonce`) against all the codes of the
   (global) batch, averaged over positions, then over offsets, and summed over directions. Offsets start
   at 2 because with 50 % overlap the patch one row below shares pixels with the context
   (Lightning-Bolts' ``CPCTask`` does the same).

Evaluation features (``embed``): h = the mean over the grid of the patch features of the un-augmented
image, z = the mean code (CPC v1 §3.2 mean-pools the patch features).

The engine gives one view per image (``aug.num_views=1`` in every preset): the image-level augmentation
(random resized crop, flip) is the pipeline's; the colour augmentation is the per-patch colour dropping.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from selfsup.checks import NON_NEGATIVE, PROBABILITY, at_least, one_of
from selfsup.losses.cpc import cpc_infonce
from selfsup.methods.base import Method, Progress, StepOutput, register_method
from selfsup.models.backbones import Backbone

DIRECTIONS = ("top_down", "bottom_up", "left_right", "right_left")


def patch_grid(size: int, patch: int, stride: int) -> int:
    """Patches per row for an image ``size`` px wide: ⌊(size − patch)/stride⌋ + 1."""
    if patch > size:
        raise ValueError(f"patch_size {patch} is larger than the {size} px image")
    return (size - patch) // stride + 1


def extract_patches(images: torch.Tensor, patch: int, stride: int) -> tuple[torch.Tensor, int, int]:
    """(B, C, H, W) -> ((B·rows·cols, C, patch, patch), rows, cols), patches in row-major order per image."""
    b, c = images.shape[:2]
    rows = patch_grid(images.shape[2], patch, stride)
    cols = patch_grid(images.shape[3], patch, stride)
    grid = images.unfold(2, patch, stride).unfold(3, patch, stride)  # (B, C, rows, cols, P, P)
    patches = grid.permute(0, 2, 3, 1, 4, 5).reshape(b * rows * cols, c, patch, patch)
    return patches, rows, cols


def orient(grid: torch.Tensor, direction: str) -> torch.Tensor:
    """Turn a (B, rows, cols, D) grid so that ``direction`` reads top to bottom."""
    if direction == "top_down":
        return grid
    if direction == "bottom_up":
        return grid.flip(1)
    if direction == "left_right":
        return grid.transpose(1, 2)
    if direction == "right_left":
        return grid.transpose(1, 2).flip(1)
    raise ValueError(f"unknown direction {direction!r}. Valid: {', '.join(DIRECTIONS)}")


def jitter_patches(patches: torch.Tensor, offsets: torch.Tensor, jitter: int) -> torch.Tensor:
    """Each (C, P, P) patch keeps its (P − j) px sub-crop whose top-left corner is ``offsets[n] = (dy, dx)``
    (each in 0..j), padded back to P px with zeros, j // 2 rows and columns before it: CPC v1 §3.2's "randomly
    take a 60x60 subcrop and pad them back to a 64x64 image" (P = 64, j = 4). The content moves by
    (j // 2 − dy, j // 2 − dx) px."""
    n, _, p, _ = patches.shape
    keep, before = p - jitter, jitter // 2
    grid = torch.arange(p, device=patches.device)
    inside = (grid >= before) & (grid < before + keep)  # output rows/cols that show the sub-crop
    rows = (grid[None, :] - before + offsets[:, :1]).clamp(0, p - 1)  # (N, P): source row of each output row
    cols = (grid[None, :] - before + offsets[:, 1:]).clamp(0, p - 1)
    index = torch.arange(n, device=patches.device)[:, None, None]
    moved = patches[index, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)  # (N, C, P, P)
    return moved * (inside[:, None] & inside[None, :]).to(patches.dtype)


class CausalConv2d(nn.Module):
    """A (rows x cols) convolution whose output row i sees only input rows i − rows + 1 .. i
    (zero padding above, none below; 'same' padding left and right)."""

    def __init__(self, in_channels: int, out_channels: int, rows: int = 3, cols: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, (rows, cols))
        self.padding = (cols // 2, (cols - 1) // 2, rows - 1, 0)  # left, right, top, bottom

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.padding))


class _CausalBlock(nn.Module):
    """Bottleneck residual block: 1x1 -> causal (rows x 3) -> 1x1, pre-activation, no normalisation
    (a normalisation over the map would mix rows and break causality)."""

    def __init__(self, width: int, bottleneck: int, rows: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(width, bottleneck, 1)
        self.causal = CausalConv2d(bottleneck, bottleneck, rows, 3)
        self.expand = nn.Conv2d(bottleneck, width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.reduce(F.relu(x))
        y = self.causal(F.relu(y))
        return x + self.expand(F.relu(y))


class ContextNetwork(nn.Module):
    """CPC's autoregressive context network over a code grid: (B, D, rows, cols) -> (B, width, rows, cols),
    where output row i depends only on input rows <= i (PixelCNN-style masking, CPC v1 §3.2)."""

    def __init__(self, in_dim: int, width: int, blocks: int, rows: int = 3) -> None:
        super().__init__()
        self.inp = nn.Conv2d(in_dim, width, 1)
        self.blocks = nn.Sequential(*[_CausalBlock(width, max(8, width // 4), rows) for _ in range(blocks)])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return F.relu(self.blocks(self.inp(z)))


@register_method
class CPC(Method):
    name = "cpc"
    summary = "CPC v2: InfoNCE prediction of patch codes k >= 2 rows ahead from a masked context network"
    paper = "Hénaff et al., Data-Efficient Image Recognition with Contrastive Predictive Coding, ICML 2020"
    needs_stage_maps = (
        "CPC encodes every patch of a grid separately and predicts the codes of the rows below from the context "
        "of the rows above (van den Oord et al. 2018, §3.2; Hénaff et al. 2020), with a convolutional patch "
        "encoder without BatchNorm; selfsup builds it from its own encoders (patchnet, ...) and ResNets with "
        "group or layer norm, not from timm/torchvision models"
    )

    @dataclass
    class Args:
        patch_size: int = 8
        patch_stride: int = 4
        latent_dim: int = 256
        context_dim: int = 256
        context_blocks: int = 2
        context_rows: int = 3
        min_offset: int = 2
        max_offset: int = 5
        directions: tuple[str, ...] = ("top_down",)
        num_negatives: int = 0
        color_drop: bool = True
        patch_flip_prob: float = 0.5
        patch_jitter: int = 0

    _image_level = {
        "aug.num_views": 1,
        "aug.jitter_prob": (0.0,),
        "aug.grayscale_prob": (0.0,),
        "aug.blur_prob": (0.0,),
        "aug.solarize_prob": (0.0,),
    }
    ranges = {
        "patch_size": at_least(1),
        "patch_stride": at_least(1),
        "latent_dim": at_least(1),
        "context_dim": at_least(1),
        "context_blocks": at_least(1),
        "context_rows": at_least(1),
        "min_offset": at_least(1),
        "max_offset": at_least(1),
        "directions": one_of(*DIRECTIONS),
        "num_negatives": NON_NEGATIVE,
        "patch_flip_prob": PROBABILITY,
        "patch_jitter": NON_NEGATIVE,
    }

    presets = {
        # docs/methods/cpc.md, "The imagenet preset, item by item": CPC v2 where its text could be verified
        # (LayerNorm, four directions, colour dropping per patch on top of CPC v1's patch jitter), CPC v1 §3.2
        # where v2's appendix could not be read (geometry, crop, Adam 2e-4, batch 32 x 16 = 512).
        "imagenet": {
            "backbone": "resnet50",
            "stem": "imagenet",
            "norm": "layer",
            "batch_size": 512,
            "epochs": 100,
            "optimizer": "adam",
            "base_lr": 2e-4,
            "lr_scaling": "none",
            "weight_decay": 0.0,
            "schedule": "constant",
            "warmup_epochs": 0.0,
            "patch_size": 64,
            "patch_stride": 32,
            "latent_dim": 1024,
            "context_dim": 1024,
            "context_blocks": 5,
            "directions": DIRECTIONS,
            "color_drop": True,
            "patch_jitter": 4,
            "patch_flip_prob": 0.5,
            "aug.image_size": 256,
            # v1: "randomly cropped from a 300x300 image": a crop of fixed area (256/300)^2 and aspect 1
            "aug.crop_scale": (0.73, 0.73),
            "aug.crop_ratio": (1.0, 1.0),
            **_image_level,
        },
        "small": {
            "channels_last": False,  # on the CPU channels_last halves the patch encoder's speed (docs/performance.md)
            "backbone": "resnet18",
            "stem": "cifar",
            "norm": "group",
            "batch_size": 256,
            "epochs": 200,
            "optimizer": "adam",
            "base_lr": 2e-4,
            "lr_scaling": "none",
            "weight_decay": 0.0,
            "schedule": "constant",
            "warmup_epochs": 0.0,
            "patch_size": 8,
            "patch_stride": 4,
            "latent_dim": 256,
            "context_dim": 256,
            "directions": ("top_down", "bottom_up", "left_right", "right_left"),
            "num_negatives": 4096,
            **_image_level,
        },
        "cpu": {
            "channels_last": False,  # on the CPU channels_last halves the patch encoder's speed (docs/performance.md)
            "backbone": "patchnet-small",
            "norm": "group",
            "optimizer": "adam",
            "base_lr": 1e-3,
            "lr_scaling": "none",
            "weight_decay": 0.0,
            "patch_size": 8,
            "patch_stride": 4,
            "latent_dim": 128,
            "context_dim": 128,
            "num_negatives": 1024,
            **_image_level,
        },
    }

    def __init__(self, backbone: Backbone, args: Args, gather_distributed: bool = False) -> None:
        super().__init__(backbone, args, gather_distributed)
        if any(isinstance(m, _BatchNorm) for m in backbone.modules()):
            raise ValueError(
                "CPC encodes every patch on its own, and BatchNorm's batch statistics would connect "
                "them (CPC v2 §3): build the backbone with --set norm=group or norm=layer"
            )
        unknown = [d for d in args.directions if d not in DIRECTIONS]
        if unknown or not args.directions:
            raise ValueError(f"unknown or no directions {list(args.directions)}. Valid: {', '.join(DIRECTIONS)}")
        if not 0 <= args.patch_jitter < args.patch_size:
            raise ValueError(f"need 0 <= patch_jitter < patch_size, got {args.patch_jitter} and {args.patch_size}")
        if not 1 <= args.min_offset <= args.max_offset:
            raise ValueError(f"need 1 <= min_offset <= max_offset, got {args.min_offset} and {args.max_offset}")
        self.code_head = nn.Linear(backbone.out_dim, args.latent_dim)
        self.offsets = list(range(args.min_offset, args.max_offset + 1))
        self.context = nn.ModuleDict(
            {
                d: ContextNetwork(args.latent_dim, args.context_dim, args.context_blocks, args.context_rows)
                for d in args.directions
            }
        )
        self.predictors = nn.ModuleDict(
            {
                d: nn.ModuleList([nn.Linear(args.context_dim, args.latent_dim) for _ in self.offsets])
                for d in args.directions
            }
        )

    @classmethod
    def num_views(cls, args: Args) -> int:
        return 1

    @classmethod
    def latent_dim(cls, args: Args) -> int:
        return int(args.latent_dim)

    def project(self, h: torch.Tensor) -> torch.Tensor:
        return self.code_head(h)

    # ------------------------------------------------------------------ pieces

    def _draw(self, count: int, *shape: int) -> torch.Tensor:
        """Uniform numbers for this rank's ``count`` items, drawn for the global batch (on the CPU, from
        torch's global generator) and sliced, so that 1 and N processes draw the same augmentation."""
        start, total = self.global_rows(count)
        return torch.rand(total, *shape)[start : start + count]

    def augment_patches(self, patches: torch.Tensor) -> torch.Tensor:
        """Spatial jitter (``patch_jitter``, CPC v1 §3.2), colour dropping (RGB only, CPC v2) and horizontal
        flips, independently per patch."""
        n, c = patches.shape[:2]
        draws = self._draw(n, 2).to(patches.device)
        if self.args.patch_jitter:
            offsets = (self._draw(n, 2) * (self.args.patch_jitter + 1)).long().clamp(max=self.args.patch_jitter)
            patches = jitter_patches(patches, offsets.to(patches.device), self.args.patch_jitter)
        if self.args.color_drop and c == 3:
            keep = (draws[:, 0] * 3).long().clamp(max=2)
            mask = F.one_hot(keep, 3).to(patches.dtype)[:, :, None, None]
            patches = patches * mask
        flip = draws[:, 1] < self.args.patch_flip_prob
        if bool(flip.any()):
            patches = torch.where(flip[:, None, None, None], patches.flip(-1), patches)
        return patches

    def patch_features(self, images: torch.Tensor, augment: bool) -> torch.Tensor:
        """Backbone features of every patch, (B, rows, cols, out_dim)."""
        a = self.args
        patches, rows, cols = extract_patches(images, a.patch_size, a.patch_stride)
        if augment:
            patches = self.augment_patches(patches)
        features = self.backbone(patches)
        return features.reshape(images.shape[0], rows, cols, -1)

    def context_predictions(self, codes: torch.Tensor, direction: str) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """For one direction: the oriented code grid (B, R, C, D) and, per offset k, W_k c of the rows
        that have a target k rows below, (B, R − k, C, D)."""
        grid = orient(codes, direction)
        rows = grid.shape[1]
        if self.offsets[-1] >= rows:
            raise ValueError(
                f"max_offset={self.offsets[-1]} needs a grid of more than {self.offsets[-1]} rows, "
                f"but the {direction} grid has {rows}; lower max_offset, the patch size or stride"
            )
        context = self.context[direction](grid.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        predictors = cast(nn.ModuleList, self.predictors[direction])
        predictions = [w(context[:, : rows - k]) for k, w in zip(self.offsets, predictors)]
        return grid, predictions

    # ------------------------------------------------------------------ training and evaluation

    def training_step(self, views: Sequence[torch.Tensor], progress: Progress) -> StepOutput:
        features = self.patch_features(views[0], augment=True)
        codes = self.code_head(features)
        per_offset = torch.zeros(len(self.offsets), device=codes.device)
        total = codes.new_zeros((), dtype=torch.float32)
        for direction in self.args.directions:
            grid, predictions = self.context_predictions(codes, direction)
            losses = torch.stack(
                [
                    cpc_infonce(p, grid, k, self.args.num_negatives, self.gather_distributed)
                    for k, p in zip(self.offsets, predictions)
                ]
            )
            total = total + losses.mean()
            per_offset = per_offset + losses.detach()
        embedding = codes.mean(dim=(1, 2))
        logs: dict[str, float | torch.Tensor] = {
            f"loss_k{k}": v / len(self.args.directions) for k, v in zip(self.offsets, per_offset)
        }
        return StepOutput(total, logs, embedding)

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """h = mean over the grid of the patch features (no patch augmentation), z = its code."""
        h = self.patch_features(images, augment=False).mean(dim=(1, 2))
        return h, self.project(h)
