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

**Unreadable files** (corrupt, truncated, not images, decompression bombs) are left out of the cache with
one warning each, and listed in ``<cache name>.bad.json`` next to it, so that a later run leaves the same
files out (and names them again) without decoding anything; the returned dataset's labels follow. More
than ``max_bad_fraction`` (1 %) of them fail the run (:mod:`selfsup.data.bad_images`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from selfsup.data.bad_images import BadImageLog, SmallImages, TooManyBadImagesError
from selfsup.data.base import ImageDataset
from selfsup.data.images import MAX_BAD_FRACTION, BadImageError, channels_mode, open_image, to_mode

CACHE_VERSION = 2
"""Part of every cache's name: 2 since 16-bit images are scaled to 8 bits instead of clipped."""
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


def decode_square_sized(
    path: str | Path, size: int, channels: int, use_draft: bool = True
) -> tuple[np.ndarray, tuple[int, int]]:
    """:func:`decode_square`, and the original ``(width, height)`` of the image."""
    mode = channels_mode(channels)
    with open_image(path) as source:
        original = source.size
        if use_draft:
            source.draft(mode, (size, size))
        img = to_mode(source, mode, path)
    width, height = img.size
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    img = img.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side))
    array = np.array(img, dtype=np.uint8)
    square = array[None] if array.ndim == 2 else np.ascontiguousarray(array.transpose(2, 0, 1))
    return square, original


def decode_square(path: str | Path, size: int, channels: int, use_draft: bool = True) -> np.ndarray:
    """Image ``path`` with its shorter side resized to ``size`` and its central square kept: uint8
    ``(channels, size, size)``. JPEGs are decoded at a reduced scale (PIL ``draft``) when that still
    leaves at least ``size`` px on the shorter side. An unreadable file raises
    :class:`~selfsup.data.images.BadImageError`."""
    return decode_square_sized(path, size, channels, use_draft)[0]


class _Decoded(Dataset):
    """Item ``index`` -> (the decoded square, "" or why the file cannot be read, the original width, height)."""

    def __init__(self, files: list[Path], size: int, channels: int) -> None:
        self.files, self.size, self.channels = files, size, channels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str, int, int]:
        try:
            square, (width, height) = decode_square_sized(self.files[index], self.size, self.channels)
        except BadImageError as err:
            return torch.zeros(self.channels, self.size, self.size, dtype=torch.uint8), err.reason, 0, 0
        return torch.from_numpy(square), "", width, height


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


def bad_list_file(path: Path) -> Path:
    """Where the unreadable files left out of cache ``path`` are listed (only written when there are some)."""
    return path.with_name(path.name[: -len(".npy")] + ".bad.json")


def read_bad_list(path: Path) -> list[tuple[int, str, str]]:
    """The ``(index, file, reason)`` of each file left out of cache ``path`` (empty when none was)."""
    listing = bad_list_file(path)
    if not listing.exists():
        return []
    return [(int(i), str(f), str(r)) for i, f, r in json.loads(listing.read_text())["bad"]]


def _write_bad_list(path: Path, bad: list[tuple[int, str, str]], total: int) -> None:
    listing = bad_list_file(path)
    if not bad:
        listing.unlink(missing_ok=True)
        return
    handle, tmp = tempfile.mkstemp(prefix=listing.name + ".", suffix=".tmp", dir=listing.parent)
    with os.fdopen(handle, "w") as out:
        json.dump({"version": CACHE_VERSION, "total": total, "bad": bad}, out, indent=1)
    os.chmod(tmp, PRIVATE_FILE)
    os.replace(tmp, listing)


def _compact(tmp: str, rows: int) -> str:
    """A copy of the ``.npy`` file ``tmp`` with only its first ``rows`` rows (the unreadable files left out)."""
    full = np.load(tmp, mmap_mode="r")
    handle, name = tempfile.mkstemp(prefix=Path(tmp).stem + ".", suffix=".tmp.npy", dir=Path(tmp).parent)
    os.close(handle)
    try:
        out = np.lib.format.open_memmap(name, mode="w+", dtype=np.uint8, shape=(rows, *full.shape[1:]))
        for start in range(0, rows, 1024):
            out[start : start + 1024] = full[start : min(rows, start + 1024)]
        out.flush()
        del out, full
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    Path(tmp).unlink()
    return name


def build_cache(
    files: list[Path],
    size: int,
    channels: int,
    path: Path,
    num_workers: int = 0,
    progress: Callable[[int], None] | None = None,
    view_size: int = 0,
    max_bad_fraction: float = MAX_BAD_FRACTION,
    verbose: bool = True,
) -> list[tuple[int, str, str]]:
    """Decode ``files`` into the ``.npy`` file ``path`` (written under a temporary name, then renamed),
    and delete stale caches of the same file list. ``num_workers`` decoding processes (0: this one).

    Files that cannot be read are left out, each with a warning, and listed next to the cache
    (:func:`bad_list_file`); more than ``max_bad_fraction`` of them raise
    :class:`~selfsup.data.bad_images.TooManyBadImagesError` and nothing is written. Returns the
    ``(index, file, reason)`` of the files left out. Images smaller than ``view_size`` get one warning."""
    make_private_dir(path.parent)
    prune_unused(path.parent)
    log = BadImageLog(len(files), max_bad_fraction, verbose=verbose)
    small = SmallImages(view_size)
    bad: list[tuple[int, str, str]] = []
    handle, tmp = tempfile.mkstemp(prefix=path.stem + ".", suffix=".tmp.npy", dir=path.parent)
    os.close(handle)
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(files), channels, size, size))
        loader = DataLoader(_Decoded(files, size, channels), batch_size=64, num_workers=num_workers)
        start = kept = 0
        for batch, reasons, widths, heights in loader:
            good = [i for i, reason in enumerate(reasons) if not reason]
            for i, reason in enumerate(reasons):
                if reason:
                    bad.append((start + i, str(files[start + i]), reason))
                    log.add(files[start + i], reason)
                else:
                    small.add(files[start + i], int(widths[i]), int(heights[i]))
            out[kept : kept + len(good)] = batch[good].numpy()
            kept += len(good)
            start += len(batch)
            if progress is not None:
                progress(len(batch))
        out.flush()
        del out
        if kept == 0:
            raise TooManyBadImagesError(f"none of the {len(files)} images can be read (see the warnings above)")
        if bad:
            tmp = _compact(tmp, kept)
        os.chmod(tmp, PRIVATE_FILE)
        _write_bad_list(path, bad, len(files))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if verbose:
        small.warn()
    identity = path.stem.split("-")[0]
    current = (path, bad_list_file(path))
    for stale in path.parent.glob(f"{identity}-*"):
        cache_or_list = stale.name.endswith((".npy", ".bad.json")) and not stale.name.endswith(".tmp.npy")
        if cache_or_list and stale not in current:
            stale.unlink(missing_ok=True)
    return bad


def load_cache(path: Path) -> torch.Tensor:
    """The cached uint8 ``(N, C, S, S)`` tensor, memory-mapped copy-on-write (shared page cache). Marks the
    file as used (its modification time), which :func:`prune_unused` goes by."""
    with contextlib.suppress(OSError):
        os.utime(path)
    return torch.from_numpy(np.load(path, mmap_mode="c"))


PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700
UNUSED_DAYS = 30
"""Cache files not used for this many days are deleted when a new cache is built in the same folder."""


def make_private_dir(folder: Path) -> None:
    """Create the cache folder readable by its owner only: decoded images are as private as the originals,
    which may not be readable by others (``~/.cache`` may be, depending on the umask)."""
    folder.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        if folder.stat().st_mode & 0o077:
            os.chmod(folder, PRIVATE_DIR)


def prune_unused(folder: Path, days: float = UNUSED_DAYS) -> list[Path]:
    """Delete the caches (and their lists of unreadable files) of ``folder`` that were not used for ``days``
    days: the cache would otherwise only grow. Returns what was deleted."""
    limit = time.time() - days * 86400
    removed = []
    for path in folder.glob("*.npy"):
        with contextlib.suppress(OSError):
            if path.stat().st_mtime < limit:
                path.unlink()
                bad_list_file(path).unlink(missing_ok=True)
                removed.append(path)
    return removed


def load_or_build(
    dataset: ImageDataset,
    image_size: int,
    cache_dir: str | Path | None = None,
    num_workers: int = 0,
    rank: int = 0,
    verbose: bool = True,
    max_bad_fraction: float = MAX_BAD_FRACTION,
) -> ImageDataset:
    """The on-disk ``dataset`` as an in-memory one, decoded at ``stored_size(image_size)``.

    Reads the cache when it is current, else decodes (rank 0 only; other ranks wait at a barrier). Files
    that cannot be read are left out (labels stay aligned), with one warning each when ``verbose``, also
    when the cache is read again; more than ``max_bad_fraction`` of them are an error
    (:class:`~selfsup.data.bad_images.TooManyBadImagesError`).
    """
    if dataset.files is None:
        return dataset
    from selfsup import distributed as dist

    size = stored_size(image_size)
    path = cache_file(dataset.files, size, dataset.channels, cache_dir)
    built = False
    if rank == 0 and not path.exists():
        if verbose:
            print(
                f"selfsup: decoding {len(dataset)} images once at {size} px into {path} "
                f"({decoded_bytes(len(dataset), dataset.channels, size) / 2**20:.0f} MiB)",
                file=sys.stderr,
                flush=True,
            )
        build_cache(
            dataset.files,
            size,
            dataset.channels,
            path,
            num_workers,
            view_size=image_size,
            max_bad_fraction=max_bad_fraction,
            verbose=verbose,
        )
        built = True
    dist.barrier()
    bad = read_bad_list(path)
    if not built:  # build_cache warned and checked already
        log = BadImageLog(len(dataset), max_bad_fraction, verbose=verbose)
        for _, file, reason in bad:
            log.add(file, reason, check=False)
        log.check()
    images = load_cache(path)
    keep = sorted(set(range(len(dataset))) - {index for index, _, _ in bad})
    if len(images) != len(keep):
        raise RuntimeError(f"the cache {path} holds {len(images)} images instead of {len(keep)}: delete it")
    labels = dataset.labels
    if labels is not None and bad:
        labels = labels[torch.tensor(keep, dtype=torch.long)]
    return ImageDataset(
        name=dataset.name,
        channels=dataset.channels,
        mean=dataset.mean,
        std=dataset.std,
        images=images,
        labels=labels,
        classes=dataset.classes,
        native_size=size,
    )
