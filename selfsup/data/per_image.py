"""The conventional path: DataLoader workers decode each image and apply torchvision's per-image transforms.

Only used when asked for (``data_path=per-image``): it is the baseline that ``benchmarks/throughput.py``
measures the batched path against. Each image's draws are seeded from ``(seed, epoch, index)``. A file that
cannot be read is replaced by the next readable one and named in one warning, as on the streaming path.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from selfsup.augment import per_image_view_transforms
from selfsup.augment.views import view_specs
from selfsup.config import AugmentConfig
from selfsup.data.bad_images import BadImageLog, Failure, allowed_bad, first_readable
from selfsup.data.base import ImageDataset
from selfsup.data.images import MAX_BAD_FRACTION
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
    """Dataset item ``(epoch, index)`` -> (the augmented views of image ``index``, the index read, the failures).

    An image file that cannot be read is replaced by the next readable one, with the draws of ``index``
    (:func:`~selfsup.data.bad_images.first_readable`); ``known_bad`` are skipped without trying them."""

    def __init__(
        self, dataset: ImageDataset, augment: AugmentConfig, seed: int, max_bad_fraction: float = MAX_BAD_FRACTION
    ) -> None:
        self.dataset = dataset
        self.transforms = per_image_view_transforms(augment, dataset.channels, dataset.mean, dataset.std)
        self.specs = view_specs(augment)
        self.seed = seed
        self.max_failures = allowed_bad(len(dataset), max_bad_fraction)
        self.known_bad: frozenset[int] = frozenset()

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]) -> tuple[list[torch.Tensor], int, list[Failure]]:
        epoch, index = item
        image, read, failures = first_readable(
            index, len(self.dataset), self.dataset.pil, self.known_bad, self.max_failures
        )
        if image is None:  # too many unreadable files: the main process fails the run on `failures`
            channels = self.dataset.channels
            return [torch.zeros(channels, spec.size, spec.size) for spec in self.specs], read, failures
        state = torch.random.get_rng_state()
        torch.manual_seed(mix_seed(self.seed, epoch, index))
        try:
            views = [transform(image) for transform in self.transforms]
        finally:
            torch.random.set_rng_state(state)
        return views, read, failures


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
        max_bad_fraction: float = MAX_BAD_FRACTION,
    ) -> None:
        self.dataset = dataset
        self.views = PerImageViews(dataset, augment, seed, max_bad_fraction)
        self.bad = BadImageLog(len(dataset), max_bad_fraction)
        self.sharding = Sharding(len(dataset), batch_size, rank, world_size)
        self.batch_size = batch_size
        self.device = device
        self.seed = seed
        self.num_workers = num_workers

    def __len__(self) -> int:
        return len(self.sharding)

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[ViewBatch]:
        order = epoch_order(len(self.dataset), self.seed, epoch)
        self.views.known_bad = frozenset(self.bad.indices)
        loader = DataLoader(
            self.views,
            batch_sampler=EpochBatches(order, self.sharding, epoch, start_batch),
            num_workers=self.num_workers,
            collate_fn=collate_views,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )
        for views, index, failures in loader:
            self.bad.add_failures(failures, self.dataset.files or [])  # in-memory images never fail
            self.bad.check_replaced(index)
            yield ViewBatch(
                [v.to(self.device, non_blocking=True) for v in views], index, batch_labels(self.dataset.labels, index)
            )
