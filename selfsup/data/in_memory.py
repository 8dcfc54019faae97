"""The batched path: in-memory uint8 images, augmented a whole batch at a time on the training device.

A batch is an index into the dataset's uint8 ``(N, C, H, W)`` tensor; the images move to the device and
:class:`selfsup.augment.BatchedViewAugmenter` draws every view in a few tensor ops. This is the default for
Fashion-MNIST, CIFAR and STL-10, and for image folders that fit the memory budget (decoded once by
:mod:`selfsup.data.cache`).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from selfsup.augment import BatchedViewAugmenter
from selfsup.config import AugmentConfig
from selfsup.data.base import ImageDataset
from selfsup.data.sampling import Sharding, ViewBatch, batch_generator, batch_labels, epoch_order


class BatchedPipeline:
    """In-memory uint8 images, augmented in batches on the training device."""

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
    ) -> None:
        if dataset.images is None:
            raise ValueError("BatchedPipeline needs an in-memory dataset")
        self.dataset = dataset
        self.images = dataset.images.pin_memory() if device.type == "cuda" else dataset.images
        self.augmenter = BatchedViewAugmenter(augment, dataset.channels, dataset.mean, dataset.std)
        self.sharding = Sharding(len(dataset), batch_size, rank, world_size)
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
            views = self.augmenter(images, batch_generator(self.seed, epoch, batch), self.sharding.rows())
            yield ViewBatch(views, index, batch_labels(self.dataset.labels, index))
