"""Frozen features of un-augmented images: backbone h and projector z, in eval mode.

Image files that cannot be read are skipped with one warning each (more than ``max_bad_fraction`` of them
is an error, :mod:`selfsup.data.bad_images`): :func:`dataset_features` returns the indices of the images
it kept, so that labels stay aligned (``dataset.subset(features.kept)``). :func:`extract_features` and
:func:`raw_pixel_features` return rows for every image, and refuse a dataset with unreadable files rather
than return fewer rows than it has labels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from selfsup.augment import eval_transform
from selfsup.data.bad_images import BadImageLog
from selfsup.data.base import ImageDataset
from selfsup.data.images import MAX_BAD_FRACTION, BadImageError


class UnreadableImagesError(ValueError):
    """Features were asked for every image of a dataset, and some image files cannot be read."""


@dataclass(frozen=True)
class FeatureSet:
    """(h, z) of the readable images of a dataset; ``kept`` holds their indices (all, when every file reads)."""

    h: torch.Tensor
    z: torch.Tensor
    kept: torch.Tensor


def normalise_batch(images: torch.Tensor, size: int, mean: list[float], std: list[float]) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float, resized to ``size`` (antialiased bilinear), normalised."""
    x = images.float().div_(255)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    mean_t = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - mean_t) / std_t


class _EvalItems(torch.utils.data.Dataset):
    """Item ``index`` -> (the evaluation tensor of image ``index``, ``index``, "" or why it cannot be read)."""

    def __init__(self, dataset: ImageDataset, size: int, mean: Sequence[float], std: Sequence[float]) -> None:
        self.dataset, self.size = dataset, size
        self.transform = eval_transform(size, dataset.channels, mean, std)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str]:
        try:
            return self.transform(self.dataset.pil(index)), index, ""
        except BadImageError as err:
            return torch.zeros(self.dataset.channels, self.size, self.size), index, err.reason


def indexed_eval_batches(
    dataset: ImageDataset,
    size: int,
    device: torch.device,
    batch_size: int = 512,
    channels_last: bool = False,
    num_workers: int = 2,
    normalisation: tuple[Sequence[float], Sequence[float]] | None = None,
    max_bad_fraction: float = MAX_BAD_FRACTION,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The dataset's readable images in order, as (normalised float batch on ``device``, their dataset indices).

    ``normalisation`` is ``(mean, std)``, the dataset's by default. Unreadable files are skipped with one
    warning each; more than ``max_bad_fraction`` of them raise
    :class:`~selfsup.data.bad_images.TooManyBadImagesError`."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    mean, std = normalisation or (dataset.mean, dataset.std)
    if dataset.images is not None:
        for start in range(0, len(dataset), batch_size):
            chunk = dataset.images[start : start + batch_size].to(device)
            batch = normalise_batch(chunk, size, list(mean), list(std)).contiguous(memory_format=memory_format)
            yield batch, torch.arange(start, start + len(chunk))
        return
    log = BadImageLog(len(dataset), max_bad_fraction)
    files = dataset.files or []
    items = _EvalItems(dataset, size, mean, std)
    for batch, index, reasons in DataLoader(items, batch_size=batch_size, num_workers=num_workers):
        good = torch.tensor([not reason for reason in reasons], dtype=torch.bool)
        for i, reason in zip(index.tolist(), reasons):
            if reason:
                log.add(files[i], reason)
        if good.any():
            yield batch[good].to(device, memory_format=memory_format), index[good]


def eval_batches(
    dataset: ImageDataset,
    size: int,
    device: torch.device,
    batch_size: int = 512,
    channels_last: bool = False,
    num_workers: int = 2,
) -> Iterator[torch.Tensor]:
    """The dataset's readable images in order, as normalised float batches on ``device`` (unreadable files
    skipped with a warning: :func:`indexed_eval_batches` also gives the indices)."""
    for batch, _ in indexed_eval_batches(dataset, size, device, batch_size, channels_last, num_workers):
        yield batch


@torch.no_grad()
def dataset_features(
    embed: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    dataset: ImageDataset,
    size: int,
    device: torch.device,
    batch_size: int = 512,
    channels_last: bool = False,
    progress: Callable[[int], None] | None = None,
    max_bad_fraction: float = MAX_BAD_FRACTION,
) -> FeatureSet:
    """(h, z) of every readable image of ``dataset``, on the CPU, and the indices of those images. ``embed``
    maps a batch to (h, z). Unreadable files are skipped with a warning each (see :func:`indexed_eval_batches`)."""
    hs, zs, kept = [], [], []
    batches = indexed_eval_batches(dataset, size, device, batch_size, channels_last, max_bad_fraction=max_bad_fraction)
    done = 0
    for batch, index in batches:
        h, z = embed(batch)
        hs.append(h.float().cpu())
        zs.append(z.float().cpu())
        kept.append(index)
        if progress is not None:
            progress(int(index[-1]) + 1 - done)  # skipped images count as done
            done = int(index[-1]) + 1
    if not kept:
        raise UnreadableImagesError(f"none of the {len(dataset)} images of {dataset.name} can be read")
    return FeatureSet(torch.cat(hs), torch.cat(zs), torch.cat(kept))


def _require_all(kept: torch.Tensor, dataset: ImageDataset) -> None:
    if len(kept) != len(dataset):
        raise UnreadableImagesError(
            f"{len(dataset) - len(kept)} of the {len(dataset)} images of {dataset.name} cannot be read (see the "
            "warnings above), so the features would not line up with the labels: use "
            "selfsup.evaluation.features.dataset_features, whose `kept` indices select the matching labels"
        )


@torch.no_grad()
def extract_features(
    embed: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    dataset: ImageDataset,
    size: int,
    device: torch.device,
    batch_size: int = 512,
    channels_last: bool = False,
    progress: Callable[[int], None] | None = None,
    max_bad_fraction: float = MAX_BAD_FRACTION,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(h, z) for every image of ``dataset``, on the CPU. ``embed`` maps a batch to (h, z).

    Raises :class:`UnreadableImagesError` if an image file cannot be read (after warning about it): use
    :func:`dataset_features` for datasets that may hold such files."""
    features = dataset_features(embed, dataset, size, device, batch_size, channels_last, progress, max_bad_fraction)
    _require_all(features.kept, dataset)
    return features.h, features.z


def raw_pixel_features(
    dataset: ImageDataset, max_size: int = 32, standardize: bool = False, max_bad_fraction: float = MAX_BAD_FRACTION
) -> torch.Tensor:
    """Flattened pixels in [0, 1] (downsampled to at most ``max_size`` px): the raw-pixel baseline.

    With ``standardize`` the dataset mean and std are applied first, as for the encoder's input;
    that changes cosine similarities, hence kNN (the linear probe standardises features anyway).
    Raises :class:`UnreadableImagesError` if an image file cannot be read (pass ``dataset.subset(kept)``
    with the ``kept`` of :func:`dataset_features`).
    """
    size = min(max_size, dataset.native_size or max_size)
    normalisation = (
        (list(dataset.mean), list(dataset.std)) if standardize else ([0.0] * dataset.channels, [1.0] * dataset.channels)
    )
    out, kept = [], []
    batches = indexed_eval_batches(
        dataset,
        size,
        torch.device("cpu"),
        4096,
        num_workers=0,
        normalisation=normalisation,
        max_bad_fraction=max_bad_fraction,
    )
    for batch, index in batches:
        out.append(batch.flatten(1))
        kept.append(index)
    _require_all(torch.cat(kept) if kept else torch.zeros(0, dtype=torch.long), dataset)
    return torch.cat(out)
