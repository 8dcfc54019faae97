"""The report's figures, drawn with matplotlib's Agg backend into PNG bytes (no window, no pyplot state).

* :func:`loss_curves`: the training loss of every run against epochs (one panel per run: the
  methods' losses have different scales and signs);
* :func:`knn_curves`: the kNN monitor's top-1 over training (``knn_top1`` rows of metrics.jsonl);
* :func:`spectra`: the normalised singular values of the centred test embeddings h and z, on a log
  scale: a spectrum that drops to ~0 after a few dimensions is (dimensional) collapse;
* :func:`embedding_maps`: the test embeddings h projected on their first two principal components
  (PCA), coloured by class;
* :func:`ablation_bars`: linear-probe and kNN top-1 on h and z for each arm of an ablation.

Each function returns ``None`` when no run has the data it needs.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from selfsup.compare.results import Aggregate, RunResult  # noqa: E402

DPI = 100


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return buffer.getvalue()


def _grid(n: int, ncols: int = 4) -> tuple[int, int]:
    cols = max(1, min(ncols, n))
    return math.ceil(n / cols), cols


def _color(i: int) -> tuple[float, ...]:
    return matplotlib.colormaps["tab20" if i >= 10 else "tab10"](i % 20 if i >= 10 else i)


def loss_curves(runs: Sequence[RunResult]) -> bytes | None:
    runs = [r for r in runs if any("loss" in row for row in r.metrics)]
    if not runs:
        return None
    rows, cols = _grid(len(runs))
    fig = Figure(figsize=(3.2 * cols, 2.4 * rows))
    for i, run in enumerate(runs):
        ax = fig.add_subplot(rows, cols, i + 1)
        points = [
            (row["epoch"], row["loss"])
            for row in run.metrics
            if isinstance(row.get("loss"), (int, float)) and math.isfinite(row["loss"])
        ]
        if points:
            x, y = zip(*points)
            ax.plot(x, y, color=_color(i), linewidth=1.2, marker="o" if len(points) < 20 else None, markersize=3)
        ax.set_title(run.label, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_ylabel("loss", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle("Training loss", fontsize=11)
    fig.tight_layout()
    return _png(fig)


def knn_curves(runs: Sequence[RunResult]) -> bytes | None:
    series = []
    for run in runs:
        points = [
            (row["epoch"], 100 * row["knn_top1"])
            for row in run.metrics
            if isinstance(row.get("knn_top1"), (int, float))
        ]
        if points:
            series.append((run.label, points))
    if not series:
        return None
    fig = Figure(figsize=(7, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    for i, (label, points) in enumerate(series):
        x, y = zip(*points)
        ax.plot(x, y, marker="o", markersize=3, linewidth=1.2, color=_color(i), label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("kNN top-1 (%), monitor subset")
    ax.set_title("kNN accuracy of h during training")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return _png(fig)


def spectra(runs: Sequence[RunResult]) -> bytes | None:
    runs = [r for r in runs if "z_singular" in r.embeddings]
    if not runs:
        return None
    fig = Figure(figsize=(11, 4.2))
    for panel, name in enumerate(("h", "z")):
        ax = fig.add_subplot(1, 2, panel + 1)
        for i, run in enumerate(runs):
            s = np.asarray(run.embeddings[f"{name}_singular"], dtype=np.float64)
            s = s[: max(1, len(run.embeddings["labels"]) - 1)] if "labels" in run.embeddings else s  # rank <= N-1
            if s.size == 0 or s[0] <= 0:
                continue
            ax.semilogy(
                np.arange(1, s.size + 1), np.maximum(s / s[0], 1e-12), color=_color(i), linewidth=1.2, label=run.label
            )
        ax.set_xlabel("singular value index")
        ax.set_ylabel("σ_i / σ_1")
        ax.set_title(f"Spectrum of the test embeddings {name}" + (" (backbone)" if name == "h" else " (projector)"))
        ax.set_ylim(1e-6, 1.5)
        ax.grid(alpha=0.3, which="both")
    fig.axes[-1].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return _png(fig)


def embedding_maps(runs: Sequence[RunResult], max_points: int = 3000) -> bytes | None:
    runs = [r for r in runs if "h_pca2" in r.embeddings and "labels" in r.embeddings]
    if not runs:
        return None
    rows, cols = _grid(len(runs))
    fig = Figure(figsize=(3.0 * cols, 3.0 * rows + 0.6))
    classes: list[str] = []
    for i, run in enumerate(runs):
        ax = fig.add_subplot(rows, cols, i + 1)
        points, labels = run.embeddings["h_pca2"], run.embeddings["labels"]
        step = max(1, len(labels) // max_points)
        points, labels = points[::step], labels[::step]
        ax.scatter(points[:, 0], points[:, 1], c=labels, cmap="tab10", vmin=0, vmax=9, s=2, alpha=0.6, linewidths=0)
        ax.set_title(run.label, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        if not classes and "classes" in run.embeddings:
            classes = [str(c) for c in run.embeddings["classes"]]
    if classes and len(classes) <= 10:
        cmap = matplotlib.colormaps["tab10"]
        handles = [
            Line2D([], [], marker="o", linestyle="", color=cmap(k), label=name) for k, name in enumerate(classes)
        ]
        fig.legend(handles=handles, loc="lower center", ncol=min(5, len(classes)), fontsize=7, frameon=False)
    fig.suptitle("Test embeddings h, first two principal components (PCA), coloured by class", fontsize=10)
    fig.tight_layout(rect=(0, 0.06 if classes else 0, 1, 1))
    return _png(fig)


BAR_KEYS = (
    ("linear_top1_h", "linear, h"),
    ("linear_top1_z", "linear, z"),
    ("knn_top1_h", "kNN, h"),
    ("knn_top1_z", "kNN, z"),
)


def ablation_bars(arms: Sequence[Aggregate], labels: Sequence[str], title: str) -> bytes | None:
    if not any(arm.mean("linear_top1_h") is not None or arm.mean("knn_top1_h") is not None for arm in arms):
        return None
    fig = Figure(figsize=(max(5.0, 1.6 * len(arms) + 2), 3.6))
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(BAR_KEYS)
    x = np.arange(len(arms))
    for k, (key, name) in enumerate(BAR_KEYS):
        means = [100 * (arm.mean(key) or 0.0) for arm in arms]
        errors = [100 * (arm.spread(key) or 0.0) for arm in arms]
        ax.bar(
            x + (k - 1.5) * width,
            means,
            width,
            yerr=errors if any(errors) else None,
            label=name,
            color=_color(k),
            capsize=2,
        )
    values = [100 * v for arm in arms for key, _ in BAR_KEYS for v in arm.values(key)]
    if values:
        ax.set_ylim(max(0.0, min(values) - 10), min(100.0, max(values) + 5))
    ax.set_xticks(x, list(labels), fontsize=8)
    ax.set_ylabel("top-1 (%)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.12), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _png(fig)
