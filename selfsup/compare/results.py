"""What the report needs from each run folder (read through :class:`selfsup.run_folder.RunFolder`), and the
aggregation of runs that differ only by seed.

Besides the engine's and the evaluation's files, a run of ``selfsup compare`` has ``compare.json``: its status
in the comparison and the evaluation subset.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from selfsup.compare.plan import RunSpec
from selfsup.config import TrainConfig
from selfsup.run_folder import EMBEDDINGS, STATUS, RunFolder


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
    folder = RunFolder(run_dir)
    result = RunResult(spec, run_dir)
    if folder.is_run():
        result.config = folder.read_config()
    result.summary = folder.read_summary()
    result.evaluation = folder.read_evaluation()
    result.status = folder.read_json(STATUS)
    result.metrics = folder.read_metrics()
    path = folder.file(EMBEDDINGS)
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
