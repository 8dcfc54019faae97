"""kNN and linear probes on hand-made features; the eval command end to end on tiny image folders."""

from __future__ import annotations

import json

import pytest
import torch

from selfsup.cli.main import main
from selfsup.evaluation import effective_rank, knn_predict, knn_top1, linear_probe_top1
from tests.helpers import make_folder


def test_knn_weighted_vote_hand_computed():
    bank = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    query = torch.tensor([[0.6, 0.8]])  # cos: 0.6, 0.6+0.08/|.|, 0.8
    # with k=3 and T=0.1: class 0 gets exp(6)+exp(~6.7) > exp(8)? no: exp(8)=2981 > 403+~800 -> class 1
    assert knn_predict(bank, labels, query, num_classes=2, k=3, temperature=0.1).tolist() == [1]
    # with T=1 the two class-0 votes win: e^0.6 + e^0.68 > e^0.8
    assert knn_predict(bank, labels, query, num_classes=2, k=3, temperature=1.0).tolist() == [0]
    # k=1 is plain nearest neighbour
    assert knn_predict(bank, labels, query, num_classes=2, k=1).tolist() == [1]


def test_knn_is_perfect_on_separated_clusters_and_caps_k():
    g = torch.Generator().manual_seed(0)
    centres = torch.eye(4) * 10
    x = centres.repeat_interleave(25, 0) + torch.randn(100, 4, generator=g)
    y = torch.arange(4).repeat_interleave(25)
    assert knn_top1(x, y, x, y, k=500) == 1.0 or knn_top1(x, y, x, y, k=10) == 1.0
    assert knn_top1(x, y, x, y, k=10) == 1.0


def test_linear_probe_separates_linearly_separable_data_and_not_noise():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 20, generator=g)
    w = torch.randn(20, 3, generator=g)
    y = (x @ w).argmax(1)
    acc = linear_probe_top1(x[:1500], y[:1500], x[1500:], y[1500:], epochs=30)
    assert acc > 0.95
    noise_labels = torch.randint(0, 3, (2000,), generator=g)
    chance = linear_probe_top1(x[:1500], noise_labels[:1500], x[1500:], noise_labels[1500:], epochs=10)
    assert chance < 0.45


def test_effective_rank_extremes():
    g = torch.Generator().manual_seed(0)
    assert effective_rank(torch.randn(2000, 8, generator=g)) > 7.5
    collapsed = torch.randn(500, 1, generator=g) @ torch.randn(1, 8, generator=g)
    assert effective_rank(collapsed) < 1.1


TINY_FOLDER = [
    "--dataset",
    "imagefolder",
    "--backbone",
    "resnet10",
    "--batch-size",
    "8",
    "--epochs",
    "1",
    "--no-progress",
    "--set",
    "aug.image_size=16",
    "--set",
    "hidden_dim=32",
    "--set",
    "latent_dim=16",
]


REQUIRED_KEYS = {
    "knn_top1_h",
    "knn_top1_z",
    "linear_top1_h",
    "linear_top1_z",
    "raw_pixels_knn_top1",
    "raw_pixels_linear_top1",
    "random_init_knn_top1",
    "random_init_linear_top1",
}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_pretrain_and_eval_on_an_image_folder(tmp_path, mode, capsys):
    """1- and 3-channel images work end to end, and eval --json holds every documented key."""
    data = tmp_path / "data"
    make_folder(data, ["a", "b", "c"], 12, mode=mode)
    run = tmp_path / "run"
    assert main(["pretrain", *TINY_FOLDER, "--data-dir", str(data), "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["eval", str(run), "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert results.keys() >= REQUIRED_KEYS
    assert all(0.0 <= results[key] <= 1.0 for key in REQUIRED_KEYS)
    assert json.loads((run / "eval.json").read_text()) == results


def test_eval_of_unlabelled_data_says_labels_are_needed(tmp_path, capsys):
    data = tmp_path / "data"
    make_folder(data, ["photos"], 10)
    run = tmp_path / "run"
    assert main(["pretrain", *TINY_FOLDER, "--data-dir", str(data), "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["eval", str(run)]) == 2
    assert "no labels" in capsys.readouterr().err
