"""The streaming path, for image folders larger than the memory budget.

Work is split where it is cheapest:

* **DataLoader workers** (per image, CPU): decode the file and apply each view's geometry, i.e.
  ``RandomResizedCrop`` to the view size plus the horizontal flip, and return uint8 tensors. JPEGs are
  decoded at a reduced DCT scale (PIL's ``draft``) when the crops still get at least their output
  resolution from it: decoding a 500x375 JPEG for 96 px views then costs a fraction of a full decode
  (``docs/performance.md`` has the numbers). Only uint8 crops of the output size cross the process
  boundary: 4x less than float views and far less than decoded full images.
* **the training device** (per batch): colour jitter, grayscale, blur, solarize and normalisation,
  with the batched ops of :class:`selfsup.augment.BatchedViewAugmenter` (its colour stage).

Randomness is deterministic, like the other paths: the crops and flips of image ``index`` depend on
``(seed, epoch, index)`` only, the colour parameters of a batch on ``(seed, epoch, batch)`` (drawn for the
global batch; each rank keeps its rows).
A file that cannot be read is replaced by the next readable one (:func:`~selfsup.data.bad_images.first_readable`)
and named in one warning; more than ``max_bad_fraction`` of them fail the run.
The crop distribution is torchvision's ``RandomResizedCrop.get_params`` (vectorised in
:func:`selfsup.augment.batched.crop_boxes_from_uniforms`), on the original image size.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from selfsup.augment.batched import CROP_ATTEMPTS, BatchedViewAugmenter, crop_boxes_from_uniforms
from selfsup.augment.views import ViewSpec, view_specs
from selfsup.config import AugmentConfig
from selfsup.data.bad_images import BadImageLog, Failure, allowed_bad, first_readable
from selfsup.data.base import ImageDataset
from selfsup.data.images import MAX_BAD_FRACTION, channels_mode, open_image, to_mode
from selfsup.data.sampling import (
    EpochBatches,
    Sharding,
    ViewBatch,
    batch_generator,
    batch_labels,
    collate_views,
    epoch_order,
    mix_seed,
)

_UNIFORMS = 2 * CROP_ATTEMPTS + 3  # area and ratio attempts, top, left, flip


def draft_request(
    image_wh: tuple[int, int], boxes: list[tuple[float, float, float, float]], sizes: list[int]
) -> tuple[int, int] | None:
    """The size to ask PIL's JPEG ``draft`` for, so that every crop box ``(left, top, width, height)``
    keeps at least its output size ``sizes[v]`` in both directions; None when no reduction is possible.

    PIL picks the largest DCT scale ``1/s`` (``s`` in 1, 2, 4, 8) whose result is at least the request."""
    reduction = min(min(w / s, h / s) for (_, _, w, h), s in zip(boxes, sizes))
    if reduction < 2:
        return None
    width, height = image_wh
    return int(math.ceil(width / reduction)), int(math.ceil(height / reduction))


def crop_views(
    path: str,
    specs: list[ViewSpec],
    cfg: AugmentConfig,
    channels: int,
    generator: torch.Generator,
    use_draft: bool = True,
) -> list[torch.Tensor]:
    """Decode ``path`` and return one uint8 ``(C, S, S)`` random-resized crop (and flip) per view.

    Each view draws torchvision's ``RandomResizedCrop`` box on the original image size; the crop is
    resized with PIL's antialiased bilinear filter (torchvision's per-image semantics). An unreadable file
    raises :class:`~selfsup.data.images.BadImageError`.
    """
    mode = channels_mode(channels)
    with open_image(path) as source:
        width, height = source.size
        u = torch.rand(len(specs), _UNIFORMS, generator=generator, dtype=torch.float64)
        boxes, flips = [], []
        for v, spec in enumerate(specs):
            crop_top, crop_left, crop_h, crop_w = crop_boxes_from_uniforms(
                u[v : v + 1, :CROP_ATTEMPTS],
                u[v : v + 1, CROP_ATTEMPTS : 2 * CROP_ATTEMPTS],
                u[v : v + 1, 2 * CROP_ATTEMPTS],
                u[v : v + 1, 2 * CROP_ATTEMPTS + 1],
                (height, width),
                spec.scale,
                cfg.crop_ratio,
            )
            boxes.append((float(crop_left), float(crop_top), float(crop_w), float(crop_h)))
            flip_view = 0 if cfg.shared_flip else v
            flips.append(bool(u[flip_view, 2 * CROP_ATTEMPTS + 2] < cfg.for_view(flip_view, "flip_prob")))
        sx = sy = 1.0
        request = draft_request((width, height), boxes, [s.size for s in specs]) if use_draft else None
        if request is not None and source.draft(mode, request) is not None:
            sx, sy = source.size[0] / width, source.size[1] / height
        img = to_mode(source, mode, path)
        views = []
        for (left, top, w, h), flip, spec in zip(boxes, flips, specs):
            box = (left * sx, top * sy, (left + w) * sx, (top + h) * sy)
            view = img.resize((spec.size, spec.size), Image.Resampling.BILINEAR, box=box)
            if flip:
                view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            array = np.array(view, dtype=np.uint8)
            views.append(torch.from_numpy(array[None] if array.ndim == 2 else array.transpose(2, 0, 1)))
    return views


class StreamedCrops(Dataset):
    """Item ``(epoch, index)`` -> (uint8 crops of image ``index``, one per view; the index read; the failures).

    When file ``index`` cannot be read, the next readable one is cropped instead (with the draws of
    ``index``), so that batches keep their size; the failures go back to the main process, which warns
    (:class:`~selfsup.data.bad_images.BadImageLog`). ``known_bad`` (set by the pipeline before each epoch)
    are skipped without trying them again."""

    def __init__(
        self,
        dataset: ImageDataset,
        cfg: AugmentConfig,
        seed: int,
        use_draft: bool = True,
        max_bad_fraction: float = MAX_BAD_FRACTION,
    ) -> None:
        if dataset.files is None:
            raise ValueError("the streaming path reads image files; in-memory datasets use the batched path")
        self.files = [str(f) for f in dataset.files]
        self.cfg, self.specs = cfg, view_specs(cfg)
        self.channels, self.seed, self.use_draft = dataset.channels, seed, use_draft
        self.max_failures = allowed_bad(len(self.files), max_bad_fraction)
        self.known_bad: frozenset[int] = frozenset()

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, item: tuple[int, int]) -> tuple[list[torch.Tensor], int, list[Failure]]:
        epoch, index = item

        def crop(candidate: int) -> list[torch.Tensor]:
            generator = torch.Generator().manual_seed(mix_seed(self.seed, epoch, index))
            return crop_views(self.files[candidate], self.specs, self.cfg, self.channels, generator, self.use_draft)

        views, read, failures = first_readable(index, len(self.files), crop, self.known_bad, self.max_failures)
        if views is None:  # too many unreadable files: the main process fails the run on `failures`
            views = [torch.zeros(self.channels, spec.size, spec.size, dtype=torch.uint8) for spec in self.specs]
        return views, read, failures


def default_workers(num_workers: int) -> int:
    """``num_workers`` if positive, else one decoding process per CPU core of this process's share
    (``LOCAL_WORLD_SIZE`` processes per machine), at most 8, keeping one core for the training loop."""
    if num_workers > 0:
        return num_workers
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
    share = cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, min(8, share - 1))


class StreamingPipeline:
    """Image files cropped by DataLoader workers, coloured in batches on the training device."""

    def __init__(
        self,
        *,
        dataset: ImageDataset,
        augment: AugmentConfig,
        batch_size: int,
        device: torch.device,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        use_draft: bool = True,
        max_bad_fraction: float = MAX_BAD_FRACTION,
    ) -> None:
        self.dataset = dataset
        self.crops = StreamedCrops(dataset, augment, seed, use_draft, max_bad_fraction)
        self.bad = BadImageLog(len(dataset), max_bad_fraction)  # every rank names the files it meets
        self.augmenter = BatchedViewAugmenter(augment, dataset.channels, dataset.mean, dataset.std)
        self.sharding = Sharding(len(dataset), batch_size, rank, world_size)
        self.batch_size, self.device, self.seed, self.rank = batch_size, device, seed, rank
        self.num_workers = default_workers(num_workers)

    def __len__(self) -> int:
        return len(self.sharding)

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[ViewBatch]:
        order = epoch_order(len(self.dataset), self.seed, epoch)
        self.crops.known_bad = frozenset(self.bad.indices)
        loader = DataLoader(
            self.crops,
            batch_sampler=EpochBatches(order, self.sharding, epoch, start_batch),
            num_workers=self.num_workers,
            collate_fn=collate_views,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
            prefetch_factor=4 if self.num_workers else None,
        )
        for batch, (crops, index, failures) in enumerate(loader, start=start_batch):
            self.bad.add_failures(failures, self.crops.files)
            self.bad.check_replaced(index)
            generator = batch_generator(self.seed, epoch, batch)
            views = []
            for spec, crop in zip(self.crops.specs, crops):
                crop = crop.to(self.device, non_blocking=True)
                params = self.augmenter.sample_params(
                    len(crop), spec.index, generator, crop.shape[-2:], device=self.device, rows=self.sharding.rows()
                )
                views.append(self.augmenter.colour(crop, params))
            yield ViewBatch(views, index, batch_labels(self.dataset.labels, index))
