"""A short real pretraining run on Fashion-MNIST learns something.

The encoder's kNN accuracy after training must beat the same architecture at random
initialisation by more than the run-to-run noise. The noise is measured here: the standard deviation
of the random-init encoder's kNN accuracy over three initialisation seeds, on the same held-out images;
the trained encoder must beat their mean by more than three standard deviations (and by 2 points).
"""

from __future__ import annotations

import json

import pytest
import torch

from selfsup.cli.main import main
from selfsup.data import load_dataset
from selfsup.evaluation import knn_top1
from selfsup.evaluation.features import extract_features
from selfsup.methods import build_method
from selfsup.rng import seed_everything
from selfsup.run_folder import RunFolder
from tests.conftest import needs_fashion_mnist

pytestmark = pytest.mark.slow  # end to end: a minute of training

BANK, QUERIES = 5000, 2000


def knn_of(method, bank, queries) -> float:
    method.eval()
    h_bank, _ = extract_features(method.embed, bank, 32, torch.device("cpu"))
    h_query, _ = extract_features(method.embed, queries, 32, torch.device("cpu"))
    return knn_top1(h_bank, bank.labels, h_query, queries.labels)


@needs_fashion_mnist
def test_short_pretraining_beats_random_init_by_more_than_the_noise(tmp_path):
    run = tmp_path / "run"
    code = main(
        [
            "pretrain",
            "--out",
            str(run),
            "--no-progress",
            "--epochs",
            "2",
            "--batch-size",
            "64",
            "--set",
            "train_subset=20000",
            "--set",
            f"knn_bank={BANK}",
            "--set",
            f"knn_queries={QUERIES}",
        ]
    )
    assert code == 0
    summary = json.loads((run / "summary.json").read_text())
    trained = summary["final_knn_top1"]

    cfg = RunFolder(run).read_config()
    bank = load_dataset("fashion-mnist", "train").evenly_spaced(BANK)
    queries = load_dataset("fashion-mnist", "test").evenly_spaced(QUERIES)
    random_init = [summary["initial_knn_top1"]]
    for seed in (1, 2):
        seed_everything(seed)
        random_init.append(knn_of(build_method(cfg, channels=1), bank, queries))
    noise = float(torch.tensor(random_init).std())
    gain = trained - sum(random_init) / len(random_init)
    print(f"random init {random_init}, trained {trained:.4f}, gain {gain:+.4f}, noise (std) {noise:.4f}")
    assert gain > max(3 * noise, 0.02)
