"""``imagefolder``: your own images, labelled by sub-folder or not labelled at all.

Accepted layouts under ``--data-dir ROOT``:

* ``ROOT/train/<class>/*.jpg`` and ``ROOT/val/<class>/*.jpg`` (or ``test/``): explicit splits;
  an extra ``ROOT/unlabeled/`` folder joins the pretraining images (the STL-10 layout);
* ``ROOT/<class>/*.jpg`` with two or more class folders: labelled; a fixed 10 % of each class,
  chosen by a hash of the file name, is held out as the test split;
* anything else (images directly in ``ROOT``, or a single folder of them, nested or not):
  unlabelled. Pretraining works; kNN and linear evaluation need labels and say so.

**Channels and size** come from the headers of an evenly spaced sample of at most :data:`SAMPLE_SIZE` of the
pretraining images (:func:`survey`), the same for every split: the channel count is the majority's (grey or
colour; a folder that mixes them gets a one-line notice and every image is converted), unless
``channels`` asks for 1 or 3; the native size is the median shorter side, at most 224 px. Sampled images
smaller than that get one warning (they are upscaled).
"""

from __future__ import annotations

import hashlib
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from selfsup.data.bad_images import SmallImages
from selfsup.data.base import DatasetNotFoundError, ImageDataset
from selfsup.data.datasets import DATASETS, NATIVE_SIZES, check_channels, check_split
from selfsup.data.images import BadImageError, mode_channels, open_image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
TRAIN_NAMES = ("train",)
TEST_NAMES = ("val", "test", "valid", "validation")
UNLABELED_NAMES = ("unlabeled", "unlabelled")
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def list_images(folder: Path) -> list[Path]:
    """All image files below ``folder``, sorted so that every run sees the same order."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _class_folders(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and list_images(d))


def _held_out(path: Path, fraction: float = 0.1) -> bool:
    digest = hashlib.sha1(path.name.encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < fraction


def _labelled(folders: list[Path], classes: list[str]) -> tuple[list[Path], list[int]]:
    files: list[Path] = []
    labels: list[int] = []
    for folder in folders:
        for path in list_images(folder):
            files.append(path)
            labels.append(classes.index(folder.name))
    return files, labels


def scan_image_folder(root: Path, split: str) -> tuple[list[Path], list[int] | None, list[str]]:
    """Resolve ``split`` of ``root`` to (files, labels or None, class names)."""
    if not root.is_dir():
        raise DatasetNotFoundError(
            f"--data-dir {root} is not a directory. For imagefolder, point "
            "--data-dir at a folder of images (see `selfsup pretrain --help`)."
        )
    subdirs = {d.name.lower(): d for d in root.iterdir() if d.is_dir()}
    train_dir = next((subdirs[n] for n in TRAIN_NAMES if n in subdirs), None)
    test_dir = next((subdirs[n] for n in TEST_NAMES if n in subdirs), None)
    unlabeled_dir = next((subdirs[n] for n in UNLABELED_NAMES if n in subdirs), None)
    if train_dir is not None and test_dir is not None:
        classes = [d.name for d in _class_folders(train_dir)]
        if split == "pretrain":
            files, labels = _labelled(_class_folders(train_dir), classes)
            extra = list_images(unlabeled_dir) if unlabeled_dir else []
            return files + extra, labels + [-1] * len(extra), classes
        folder = train_dir if split == "train" else test_dir
        known = [d for d in _class_folders(folder) if d.name in classes]
        files, labels = _labelled(known, classes)
        return files, labels, classes
    class_dirs = _class_folders(root)
    loose = [p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
    if len(class_dirs) >= 2 and not loose:
        classes = [d.name for d in class_dirs]
        files, labels = _labelled(class_dirs, classes)
        keep = [(f, y) for f, y in zip(files, labels) if _held_out(f) == (split == "test")]
        return [f for f, _ in keep], [y for _, y in keep], classes
    if split != "pretrain":
        return list_images(root), None, []
    return list_images(root), None, []


def _files(split: str, data_dir: str | None) -> tuple[Path, list[Path], list[int] | None, list[str]]:
    if not data_dir:
        raise DatasetNotFoundError(
            "the imagefolder dataset needs --data-dir pointing at your images, "
            "e.g. --data-dir ~/photos (class sub-folders give labels for evaluation)"
        )
    root = Path(data_dir).expanduser()
    files, labels, classes = scan_image_folder(root, split)
    if not files:
        raise DatasetNotFoundError(
            f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found for split {split!r} under {root}"
        )
    return root, files, labels, classes


SAMPLE_SIZE = 1000
"""At most this many evenly spaced files are opened (headers only) to decide channels and native size."""
MAX_NATIVE_SIZE = 224


@dataclass(frozen=True)
class FolderSurvey:
    """What the headers of a sample of a folder's images say."""

    grey: int
    colour: int
    sides: tuple[int, ...]
    """The shorter side of each readable sampled image."""

    @property
    def channels(self) -> int:
        """The majority's channel count (3 on a tie)."""
        return 1 if self.grey > self.colour else 3

    @property
    def mixed(self) -> bool:
        return bool(self.grey and self.colour)

    @property
    def native_size(self) -> int:
        """The median shorter side, at most 224 px."""
        return min(MAX_NATIVE_SIZE, int(statistics.median_low(self.sides)))


_SURVEYS: dict[tuple[str, int, tuple[tuple[str, int], ...]], FolderSurvey] = {}


def _sample(files: list[Path], size: int = SAMPLE_SIZE) -> list[Path]:
    if len(files) <= size:
        return list(files)
    return [files[int(i)] for i in torch.linspace(0, len(files) - 1, size).long().tolist()]


def survey(root: Path, files: list[Path]) -> FolderSurvey:
    """The modes and sizes of an evenly spaced sample of ``files`` (the pretraining images of ``root``), from
    their headers. Printed once per process: a notice when grey and colour images are mixed, and a warning
    for sampled images smaller than the native size. Unreadable files are left to the pipelines to report."""
    sample = _sample(files)
    key = (str(root), len(files), tuple((str(p), p.stat().st_mtime_ns if p.exists() else 0) for p in sample))
    if key in _SURVEYS:
        return _SURVEYS[key]
    grey = colour = 0
    sizes: list[tuple[Path, int, int]] = []
    for path in sample:
        try:
            with open_image(path) as image:
                mode, (width, height) = image.mode, image.size
        except BadImageError:
            continue
        if mode_channels(mode) == 1:
            grey += 1
        else:
            colour += 1
        sizes.append((path, width, height))
    if not sizes:
        raise DatasetNotFoundError(
            f"none of the {len(sample)} sampled image files under {root} can be read (e.g. {sample[0]}); "
            "they are not images PIL can open"
        )
    found = FolderSurvey(grey, colour, tuple(min(width, height) for _, width, height in sizes))
    small = SmallImages(found.native_size)
    for path, width, height in sizes:
        small.add(path, width, height)
    small.warn(f"sampled images of {root}")
    _SURVEYS[key] = found
    return found


def _mixed_notice(root: Path, found: FolderSurvey) -> str:
    name = "RGB" if found.channels == 3 else "grey"
    return (
        f"selfsup: {root} mixes grey and colour images ({found.grey} grey, {found.colour} colour in a sample "
        f"of {found.grey + found.colour}): all are converted to {name} ({found.channels} channel"
        f"{'s' if found.channels > 1 else ''}), the majority; --set channels=1 or 3 chooses"
    )


_NOTICED: set[int] = set()
"""The ``id`` of each (kept) survey whose mixed-channels notice was printed."""


@NATIVE_SIZES.register("imagefolder")
def image_folder_native_size(data_dir: str | None = None) -> int:
    """The side views of this folder get by default: the median shorter side of a sample of its pretraining
    images, at most 224 px (the same as the loaded dataset's ``native_size``, for every split)."""
    root, files, _, _ = _files("pretrain", data_dir)
    return survey(root, files).native_size


@DATASETS.register("imagefolder")
def image_folder(split: str, data_dir: str | None = None, channels: int = 0) -> ImageDataset:
    """A folder of images (see the module docstring for the layouts, channels and size)."""
    check_split(split)
    check_channels(channels)
    root, files, labels, classes = _files(split, data_dir)
    found = survey(root, files if split == "pretrain" else _files("pretrain", data_dir)[1])
    if not channels and found.mixed and id(found) not in _NOTICED:
        _NOTICED.add(id(found))
        print(_mixed_notice(root, found), file=sys.stderr, flush=True)
    channels = channels or found.channels
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else ([0.5], [0.25])
    return ImageDataset(
        name="imagefolder",
        channels=channels,
        mean=mean,
        std=std,
        files=files,
        labels=torch.tensor(labels) if labels is not None else None,
        classes=classes,
        native_size=found.native_size,
    )
