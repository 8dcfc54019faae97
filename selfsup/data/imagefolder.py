"""``imagefolder``: your own images, labelled by sub-folder or not labelled at all.

Accepted layouts under ``--data-dir ROOT``:

* ``ROOT/train/<class>/*.jpg`` and ``ROOT/val/<class>/*.jpg`` (or ``test/``): explicit splits;
  an extra ``ROOT/unlabeled/`` folder joins the pretraining images (the STL-10 layout);
* ``ROOT/<class>/*.jpg`` with two or more class folders: labelled; a fixed 10 % of each class,
  chosen by a hash of the file name, is held out as the test split;
* anything else (images directly in ``ROOT``, or a single folder of them, nested or not):
  unlabelled. Pretraining works; kNN and linear evaluation need labels and say so.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from PIL import Image

from selfsup.data.base import DatasetNotFoundError, ImageDataset
from selfsup.data.datasets import DATASETS, NATIVE_SIZES, check_split

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


def _native(first: Path) -> int:
    """The native size of a folder: its first image's shorter side, at most 224."""
    with Image.open(first) as image:
        return min(224, min(image.size))


@NATIVE_SIZES.register("imagefolder")
def image_folder_native_size(data_dir: str | None = None) -> int:
    """The side views of this folder get by default (its first pretraining image's shorter side, <= 224)."""
    return _native(_files("pretrain", data_dir)[1][0])


@DATASETS.register("imagefolder")
def image_folder(split: str, data_dir: str | None = None) -> ImageDataset:
    """A folder of images (see the module docstring for the layouts)."""
    check_split(split)
    root, files, labels, classes = _files(split, data_dir)
    with Image.open(files[0]) as first:
        channels = 1 if first.mode in ("L", "I", "I;16", "1") else 3
    native = _native(files[0])
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else ([0.5], [0.25])
    return ImageDataset(
        name="imagefolder",
        channels=channels,
        mean=mean,
        std=std,
        files=files,
        labels=torch.tensor(labels) if labels is not None else None,
        classes=classes,
        native_size=native,
    )
