"""``selfsup eval RUN_DIR``: kNN and linear probes on h and z, next to the baselines.

For a finished (or interrupted) run this computes, on the labelled train/test splits of the run's
dataset and with frozen, un-augmented images:

* kNN top-1 (k = 200, T = 0.1, cosine, weighted vote) and linear-probe top-1, on the backbone
  features h and on the projector outputs z;
* the same for two baselines: raw pixels (values in [0, 1], flattened), and the same architecture
  at its random initialisation (rebuilt from the run's seed, i.e. the exact weights training
  started from). kNN is also reported on *standardized* pixels (dataset mean and std applied, as
  for the encoder's input), which subtracting the mean makes a stronger cosine-kNN baseline.

All accuracies are fractions in [0, 1].

For a method trained with labels (the supervised baseline), whose z is its classifier's logits, the test
top-1 of that classifier is reported too (``classifier_top1``).

``save_embeddings=True`` also writes ``RUN_DIR/eval_embeddings.npz`` for the plots of ``selfsup compare``:
the singular values of the centred test embeddings h and z, their 2-D PCA coordinates and the test labels.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from selfsup import runtime
from selfsup.augment.views import require_resolved
from selfsup.config import TrainConfig
from selfsup.data import MAX_BAD_FRACTION, run_dataset
from selfsup.data.base import ImageDataset
from selfsup.evaluation.collapse import effective_rank, embedding_std
from selfsup.evaluation.features import FeatureSet, dataset_features, raw_pixel_features
from selfsup.evaluation.knn import knn_top1
from selfsup.evaluation.linear import linear_probe_top1
from selfsup.methods import Method, build_method
from selfsup.rng import seed_everything
from selfsup.run_folder import EMBEDDINGS, EVALUATION, RunFolder

PROTOCOLS = ("knn", "linear", "all")


class EvaluationError(ValueError):
    """The run cannot be evaluated (no labels, no checkpoint ...); the message says why."""


def load_trained_method(run_dir: str | Path, device: torch.device, channels: int) -> tuple[Method, TrainConfig]:
    """The run's method with its last checkpoint loaded, in eval mode."""
    folder = RunFolder(run_dir)
    cfg = folder.read_config()
    method = build_method(cfg, channels)
    method.load_state_dict(folder.read_checkpoint()["method"])
    return method.to(device).eval(), cfg


def _scores(
    train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor], protocols: Sequence[str]
) -> dict[str, float]:
    (x, y), (xt, yt) = train, test
    out = {}
    if "knn" in protocols:
        out["knn_top1"] = knn_top1(x, y, xt, yt)
    if "linear" in protocols:
        out["linear_top1"] = linear_probe_top1(x, y, xt, yt)
    return out


def _features(
    method: Any,
    dataset: ImageDataset,
    size: int,
    device: torch.device,
    label: str,
    show: bool,
    max_bad_fraction: float = MAX_BAD_FRACTION,
) -> FeatureSet:
    """The features of the readable images of ``dataset`` (unreadable files skipped with a warning)."""
    channels_last = device.type in ("cpu", "cuda")
    if channels_last:
        method = method.to(memory_format=torch.channels_last)
    with tqdm(total=len(dataset), desc=label, unit="img", disable=not show, leave=False) as bar:
        return dataset_features(
            method.embed,
            dataset,
            size,
            device,
            channels_last=channels_last,
            progress=bar.update,
            max_bad_fraction=max_bad_fraction,
        )


def _readable(dataset: ImageDataset, features: FeatureSet) -> ImageDataset:
    """``dataset`` without the images that could not be read, so that labels match the features' rows."""
    return dataset if len(features.kept) == len(dataset) else dataset.subset(features.kept)


def embedding_summary(name: str, embeddings: torch.Tensor) -> dict[str, np.ndarray]:
    """Singular values of the centred embeddings and their 2-D PCA coordinates (for the plots)."""
    x = embeddings.float()
    u, s, _ = torch.linalg.svd(x - x.mean(0), full_matrices=False)
    return {f"{name}_singular": s.numpy(), f"{name}_pca2": (u[:, :2] * s[:2]).numpy()}


def evaluate_run(
    run_dir: str | Path,
    protocol: str = "all",
    device: str = "auto",
    baselines: bool = True,
    progress: bool = True,
    max_train: int = 0,
    max_test: int = 0,
    save_embeddings: bool = False,
) -> dict[str, Any]:
    """Evaluate a run; returns (and writes to ``RUN_DIR/eval.json``) a flat dict of results.

    ``max_train`` / ``max_test`` evaluate on evenly spaced subsets (0: all).
    """
    if protocol not in PROTOCOLS:
        raise EvaluationError(f"unknown protocol {protocol!r}. Valid: {', '.join(PROTOCOLS)}")
    protocols = ("knn", "linear") if protocol == "all" else (protocol,)
    started = time.perf_counter()
    folder = RunFolder(run_dir)
    cfg = folder.read_config()
    torch_device = runtime.resolve_device(device)
    train, test = run_dataset(cfg, "train"), run_dataset(cfg, "test")
    train = train.evenly_spaced(max_train) if max_train else train
    test = test.evenly_spaced(max_test) if max_test else test
    if not (train.has_labels and test.has_labels):
        raise EvaluationError(
            f"the {cfg.dataset} data under {cfg.data_dir} has no labels, so kNN and linear "
            "evaluation are impossible. Give the images class sub-folders "
            "(see `selfsup pretrain --help`, imagefolder)."
        )
    size = int(require_resolved(cfg.augment).image_size)  # type: ignore[arg-type]
    method, _ = load_trained_method(run_dir, torch_device, train.channels)
    bad = cfg.max_bad_fraction
    trained_train = _features(method, train, size, torch_device, "features (trained)", progress, bad)
    trained_test = _features(method, test, size, torch_device, "features (trained, test)", progress, bad)
    train, test = _readable(train, trained_train), _readable(test, trained_test)  # the later passes skip nothing
    assert train.labels is not None and test.labels is not None  # has_labels implies labels
    h_train, z_train = trained_train.h, trained_train.z
    h_test, z_test = trained_test.h, trained_test.z
    results: dict[str, Any] = {
        "method": cfg.method,
        "dataset": cfg.dataset,
        "backbone": cfg.backbone,
        "image_size": size,
        "train_images": len(train),
        "test_images": len(test),
    }
    for name, tr, te in (("h", h_train, h_test), ("z", z_train, z_test)):
        for key, value in _scores((tr, train.labels), (te, test.labels), protocols).items():
            results[f"{key.replace('_top1', '')}_top1_{name}"] = value
    results["effective_rank_z"] = effective_rank(z_test)
    results["embedding_std_z"] = embedding_std(z_test)
    if method.uses_labels:  # z is the classifier's logits
        results["classifier_top1"] = float((z_test.argmax(1) == test.labels).float().mean())
    if save_embeddings:
        arrays = {
            **embedding_summary("h", h_test),
            **embedding_summary("z", z_test),
            "labels": test.labels.numpy(),
            "classes": np.array(test.classes, dtype=str),
        }
        with open(folder.file(EMBEDDINGS), "wb") as handle:
            np.savez(handle, **arrays)  # type: ignore[arg-type]  # numpy stub: **arrays checked against allow_pickle
    if baselines:
        raw_train, raw_test = raw_pixel_features(train), raw_pixel_features(test)
        for key, value in _scores((raw_train, train.labels), (raw_test, test.labels), protocols).items():
            results[f"raw_pixels_{key}"] = value
        if "knn" in protocols:
            std_train = raw_pixel_features(train, standardize=True)
            std_test = raw_pixel_features(test, standardize=True)
            results["standardized_pixels_knn_top1"] = knn_top1(std_train, train.labels, std_test, test.labels)
        seed_everything(cfg.seed)
        random_method = build_method(cfg, train.channels).to(torch_device).eval()
        r_train = _features(random_method, train, size, torch_device, "features (random init)", progress).h
        r_test = _features(random_method, test, size, torch_device, "features (random init, test)", progress).h
        for key, value in _scores((r_train, train.labels), (r_test, test.labels), protocols).items():
            results[f"random_init_{key}"] = value
    results["eval_time_s"] = round(time.perf_counter() - started, 1)
    folder.write_json(EVALUATION, results)
    return results


def format_table(results: dict[str, Any]) -> str:
    """The evaluation table printed by ``selfsup eval``."""

    def cell(key: str) -> str:
        value = results.get(key)
        return f"{100 * value:6.2f}" if isinstance(value, float) else "     -"

    rows = [
        ("trained encoder, h (backbone)", "knn_top1_h", "linear_top1_h"),
        ("trained encoder, z (projector)", "knn_top1_z", "linear_top1_z"),
        ("random-init encoder, h", "random_init_knn_top1", "random_init_linear_top1"),
        ("raw pixels (values in [0, 1])", "raw_pixels_knn_top1", "raw_pixels_linear_top1"),
        ("standardized pixels", "standardized_pixels_knn_top1", ""),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [
        f"{results['method']} on {results['dataset']} ({results['backbone']}, {results['image_size']} px): "
        f"top-1 accuracy (%) on {results['test_images']} test images",
        f"{'features'.ljust(width)}  kNN(k=200)  linear",
        f"{'-' * width}  ----------  ------",
    ]
    for label, knn_key, linear_key in rows:
        lines.append(f"{label.ljust(width)}      {cell(knn_key)}  {cell(linear_key)}")
    return "\n".join(lines)
