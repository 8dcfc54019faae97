"""The conventional path: DataLoader workers decode each image and apply torchvision's per-image transforms.

Only used when asked for (``data_path=per-image``): it is the baseline that ``benchmarks/throughput.py``
measures the batched path against. Each image's draws are seeded from ``(seed, epoch, index)``.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from selfsup.augment import per_image_view_transforms
from selfsup.config import AugmentConfig
from selfsup.data.base import ImageDataset
from selfsup.data.sampling import (
    EpochBatches,
    Sharding,
    ViewBatch,
    batch_labels,
    collate_views,
    epoch_order,
    mix_seed,
)


class PerImageViews(Dataset):
    """Dataset item ``(epoch, index)`` -> (the augmented views of image ``index``, ``index``)."""

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


class PerImagePipeline:
    """The conventional pipeline: DataLoader workers apply torchvision transforms image by image."""

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
        num_workers: int = 2,
    ) -> None:
        self.dataset = dataset
        self.views = PerImageViews(dataset, augment, seed)
        self.sharding = Sharding(len(dataset), batch_size, rank, world_size)
        self.batch_size = batch_size
        self.device = device
        self.seed = seed
        self.num_workers = num_workers

    def __len__(self) -> int:
        return len(self.sharding)

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[ViewBatch]:
        order = epoch_order(len(self.dataset), self.seed, epoch)
        loader = DataLoader(
            self.views,
            batch_sampler=EpochBatches(order, self.sharding, epoch, start_batch),
            num_workers=self.num_workers,
            collate_fn=collate_views,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )
        for views, index in loader:
            yield ViewBatch(
                [v.to(self.device, non_blocking=True) for v in views], index, batch_labels(self.dataset.labels, index)
            )
