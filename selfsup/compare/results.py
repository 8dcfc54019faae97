"""Read back what a run folder holds, for the report: config, summary, evaluation, curves, embeddings.

A run folder of ``selfsup compare`` has the engine's files (``config.json``, ``summary.json``,
``metrics.jsonl``, ``checkpoints/last.pt``), the evaluation's (``eval.json``, ``eval_embeddings.npz``)
and ``compare.json`` (the run's status in the comparison, the evaluation subset, and for the
supervised baseline the test top-1 of its own classifier).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from selfsup.compare.plan import RunSpec
from selfsup.config import TrainConfig
from selfsup.evaluation.evaluate import EMBEDDINGS_FILE

STATUS_FILE = "compare.json"


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


@dataclass
class RunResult:
    """Everything the report needs about one run (empty dicts where a file is missing)."""

    spec: RunSpec
    run_dir: Path
    config: TrainConfig | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)
    status: dict[str, Any] = field(default_factory=dict)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.spec.label

    @property
    def state(self) -> str:
        """``finished``, ``stopped at step N``, ``failed: ...`` or ``not run`` (+ a failed evaluation)."""
        state = str(self.status.get("state") or ("unknown" if self.summary else "not run"))
        return state + (f"; evaluation failed: {self.status['eval_error']}" if self.status.get("eval_error") else "")

    @property
    def failed(self) -> bool:
        return self.state.startswith("failed") or bool(self.status.get("eval_error"))

    def metric(self, key: str) -> float | None:
        """A number from eval.json, then compare.json, then summary.json (None if absent)."""
        for source in (self.evaluation, self.status, self.summary):
            value = source.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                return float(value)
        return None


def load_result(spec: RunSpec, run_dir: Path) -> RunResult:
    result = RunResult(spec, run_dir)
    config = read_json(run_dir / "config.json")
    if config:
        result.config = TrainConfig.from_dict(config)
    result.summary = read_json(run_dir / "summary.json")
    result.evaluation = read_json(run_dir / "eval.json")
    result.status = read_json(run_dir / STATUS_FILE)
    result.metrics = read_metrics(run_dir / "metrics.jsonl")
    path = run_dir / EMBEDDINGS_FILE
    if path.is_file():
        with np.load(path, allow_pickle=False) as data:
            result.embeddings = {k: data[k] for k in data.files}
    return result


@dataclass
class Aggregate:
    """The runs of one configuration over seeds: means, and the spread when there are several."""

    runs: list[RunResult]

    @property
    def first(self) -> RunResult:
        return self.runs[0]

    @property
    def label(self) -> str:
        return self.first.label

    def values(self, key: str) -> list[float]:
        return [v for v in (r.metric(key) for r in self.runs) if v is not None]

    def mean(self, key: str) -> float | None:
        values = self.values(key)
        return statistics.fmean(values) if values else None

    def spread(self, key: str) -> float | None:
        """The sample standard deviation over seeds (None with fewer than two)."""
        values = self.values(key)
        return statistics.stdev(values) if len(values) >= 2 else None


def aggregate(results: Sequence[RunResult]) -> list[Aggregate]:
    """Group runs that differ only by seed, keeping the order of first appearance."""
    groups: dict[str, list[RunResult]] = {}
    for result in results:
        groups.setdefault(result.spec.key, []).append(result)
    return [Aggregate(runs) for runs in groups.values()]
