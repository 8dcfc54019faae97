"""Dataset loaders, registered by name: ``fashion-mnist`` (default), ``cifar10``, ``cifar100``,
``stl10`` and ``imagefolder``.

Every loader is called as ``loader(split, data_dir, channels)`` with ``split`` one of

* ``"pretrain"``: the images used for self-supervised training (labels not needed);
* ``"train"``: the labelled training split, used as the kNN bank and linear-probe train set;
* ``"test"``: the labelled evaluation split;

and ``channels`` 0 (the dataset's own: for an image folder, the majority of its images), 1 or 3. The
built-in datasets have one channel count each; asking them for another is a :class:`ConfigError`.
"""

from __future__ import annotations

import gzip
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from selfsup.config import ConfigError, TrainConfig
from selfsup.data.base import DatasetNotFoundError, ImageDataset
from selfsup.registry import Registry

SPLITS = ("pretrain", "train", "test")
CHANNELS = (0, 1, 3)
"""Valid channel requests: 0 (automatic), 1 (grey) or 3 (RGB)."""

DatasetLoader = Callable[[str, "str | None", int], ImageDataset]
DATASETS: Registry[DatasetLoader] = Registry("dataset")
NativeSize = Callable[["str | None"], int]
NATIVE_SIZES: Registry[NativeSize] = Registry("dataset")
"""The side of a dataset's images, known without loading it (image folders look at one file)."""

FASHION_MNIST_SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


def default_cache_dir() -> Path:
    """Where downloads go when no ``--data-dir`` is given (``$SELFSUP_DATA`` overrides)."""
    return Path(os.environ.get("SELFSUP_DATA", Path.home() / ".cache" / "selfsup" / "datasets"))


def offline() -> bool:
    """``SELFSUP_OFFLINE=1`` skips every download attempt (used by the tests)."""
    return os.environ.get("SELFSUP_OFFLINE", "") not in ("", "0")


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}. Valid splits: {', '.join(SPLITS)}")


def check_channels(channels: int) -> None:
    if channels not in CHANNELS:
        raise ConfigError(f"channels must be 0 (automatic), 1 (grey) or 3 (RGB), got {channels!r}")


def require_channels(name: str, channels: int, own: int) -> None:
    """A :class:`ConfigError` unless ``channels`` is 0 (automatic) or ``own``, the dataset's channel count."""
    check_channels(channels)
    if channels not in (0, own):
        raise ConfigError(
            f"{name} has {own} channel{'s' if own > 1 else ''}; channels={channels} cannot be applied to it "
            f"(leave channels=0, or set channels={own}). Only imagefolder converts its images."
        )


def load_dataset(name: str, split: str, data_dir: str | None = None, channels: int = 0) -> ImageDataset:
    """Load dataset ``name`` (see :data:`DATASETS`) for ``split``, with ``channels`` channels (0: its own)."""
    check_split(split)
    check_channels(channels)
    return DATASETS.get(name)(split, data_dir, channels)


def run_dataset(cfg: TrainConfig, split: str) -> ImageDataset:
    """Split ``split`` of a run's dataset: its name, folder and channel count from the run's config."""
    return load_dataset(cfg.dataset, split, cfg.data_dir, cfg.channels)


def native_size(name: str, data_dir: str | None = None) -> int:
    """The side, in pixels, of dataset ``name``'s images (``ImageDataset.native_size``) without loading it."""
    return NATIVE_SIZES.get(name)(data_dir)


def resolve_augment(cfg: TrainConfig) -> None:
    """Fill in the augmentation settings that depend on the image size (``image_size``, ``crop_scale``,
    ``blur_prob``: :meth:`~selfsup.config.AugmentConfig.resolved`) from the run's dataset, in place. Done
    once, when a run's config is resolved; ``config.json`` records the filled-in values."""
    if cfg.augment.image_size is None or cfg.augment.crop_scale is None or cfg.augment.blur_prob is None:
        cfg.augment = cfg.augment.resolved(native_size(cfg.dataset, cfg.data_dir))


def _fixed_size(size: int) -> NativeSize:
    return lambda data_dir: size


for _name, _size in (("fashion-mnist", 28), ("cifar10", 32), ("cifar100", 32), ("stl10", 96)):
    NATIVE_SIZES.register(_name)(_fixed_size(_size))


# ----------------------------------------------------------------------------- IDX (Fashion-MNIST)


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (LeCun et al.'s MNIST format), gzipped or not, into a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: expected {int(np.prod(shape))} values, found {array.size}")
    return array.reshape(shape)


_IDX_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _find_idx_pair(folder: Path, part: str) -> tuple[Path, Path] | None:
    """The (images, labels) IDX files of ``part`` in ``folder`` or its torchvision layout."""
    for base in (folder, folder / "FashionMNIST" / "raw", folder / "fashion-mnist"):
        found = []
        for stem in _IDX_STEMS[part]:
            candidates = [base / stem, base / f"{stem}.gz"]
            hit = next((c for c in candidates if c.is_file()), None)
            if hit is None:
                break
            found.append(hit)
        if len(found) == 2:
            return found[0], found[1]
    return None


def _fashion_mnist_dirs(data_dir: str | None) -> list[Path]:
    """Where Fashion-MNIST is looked for: only ``data_dir`` when one is given, else the system copy and the
    download cache."""
    if data_dir:
        return [Path(data_dir).expanduser()]
    system = os.environ.get("SELFSUP_FASHION_MNIST_DIR", FASHION_MNIST_SYSTEM_DIR)
    return [Path(system), default_cache_dir()]


def _missing_from_data_dir(data_dir: str) -> DatasetNotFoundError:
    folder = Path(data_dir).expanduser()
    return DatasetNotFoundError(
        f"Fashion-MNIST was not found in --data-dir {folder} (nor in its FashionMNIST/raw/ or fashion-mnist/ "
        "sub-folders). A given --data-dir is the only place looked at: no other copy is used and nothing is "
        "downloaded into it. Either:\n"
        f"  1. put train-images-idx3-ubyte(.gz), train-labels-idx1-ubyte(.gz), t10k-images-idx3-ubyte(.gz)\n"
        f"     and t10k-labels-idx1-ubyte(.gz) into {folder}, or\n"
        "  2. leave out --data-dir: then the system copy is used (sudo apt-get install dataset-fashion-mnist\n"
        f"     puts it in {FASHION_MNIST_SYSTEM_DIR}/), else a download into {default_cache_dir()}\n"
        "     (which needs internet access once)"
    )


def _download_fashion_mnist(root: Path) -> None:
    import torchvision

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(20)
    try:
        for train in (True, False):
            torchvision.datasets.FashionMNIST(str(root), train=train, download=True)
    finally:
        socket.setdefaulttimeout(previous)


@DATASETS.register("fashion-mnist")
def fashion_mnist(split: str, data_dir: str | None = None, channels: int = 0) -> ImageDataset:
    """Fashion-MNIST (Xiao et al. 2017): 60k train / 10k test, 28x28 grayscale, 10 classes.

    With ``--data-dir``, looked for there only (a :class:`DatasetNotFoundError` if it is not there). Without,
    looked for in ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``), then in
    the download cache, filled through torchvision when online.
    """
    check_split(split)
    require_channels("fashion-mnist", channels, 1)
    part = "test" if split == "test" else "train"
    pair = None
    for folder in _fashion_mnist_dirs(data_dir):
        pair = _find_idx_pair(folder, part)
        if pair:
            break
    if pair is None and data_dir:
        raise _missing_from_data_dir(data_dir)
    download_error = ""
    if pair is None and not offline():
        root = default_cache_dir()
        try:
            _download_fashion_mnist(root)
            pair = _find_idx_pair(root, part)
        except Exception as err:  # any network/IO failure ends in the same advice
            download_error = f" (the download failed: {type(err).__name__}: {err})"
    if pair is None:
        looked = ", ".join(str(p) for p in _fashion_mnist_dirs(data_dir))
        raise DatasetNotFoundError(
            "Fashion-MNIST was not found (looked in: " + looked + "). Get it in one of three ways:\n"
            "  1. install the Debian package:  sudo apt-get install dataset-fashion-mnist\n"
            "     (puts the IDX files in /usr/share/datasets/fashion-mnist/)\n"
            "  2. pass --data-dir DIR, where DIR holds train-images-idx3-ubyte(.gz),\n"
            "     train-labels-idx1-ubyte(.gz), t10k-images-idx3-ubyte(.gz), t10k-labels-idx1-ubyte(.gz)\n"
            "  3. run once with internet access: selfsup downloads it through torchvision into\n"
            f"     {default_cache_dir()}" + download_error
        )
    images = torch.from_numpy(read_idx(pair[0]).copy()).unsqueeze(1)
    labels = torch.from_numpy(read_idx(pair[1]).astype(np.int64))
    return ImageDataset(
        name="fashion-mnist",
        channels=1,
        mean=[0.2860],
        std=[0.3530],
        images=images,
        labels=labels,
        classes=list(FASHION_MNIST_CLASSES),
    )


# ----------------------------------------------------------------------------- torchvision sets

_T = TypeVar("_T")


def _torchvision_set(factory: Callable[..., _T], name: str, data_dir: str | None, **kwargs: object) -> _T:
    """Build a torchvision dataset from ``data_dir``, downloading only if it is missing."""
    root = Path(data_dir) if data_dir else default_cache_dir()
    try:
        return factory(str(root), download=False, **kwargs)
    except (RuntimeError, FileNotFoundError) as missing:
        if offline():
            raise DatasetNotFoundError(_missing_message(name, root, "offline mode")) from missing
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(20)
        try:
            return factory(str(root), download=True, **kwargs)
        except Exception as err:
            raise DatasetNotFoundError(_missing_message(name, root, f"{type(err).__name__}: {err}")) from err
        finally:
            socket.setdefaulttimeout(previous)


def _missing_message(name: str, root: Path, why: str) -> str:
    return (
        f"{name} was not found under {root} and could not be downloaded ({why}). "
        f"Either pass --data-dir pointing at a folder that holds torchvision's {name} files "
        f"(for example the extracted archive from the dataset's website), or run once with "
        f"internet access so that torchvision can download it there."
    )


def _hwc_to_tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array.transpose(0, 3, 1, 2)))


@DATASETS.register("cifar10")
def cifar10(split: str, data_dir: str | None = None, channels: int = 0) -> ImageDataset:
    """CIFAR-10 (Krizhevsky 2009): 50k train / 10k test, 32x32 RGB, 10 classes."""
    import torchvision

    check_split(split)
    require_channels("cifar10", channels, 3)
    ds = _torchvision_set(torchvision.datasets.CIFAR10, "CIFAR-10", data_dir, train=split != "test")
    return ImageDataset(
        name="cifar10",
        channels=3,
        mean=[0.4914, 0.4822, 0.4465],
        std=[0.2470, 0.2435, 0.2616],
        images=_hwc_to_tensor(ds.data),
        labels=torch.tensor(ds.targets),
        classes=ds.classes,
    )


@DATASETS.register("cifar100")
def cifar100(split: str, data_dir: str | None = None, channels: int = 0) -> ImageDataset:
    """CIFAR-100 (Krizhevsky 2009): 50k train / 10k test, 32x32 RGB, 100 classes."""
    import torchvision

    check_split(split)
    require_channels("cifar100", channels, 3)
    ds = _torchvision_set(torchvision.datasets.CIFAR100, "CIFAR-100", data_dir, train=split != "test")
    return ImageDataset(
        name="cifar100",
        channels=3,
        mean=[0.5071, 0.4865, 0.4409],
        std=[0.2673, 0.2564, 0.2762],
        images=_hwc_to_tensor(ds.data),
        labels=torch.tensor(ds.targets),
        classes=ds.classes,
    )


@DATASETS.register("stl10")
def stl10(split: str, data_dir: str | None = None, channels: int = 0) -> ImageDataset:
    """STL-10 (Coates et al. 2011): 100k unlabeled + 5k train / 8k test, 96x96 RGB, 10 classes.

    Pretraining uses ``train+unlabeled``, as in the SSL literature; the unlabeled images carry
    the label -1.
    """
    import torchvision

    check_split(split)
    require_channels("stl10", channels, 3)
    tv_split = {"pretrain": "train+unlabeled", "train": "train", "test": "test"}[split]
    ds = _torchvision_set(torchvision.datasets.STL10, "STL-10", data_dir, split=tv_split)
    return ImageDataset(
        name="stl10",
        channels=3,
        mean=[0.4467, 0.4398, 0.4066],
        std=[0.2603, 0.2566, 0.2713],
        images=torch.from_numpy(np.ascontiguousarray(ds.data)),
        labels=torch.from_numpy(ds.labels.astype(np.int64)),
        classes=ds.classes,
    )
