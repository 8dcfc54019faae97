"""Frozen features of un-augmented images: backbone h and projector z, in eval mode."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from selfsup.augment import eval_transform
from selfsup.data.base import ImageDataset


def normalise_batch(images: torch.Tensor, size: int, mean: list[float], std: list[float]) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float, resized to ``size`` (antialiased bilinear), normalised."""
    x = images.float().div_(255)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    mean_t = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - mean_t) / std_t


def eval_batches(
    dataset: ImageDataset,
    size: int,
    device: torch.device,
    batch_size: int = 512,
    channels_last: bool = False,
    num_workers: int = 2,
) -> Iterator[torch.Tensor]:
    """The dataset's images in order, as normalised float batches on ``device``."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    if dataset.images is not None:
        for start in range(0, len(dataset), batch_size):
            chunk = dataset.images[start : start + batch_size].to(device)
            yield normalise_batch(chunk, size, list(dataset.mean), list(dataset.std)).contiguous(
                memory_format=memory_format
            )
        return
    transform = eval_transform(size, dataset.channels, dataset.mean, dataset.std)

    class _Items(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(dataset)

        def __getitem__(self, index: int) -> torch.Tensor:
            return transform(dataset.pil(index))

    for batch in DataLoader(_Items(), batch_size=batch_size, num_workers=num_workers):
        yield batch.to(device, memory_format=memory_format)


@torch.no_grad()
def extract_features(
    embed: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    dataset: ImageDataset,
    size: int,
    device: torch.device,
    batch_size: int = 512,
    channels_last: bool = False,
    progress: Callable[[int], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(h, z) for every image of ``dataset``, on the CPU. ``embed`` maps a batch to (h, z)."""
    hs, zs = [], []
    for batch in eval_batches(dataset, size, device, batch_size, channels_last):
        h, z = embed(batch)
        hs.append(h.float().cpu())
        zs.append(z.float().cpu())
        if progress is not None:
            progress(len(batch))
    return torch.cat(hs), torch.cat(zs)


def raw_pixel_features(dataset: ImageDataset, max_size: int = 32, standardize: bool = False) -> torch.Tensor:
    """Flattened pixels in [0, 1] (downsampled to at most ``max_size`` px): the raw-pixel baseline.

    With ``standardize`` the dataset mean and std are applied first, as for the encoder's input;
    that changes cosine similarities, hence kNN (the linear probe standardises features anyway).
    """
    size = min(max_size, dataset.native_size or max_size)
    mean, std = (
        (list(dataset.mean), list(dataset.std)) if standardize else ([0.0] * dataset.channels, [1.0] * dataset.channels)
    )
    out = []
    for start in range(0, len(dataset), 4096):
        if dataset.images is not None:
            batch = normalise_batch(dataset.images[start : start + 4096], size, mean, std)
        else:
            batch = torch.stack(
                [
                    eval_transform(size, dataset.channels, mean, std)(dataset.pil(i))
                    for i in range(start, min(len(dataset), start + 4096))
                ]
            )
        out.append(batch.flatten(1))
    return torch.cat(out)
