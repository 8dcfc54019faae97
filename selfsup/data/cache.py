"""Image folders that fit in memory: decoded and resized once, cached on disk, held as a uint8 tensor.

A folder of JPEGs is slow to train from: every epoch decodes every file again. When the decoded
images fit the memory budget (``memory_budget_mb``), :func:`load_or_build` decodes each image once,
stores the result as one ``.npy`` file, and returns an in-memory :class:`ImageDataset` that feeds the
batched augmentation path (:class:`selfsup.data.in_memory.BatchedPipeline`) like CIFAR does.

**The stored size.** Each image is resized (PIL bilinear, antialiased) so that its shorter side is
``stored_size(image_size) = ceil(image_size / 0.875)`` (256 px for 224 px views, 110 for 96, 37 for 32)
and its central square is kept. 0.875 is ImageNet's evaluation crop fraction: the stored square is
exactly the input of the evaluation transform (short side to ``size / 0.875``, centre crop), and
RandomResizedCrop still has room (a full-scale crop is resized *down* by 0.875, so views are never
blurry up-sampled copies at scale 1). What is given up, and should be known: (1) the parts of
non-square images outside the central square (a quarter of a 4:3 photo) are never seen; (2) small
crops come from a 256 px image instead of the original (a scale-0.08 crop of a 500x375 photo has ~100
px of detail instead of ~120 before it is resized to 224). For 32-96 px data both are negligible;
for ImageNet-scale training use ``memory_budget_mb=0`` (the streaming path keeps full resolution).

**The cache file.** ``CACHE_DIR/<identity>-<fingerprint>.npy`` where ``identity`` hashes the file list,
the stored size and the channel count, and ``fingerprint`` hashes every file's size and modification
time. A changed, added or removed file changes the name, so the stale entry is never read; it is
deleted when the new one is written. Files are written to a temporary name and renamed (atomic), and
under ``torchrun`` only rank 0 writes while the other ranks wait. The file is memory-mapped
copy-on-write, so the processes of one machine share one copy in the page cache.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from selfsup.data.base import ImageDataset

CACHE_VERSION = 1
STORE_FRACTION = 0.875
"""Stored short side = output size / 0.875 (ImageNet's evaluation crop fraction)."""


def stored_size(image_size: int) -> int:
    """Side of the stored square for views of ``image_size`` px: ``ceil(image_size / 0.875)``."""
    return int(math.ceil(image_size / STORE_FRACTION - 1e-9))


def default_cache_dir() -> Path:
    """``$SELFSUP_CACHE_DIR``, else ``~/.cache/selfsup/decoded``."""
    return Path(os.environ.get("SELFSUP_CACHE_DIR", Path.home() / ".cache" / "selfsup" / "decoded"))


def available_memory_bytes() -> int:
    """``MemAvailable`` from ``/proc/meminfo`` (Linux), else the physical memory."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def memory_budget_bytes(budget_mb: int | None) -> int:
    """The budget for decoded images: ``budget_mb`` MiB, or (None) half of the available memory shared by
    the processes of this machine (``LOCAL_WORLD_SIZE`` under torchrun). 0 means "never decode into memory"."""
    if budget_mb is not None:
        return max(0, int(budget_mb)) << 20
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return available_memory_bytes() // 2 // local


def decoded_bytes(num_images: int, channels: int, size: int) -> int:
    """Bytes of ``num_images`` decoded ``channels`` x ``size`` x ``size`` uint8 images."""
    return num_images * channels * size * size


def fits_in_memory(dataset: ImageDataset, image_size: int, budget_mb: int | None) -> bool:
    """Whether the decoded, resized images of an on-disk dataset fit the memory budget."""
    size = stored_size(image_size)
    return decoded_bytes(len(dataset), dataset.channels, size) <= memory_budget_bytes(budget_mb)


# ----------------------------------------------------------------------------- decoding


def decode_square(path: str | Path, size: int, channels: int, use_draft: bool = True) -> np.ndarray:
    """Image ``path`` with its shorter side resized to ``size`` and its central square kept: uint8
    ``(channels, size, size)``. JPEGs are decoded at a reduced scale (PIL ``draft``) when that still
    leaves at least ``size`` px on the shorter side."""
    mode = "L" if channels == 1 else "RGB"
    with Image.open(path) as source:
        if use_draft:
            source.draft(mode, (size, size))
        img = source.convert(mode)
        width, height = img.size
        side = min(width, height)
        left, top = (width - side) / 2, (height - side) / 2
        img = img.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side))
        array = np.array(img, dtype=np.uint8)
    return array[None] if array.ndim == 2 else np.ascontiguousarray(array.transpose(2, 0, 1))


class _Decoded(Dataset):
    def __init__(self, files: list[Path], size: int, channels: int) -> None:
        self.files, self.size, self.channels = files, size, channels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.from_numpy(decode_square(self.files[index], self.size, self.channels))


# ----------------------------------------------------------------------------- the cache file


def _digest(parts: list[str]) -> str:
    sha = hashlib.sha1()
    for part in parts:
        sha.update(part.encode())
        sha.update(b"\0")
    return sha.hexdigest()[:16]


def cache_identity(files: list[Path], size: int, channels: int) -> str:
    """Hash of what the cache holds: the (absolute) file list, the stored size and the channels."""
    return _digest([f"v{CACHE_VERSION}", str(size), str(channels)] + [str(Path(f).resolve()) for f in files])


def cache_fingerprint(files: list[Path]) -> str:
    """Hash of every file's size and modification time: changes when any file does."""
    parts = []
    for f in files:
        stat = os.stat(f)
        parts.append(f"{stat.st_size}:{stat.st_mtime_ns}")
    return _digest(parts)


def cache_file(files: list[Path], size: int, channels: int, cache_dir: str | Path | None = None) -> Path:
    """Where the decoded images of ``files`` at ``size`` px live (whether or not they are there yet)."""
    folder = Path(cache_dir) if cache_dir else default_cache_dir()
    return folder / f"{cache_identity(files, size, channels)}-{cache_fingerprint(files)}.npy"


def build_cache(
    files: list[Path],
    size: int,
    channels: int,
    path: Path,
    num_workers: int = 0,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Decode ``files`` into the ``.npy`` file ``path`` (written under a temporary name, then renamed),
    and delete stale caches of the same file list. ``num_workers`` decoding processes (0: this one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=path.stem + ".", suffix=".tmp.npy", dir=path.parent)
    os.close(handle)
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(files), channels, size, size))
        loader = DataLoader(_Decoded(files, size, channels), batch_size=64, num_workers=num_workers)
        start = 0
        for batch in loader:
            out[start : start + len(batch)] = batch.numpy()
            start += len(batch)
            if progress is not None:
                progress(len(batch))
        out.flush()
        del out
        os.chmod(tmp, 0o644)  # mkstemp made it private; a cache is as readable as its images
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    identity = path.stem.split("-")[0]
    for stale in path.parent.glob(f"{identity}-*.npy"):
        if stale != path and not stale.name.endswith(".tmp.npy"):
            stale.unlink(missing_ok=True)


def load_cache(path: Path) -> torch.Tensor:
    """The cached uint8 ``(N, C, S, S)`` tensor, memory-mapped copy-on-write (shared page cache)."""
    return torch.from_numpy(np.load(path, mmap_mode="c"))


def load_or_build(
    dataset: ImageDataset,
    image_size: int,
    cache_dir: str | Path | None = None,
    num_workers: int = 0,
    rank: int = 0,
    verbose: bool = True,
) -> ImageDataset:
    """The on-disk ``dataset`` as an in-memory one, decoded at ``stored_size(image_size)``.

    Reads the cache when it is current, else decodes (rank 0 only; other ranks wait at a barrier).
    """
    if dataset.files is None:
        return dataset
    from selfsup import distributed as dist

    size = stored_size(image_size)
    path = cache_file(dataset.files, size, dataset.channels, cache_dir)
    if rank == 0 and not path.exists():
        if verbose:
            print(
                f"selfsup: decoding {len(dataset)} images once at {size} px into {path} "
                f"({decoded_bytes(len(dataset), dataset.channels, size) / 2**20:.0f} MiB)",
                file=sys.stderr,
                flush=True,
            )
        build_cache(dataset.files, size, dataset.channels, path, num_workers)
    dist.barrier()
    images = load_cache(path)
    return ImageDataset(
        name=dataset.name,
        channels=dataset.channels,
        mean=dataset.mean,
        std=dataset.std,
        images=images,
        labels=dataset.labels,
        classes=dataset.classes,
        native_size=size,
    )
