"""Datasets: the IDX reader, Fashion-MNIST sources, image folders (labelled, split, unlabelled; 1 and 3 channels)."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from selfsup.data import DatasetNotFoundError, datasets, load_dataset
from selfsup.data.datasets import read_idx
from tests.conftest import needs_fashion_mnist
from tests.helpers import make_folder


def write_idx(path, array: np.ndarray, compress: bool) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + b"".join(struct.pack(">I", s) for s in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(path, "wb") as handle:
            handle.write(data)
    else:
        path.write_bytes(data)


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_round_trips(tmp_path, compress):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / ("x.gz" if compress else "x")
    write_idx(path, array, compress)
    assert np.array_equal(read_idx(path), array)


def test_read_idx_rejects_truncated_files(tmp_path):
    path = tmp_path / "x"
    write_idx(path, np.zeros((4, 4), np.uint8), compress=False)
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(path)


def test_fashion_mnist_from_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SELFSUP_FASHION_MNIST_DIR", str(tmp_path / "absent"))
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images, True)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([0, 1, 2, 3, 9], np.uint8), True)
    ds = load_dataset("fashion-mnist", "test", str(tmp_path))
    assert ds.images.shape == (5, 1, 28, 28) and ds.images.dtype == torch.uint8
    assert torch.equal(ds.images[:, 0], torch.from_numpy(images))
    assert ds.labels.tolist() == [0, 1, 2, 3, 9] and ds.num_classes == 10 and ds.channels == 1


def test_fashion_mnist_missing_names_all_three_ways(tmp_path, monkeypatch):
    monkeypatch.setenv("SELFSUP_FASHION_MNIST_DIR", str(tmp_path / "absent"))
    monkeypatch.setenv("SELFSUP_DATA", str(tmp_path / "cache"))
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("fashion-mnist", "train", str(tmp_path / "nothing"))
    message = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in message
    assert "--data-dir" in message and "internet access" in message


@needs_fashion_mnist
def test_system_fashion_mnist_is_complete():
    train, test = load_dataset("fashion-mnist", "train"), load_dataset("fashion-mnist", "test")
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert torch.bincount(train.labels).tolist() == [6000] * 10


def test_imagefolder_labelled_with_held_out_test_split(tmp_path):
    make_folder(tmp_path, ["cat", "dog"], 30)
    train = load_dataset("imagefolder", "train", str(tmp_path))
    test = load_dataset("imagefolder", "test", str(tmp_path))
    assert train.classes == ["cat", "dog"] and train.channels == 3
    assert len(train) + len(test) == 60 and len(test) > 0
    assert not {p.name for p in train.files} & {p.name for p in test.files}
    assert set(train.labels.tolist()) == {0, 1}


def test_imagefolder_explicit_splits_and_unlabelled_extra(tmp_path):
    make_folder(tmp_path / "train", ["a", "b"], 4, mode="L")
    make_folder(tmp_path / "val", ["a", "b"], 2, mode="L")
    make_folder(tmp_path / "unlabeled", ["x"], 3, mode="L")
    pretrain = load_dataset("imagefolder", "pretrain", str(tmp_path))
    assert len(pretrain) == 8 + 3 and pretrain.channels == 1
    assert (pretrain.labels == -1).sum() == 3
    assert len(load_dataset("imagefolder", "test", str(tmp_path))) == 4


def test_unlabelled_folder_pretrains_but_has_no_labels(tmp_path):
    make_folder(tmp_path, ["photos"], 5)
    ds = load_dataset("imagefolder", "pretrain", str(tmp_path))
    assert len(ds) == 5 and not ds.has_labels


def test_imagefolder_needs_a_data_dir():
    with pytest.raises(DatasetNotFoundError, match="--data-dir"):
        load_dataset("imagefolder", "pretrain", None)


def test_a_data_dir_without_fashion_mnist_is_an_error_never_a_fallback(tmp_path, monkeypatch):
    system = tmp_path / "system"  # a complete copy where the system one would be: it must not be used
    system.mkdir()
    write_idx(system / "train-images-idx3-ubyte.gz", np.zeros((2, 28, 28), np.uint8), True)
    write_idx(system / "train-labels-idx1-ubyte.gz", np.array([0, 1], np.uint8), True)
    monkeypatch.setenv("SELFSUP_FASHION_MNIST_DIR", str(system))
    monkeypatch.setenv("SELFSUP_OFFLINE", "0")  # online: still no download into the given directory

    def no_download(root):
        raise AssertionError(f"downloaded into {root}")

    monkeypatch.setattr(datasets, "_download_fashion_mnist", no_download)
    given = tmp_path / "mine"
    given.mkdir()
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("fashion-mnist", "train", str(given))
    message = str(err.value)
    assert f"--data-dir {given}" in message and "train-images-idx3-ubyte" in message
    assert "apt-get install dataset-fashion-mnist" in message and "leave out --data-dir" in message
    assert list(given.iterdir()) == []
    assert len(load_dataset("fashion-mnist", "train")) == 2  # without --data-dir: the search order stays
