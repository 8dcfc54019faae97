"""View pipelines: what the training engine iterates over.

A pipeline yields :class:`ViewBatch` objects, i.e. the augmented views of this rank's share of
one global batch, already on the training device. Three implementations share the interface:

* :class:`BatchedPipeline` (the default for in-memory datasets): a batch is an index into the
  uint8 image tensor; the images are moved to the device and augmented there in one batched
  call (:class:`selfsup.augment.BatchedViewAugmenter`).
* :class:`selfsup.data.streaming.StreamingPipeline` (image folders over the memory budget): DataLoader
  workers decode and crop each image to uint8 views, the colour ops run batched on the device.
  Image folders within the budget are decoded once (:mod:`selfsup.data.cache`) and use the batched path.
* :class:`PerImagePipeline` (the conventional path, only when asked for with ``data_path=per-image``):
  DataLoader workers decode each image and apply torchvision's per-image transforms.

All are deterministic: the sample order of an epoch depends only on ``(seed, epoch)``, and the
augmentation randomness only on ``(seed, epoch, batch)`` (batched), ``(seed, epoch, index)``
(per-image) or both (streaming: crops per image, colours per batch). Resuming mid-epoch therefore
replays exactly the batches an uninterrupted run sees.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import torch
from torch.utils.data import DataLoader, Dataset

from selfsup.augment import BatchedViewAugmenter, per_image_view_transforms
from selfsup.config import AugmentConfig
from selfsup.data.base import ImageDataset

_MIX = 0x9E3779B97F4A7C15


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from several integers (splitmix-style), stable across runs and machines."""
    value = 0
    for part in parts:
        value = (value ^ (int(part) + _MIX + (value << 6) + (value >> 2))) & 0xFFFFFFFFFFFFFFFF
        value = (value * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        value ^= value >> 31
    return value & 0x7FFFFFFFFFFFFFFF


@dataclass
class ViewBatch:
    """Views of one batch (large views first, then small multi-crop views) and the dataset indices."""

    views: list[torch.Tensor]
    index: torch.Tensor


class ViewPipeline(Protocol):
    batch_size: int

    def __len__(self) -> int:
        """Batches per epoch."""

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[ViewBatch]:
        """The batches of ``epoch``, starting at batch ``start_batch`` (for resuming)."""


def epoch_order(num_items: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled sample order of one epoch (the same on every rank)."""
    generator = torch.Generator().manual_seed(mix_seed(seed, epoch))
    return torch.randperm(num_items, generator=generator)


class _Sharding:
    """Global batch -> this rank's contiguous slice; the last incomplete global batch is dropped."""

    def __init__(self, num_items: int, global_batch: int, rank: int, world_size: int) -> None:
        if global_batch % world_size:
            raise ValueError(f"the global batch {global_batch} must be divisible by the number of "
                             f"processes {world_size}")
        if num_items < global_batch:
            raise ValueError(f"the dataset has {num_items} images, fewer than one batch of {global_batch}; "
                             "lower --batch-size")
        self.num_items = num_items
        self.global_batch = global_batch
        self.local_batch = global_batch // world_size
        self.rank = rank

    def __len__(self) -> int:
        return self.num_items // self.global_batch

    def local_indices(self, order: torch.Tensor, batch: int) -> torch.Tensor:
        start = batch * self.global_batch + self.rank * self.local_batch
        return order[start: start + self.local_batch]


class BatchedPipeline:
    """In-memory uint8 images, augmented in batches on the training device."""

    def __init__(self, dataset: ImageDataset, augment: AugmentConfig, batch_size: int, device: torch.device,
                 seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        if dataset.images is None:
            raise ValueError("BatchedPipeline needs an in-memory dataset")
        self.dataset = dataset
        self.images = dataset.images
        if device.type == "cuda":
            self.images = self.images.pin_memory()
        self.augmenter = BatchedViewAugmenter(augment, dataset.channels, dataset.mean, dataset.std)
        self.sharding = _Sharding(len(dataset), batch_size, rank, world_size)
        self.batch_size = batch_size
        self.device = device
        self.seed = seed
        self.rank = rank

    def __len__(self) -> int:
        return len(self.sharding)

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[ViewBatch]:
        order = epoch_order(len(self.dataset), self.seed, epoch)
        for batch in range(start_batch, len(self)):
            index = self.sharding.local_indices(order, batch)
            images = self.images[index].to(self.device, non_blocking=True)
            generator = torch.Generator().manual_seed(mix_seed(self.seed, epoch, batch, self.rank))
            yield ViewBatch(self.augmenter(images, generator), index)


class _PerImageViews(Dataset):
    """Dataset item ``(epoch, index)`` -> list of augmented views of image ``index``."""

    def __init__(self, dataset: ImageDataset, augment: AugmentConfig, seed: int) -> None:
        self.dataset = dataset
        self.transforms = per_image_view_transforms(augment, dataset.channels, dataset.mean, dataset.std)
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]) -> tuple[list[torch.Tensor], int]:
        epoch, index = item
        image = self.dataset.pil(index)
        state = torch.random.get_rng_state()
        torch.manual_seed(mix_seed(self.seed, epoch, index))
        try:
            views = [transform(image) for transform in self.transforms]
        finally:
            torch.random.set_rng_state(state)
        return views, index


class _EpochBatches:
    """Batch sampler yielding ``[(epoch, index), ...]`` lists for one epoch from ``start_batch``."""

    def __init__(self, order: torch.Tensor, sharding: _Sharding, epoch: int, start_batch: int) -> None:
        self.order, self.sharding, self.epoch, self.start = order, sharding, epoch, start_batch

    def __len__(self) -> int:
        return len(self.sharding) - self.start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for batch in range(self.start, len(self.sharding)):
            yield [(self.epoch, int(i)) for i in self.sharding.local_indices(self.order, batch)]


def _collate(items: list[tuple[list[torch.Tensor], int]]) -> tuple[list[torch.Tensor], torch.Tensor]:
    num_views = len(items[0][0])
    views = [torch.stack([item[0][v] for item in items]) for v in range(num_views)]
    return views, torch.tensor([item[1] for item in items])


class PerImagePipeline:
    """The conventional pipeline: DataLoader workers apply torchvision transforms image by image."""

    def __init__(self, dataset: ImageDataset, augment: AugmentConfig, batch_size: int, device: torch.device,
                 seed: int = 0, rank: int = 0, world_size: int = 1, num_workers: int = 2) -> None:
        self.dataset = dataset
        self.views = _PerImageViews(dataset, augment, seed)
        self.sharding = _Sharding(len(dataset), batch_size, rank, world_size)
        self.batch_size = batch_size
        self.device = device
        self.seed = seed
        self.num_workers = num_workers

    def __len__(self) -> int:
        return len(self.sharding)

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[ViewBatch]:
        order = epoch_order(len(self.dataset), self.seed, epoch)
        loader = DataLoader(self.views, batch_sampler=_EpochBatches(order, self.sharding, epoch, start_batch),
                            num_workers=self.num_workers, collate_fn=_collate,
                            pin_memory=self.device.type == "cuda", persistent_workers=False)
        for views, index in loader:
            yield ViewBatch([v.to(self.device, non_blocking=True) for v in views], index)


DATA_PATHS = ("auto", "batched", "streaming", "per-image")


def choose_data_path(dataset: ImageDataset, augment: AugmentConfig, data_path: str = "auto",
                     memory_budget_mb: int | None = None) -> str:
    """Which pipeline ``build_pipeline`` builds: ``batched`` (in-memory data), ``cached`` (an image folder
    decoded once into memory, then batched), ``streaming`` (an image folder over the memory budget) or
    ``per-image`` (the conventional pipeline, only when asked for)."""
    from selfsup.data.cache import decoded_bytes, fits_in_memory, memory_budget_bytes, stored_size

    if data_path not in DATA_PATHS:
        raise ValueError(f"unknown data_path {data_path!r}. Valid: {', '.join(DATA_PATHS)}")
    if data_path == "per-image":
        return "per-image"
    if dataset.in_memory:
        if data_path == "streaming":
            raise ValueError(f"data_path=streaming reads image files; {dataset.name} is held in memory "
                             "(use auto or batched)")
        return "batched"
    if data_path == "streaming":
        return "streaming"
    image_size = int(augment.image_size or dataset.native_size)
    if fits_in_memory(dataset, image_size, memory_budget_mb):
        return "cached"
    if data_path == "batched":
        size = stored_size(image_size)
        need = decoded_bytes(len(dataset), dataset.channels, size) / 2**20
        raise ValueError(f"data_path=batched: the {len(dataset)} images decoded at {size} px need {need:.0f} MiB, "
                         f"over the memory budget of {memory_budget_bytes(memory_budget_mb) / 2**20:.0f} MiB; "
                         "raise memory_budget_mb or use data_path=auto (streaming)")
    return "streaming"


def build_pipeline(dataset: ImageDataset, augment: AugmentConfig, batch_size: int, device: torch.device,
                   data_path: str = "auto", seed: int = 0, rank: int = 0, world_size: int = 1,
                   num_workers: int = 2, memory_budget_mb: int | None = None,
                   cache_dir: str | None = None) -> ViewPipeline:
    """The view pipeline for ``dataset`` (see :func:`choose_data_path`).

    ``auto``: in-memory datasets are augmented in batches on the device; an image folder whose decoded
    images fit ``memory_budget_mb`` is decoded once (cached on disk under ``cache_dir``,
    :mod:`selfsup.data.cache`) and then treated the same way; a larger one streams from disk
    (:mod:`selfsup.data.streaming`: workers crop, the device colours). ``per-image`` is the
    conventional torchvision pipeline.
    """
    path = choose_data_path(dataset, augment, data_path, memory_budget_mb)
    if path == "per-image":
        return PerImagePipeline(dataset, augment, batch_size, device, seed, rank, world_size, num_workers)
    if path == "streaming":
        from selfsup.data.streaming import StreamingPipeline

        return StreamingPipeline(dataset, augment, batch_size, device, seed, rank, world_size, num_workers)
    if path == "cached":
        from selfsup.data.cache import load_or_build
        from selfsup.data.streaming import default_workers

        image_size = int(augment.image_size or dataset.native_size)
        dataset = load_or_build(dataset, image_size, cache_dir, default_workers(num_workers), rank,
                                verbose=rank == 0)
    return BatchedPipeline(dataset, augment, batch_size, device, seed, rank, world_size)
