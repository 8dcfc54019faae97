"""Frozen features of image files: unreadable files are skipped with a warning, and the kept indices keep
features and labels aligned."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.data import load_dataset
from selfsup.data.bad_images import TooManyBadImagesError
from selfsup.evaluation.features import (
    UnreadableImagesError,
    dataset_features,
    extract_features,
    raw_pixel_features,
)

CPU = torch.device("cpu")


def mean_colour(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A stand-in encoder: h = the mean of each channel, z = -h."""
    h = batch.mean((2, 3))
    return h, -h


@pytest.fixture
def test_split_with_a_text_file(tmp_path):
    """``train/{a,b}`` and ``val/{a,b}`` of uniform images (brightness 10 * i + 20 * class), and a text file
    named ``.png`` in ``val/a``."""
    for split, count in (("train", 2), ("val", 3)):
        for label, name in enumerate("ab"):
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(count):
                value = 10 * i + 100 * label
                Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(tmp_path / split / name / f"{i}.png")
    (tmp_path / "val" / "a" / "1x.png").write_text("not an image")  # sorts between 1.png and 2.png
    return load_dataset("imagefolder", "test", str(tmp_path))


def test_features_skip_a_bad_test_file_and_keep_labels_aligned(test_split_with_a_text_file, capsys):
    test = test_split_with_a_text_file
    names = [f"{f.parent.name}/{f.name}" for f in test.files]
    assert names == ["a/0.png", "a/1.png", "a/1x.png", "a/2.png", "b/0.png", "b/1.png", "b/2.png"]
    features = dataset_features(mean_colour, test, 8, CPU, batch_size=3, max_bad_fraction=0.2)
    assert features.kept.tolist() == [0, 1, 3, 4, 5, 6]
    err = capsys.readouterr().err
    assert err.count("skipping an unreadable image") == 1 and str(test.files[2]) in err
    kept = test.subset(features.kept)
    assert kept.labels.tolist() == [0, 0, 0, 1, 1, 1]
    # each row is the image of its label: brightness 10 * i + 100 * label, normalised with the dataset's statistics
    brightness = torch.tensor([0, 10, 20, 100, 110, 120]) / 255
    expected = (brightness[:, None] - torch.tensor(test.mean)) / torch.tensor(test.std)
    assert torch.allclose(features.h, expected, atol=1e-5) and torch.equal(features.z, -features.h)
    h, _ = extract_features(mean_colour, kept, 8, CPU)  # the readable subset: every row
    assert torch.allclose(h, features.h)
    assert raw_pixel_features(kept).shape == (6, 3 * 8 * 8)


def test_whole_dataset_features_refuse_rows_that_would_not_match_the_labels(test_split_with_a_text_file):
    with pytest.raises(TooManyBadImagesError, match="1 of 7 images"):  # 14 % > 1 %
        extract_features(mean_colour, test_split_with_a_text_file, 8, CPU)
    with pytest.raises(UnreadableImagesError, match="1 of the 7 images"):
        raw_pixel_features(test_split_with_a_text_file, max_bad_fraction=0.2)
    with pytest.raises(UnreadableImagesError, match="1 of the 7 images"):
        extract_features(mean_colour, test_split_with_a_text_file, 8, CPU, max_bad_fraction=0.2)
