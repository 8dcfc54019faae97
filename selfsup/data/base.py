"""The one dataset type that every loader returns.

A :class:`ImageDataset` is either *in memory* (``images`` is a uint8 tensor of shape
``(N, C, H, W)``, as for Fashion-MNIST, CIFAR and STL-10) or *on disk* (``files`` is a list
of image paths, as for a large image folder). In-memory datasets feed the fast batched
augmentation path; on-disk ones are decoded by DataLoader workers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from selfsup.data.images import channels_mode, read_image


class DatasetNotFoundError(FileNotFoundError):
    """The data is not where we looked. The message says how to get it."""


@dataclass
class ImageDataset:
    """Images plus optional labels, and the statistics needed to normalise them."""

    name: str
    channels: int
    mean: Sequence[float]
    std: Sequence[float]
    images: torch.Tensor | None = None
    files: list[Path] | None = None
    labels: torch.Tensor | None = None
    classes: list[str] = field(default_factory=list)
    native_size: int = 0

    def __post_init__(self) -> None:
        if (self.images is None) == (self.files is None):
            raise ValueError("an ImageDataset holds either `images` or `files`")
        if self.images is not None:
            if self.images.dtype != torch.uint8 or self.images.ndim != 4:
                raise ValueError("`images` must be a uint8 tensor of shape (N, C, H, W)")
            self.channels = self.images.shape[1]
            self.native_size = self.native_size or int(self.images.shape[-1])
        if self.labels is not None and len(self.labels) != len(self):
            raise ValueError(f"{len(self.labels)} labels for {len(self)} images")

    def __len__(self) -> int:
        return len(self.images) if self.images is not None else len(self.files or [])

    @property
    def in_memory(self) -> bool:
        return self.images is not None

    @property
    def has_labels(self) -> bool:
        return self.labels is not None and bool((self.labels >= 0).any())

    @property
    def num_classes(self) -> int:
        if self.classes:
            return len(self.classes)
        return int(self.labels.max()) + 1 if self.labels is not None else 0

    def pil(self, index: int) -> Image.Image:
        """Image ``index`` as a PIL image (``L`` for 1 channel, ``RGB`` for 3). An image file that cannot be
        decoded raises :class:`~selfsup.data.images.BadImageError` (naming the file)."""
        if self.images is not None:
            array = self.images[index].permute(1, 2, 0).numpy()
            return Image.fromarray(array[..., 0] if self.channels == 1 else array)
        return read_image(self.files[index], channels_mode(self.channels))  # type: ignore[index]

    def evenly_spaced(self, size: int) -> ImageDataset:
        """An evenly spaced, deterministic subset of ``size`` images (the whole set if it is not larger).

        Used for ``train_subset`` (quick experiments), the kNN monitor's bank and queries, and evaluation on
        a subset."""
        if len(self) <= size:
            return self
        return self.subset(torch.linspace(0, len(self) - 1, size).long())

    def subset(self, indices: torch.Tensor | np.ndarray | Sequence[int]) -> ImageDataset:
        """A new dataset with only ``indices`` (shares nothing mutable with this one)."""
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        return ImageDataset(
            name=self.name,
            channels=self.channels,
            mean=self.mean,
            std=self.std,
            images=self.images[idx] if self.images is not None else None,
            files=[self.files[i] for i in idx.tolist()] if self.files is not None else None,
            labels=self.labels[idx] if self.labels is not None else None,
            classes=self.classes,
            native_size=self.native_size,
        )
