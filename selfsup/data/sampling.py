"""What every view pipeline shares: the epoch's sample order, its split over ranks, the seeds of its random
draws, the collation of worker outputs, and the batch it yields.

All pipelines (:mod:`selfsup.data.in_memory`, :mod:`selfsup.data.streaming`, :mod:`selfsup.data.per_image`)
are deterministic: the order of an epoch depends only on ``(seed, epoch)``, and the augmentation randomness
only on ``(seed, epoch, batch)`` (drawn for the global batch, each rank keeping its rows) or ``(seed, epoch,
image)``, all mixed by :func:`mix_seed`: N ranks see exactly the views one process would. Resuming at
batch ``k`` of an epoch therefore replays exactly the batches an uninterrupted run sees.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import torch

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
    """This rank's share of one global batch: its views (large first, then small multi-crop views), on the
    training device, the dataset indices of its images and, when the dataset has them, their labels (-1 for
    unlabelled images)."""

    views: list[torch.Tensor]
    index: torch.Tensor
    labels: torch.Tensor | None = None


class ViewPipeline(Protocol):
    """What the engine iterates over."""

    batch_size: int

    def __len__(self) -> int:
        """Batches per epoch."""
        ...

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[ViewBatch]:
        """The batches of ``epoch``, starting at batch ``start_batch`` (for resuming)."""
        ...


def epoch_order(num_items: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled sample order of one epoch (the same on every rank)."""
    generator = torch.Generator().manual_seed(mix_seed(seed, epoch))
    return torch.randperm(num_items, generator=generator)


def batch_generator(seed: int, epoch: int, batch: int) -> torch.Generator:
    """The CPU generator of one global batch's augmentation parameters: the same on every rank, which draws
    the parameters of the whole global batch and keeps its own rows (:meth:`Sharding.rows`), so that N
    ranks augment exactly as one process would."""
    return torch.Generator().manual_seed(mix_seed(seed, epoch, batch, 0))


class Sharding:
    """Global batch -> this rank's contiguous slice; the last incomplete global batch is dropped."""

    def __init__(self, num_items: int, global_batch: int, rank: int, world_size: int) -> None:
        if global_batch % world_size:
            raise ValueError(
                f"the global batch {global_batch} must be divisible by the number of processes {world_size}"
            )
        if num_items < global_batch:
            raise ValueError(
                f"the dataset has {num_items} images, fewer than one batch of {global_batch}; lower --batch-size"
            )
        self.num_items = num_items
        self.global_batch = global_batch
        self.local_batch = global_batch // world_size
        self.rank = rank

    def __len__(self) -> int:
        return self.num_items // self.global_batch

    def rows(self) -> tuple[int, int]:
        """``(first row, global batch)``: where this rank's slice sits in the global batch."""
        return self.rank * self.local_batch, self.global_batch

    def local_indices(self, order: torch.Tensor, batch: int) -> torch.Tensor:
        start = batch * self.global_batch + self.rank * self.local_batch
        return order[start : start + self.local_batch]


class EpochBatches:
    """A DataLoader batch sampler: ``[(epoch, index), ...]`` lists of one epoch from batch ``start_batch``,
    so that workers can seed each image's draws from ``(seed, epoch, index)``."""

    def __init__(self, order: torch.Tensor, sharding: Sharding, epoch: int, start_batch: int) -> None:
        self.order, self.sharding, self.epoch, self.start = order, sharding, epoch, start_batch

    def __len__(self) -> int:
        return len(self.sharding) - self.start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for batch in range(self.start, len(self.sharding)):
            yield [(self.epoch, int(i)) for i in self.sharding.local_indices(self.order, batch)]


def collate_views(
    items: list[tuple[list[torch.Tensor], int, list[tuple[int, str]]]],
) -> tuple[list[torch.Tensor], torch.Tensor, list[tuple[int, str]]]:
    """Worker items ``(views of one image, index, unreadable files met)`` -> (one stacked tensor per view,
    indices, all the unreadable ``(index, reason)`` of the batch)."""
    num_views = len(items[0][0])
    views = [torch.stack([item[0][v] for item in items]) for v in range(num_views)]
    failures = [failure for item in items for failure in item[2]]
    return views, torch.tensor([item[1] for item in items]), failures


def batch_labels(labels: torch.Tensor | None, index: torch.Tensor) -> torch.Tensor | None:
    """The labels of the images at ``index`` (None for a dataset without labels)."""
    return None if labels is None else labels[index.cpu()]
