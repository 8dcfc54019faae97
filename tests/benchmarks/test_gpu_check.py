"""``benchmarks/gpu_check.sh`` runs end to end without a GPU (its dry run: every stage, tiny), so that the
few minutes of a lent GPU are not lost to a broken script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import needs_fashion_mnist

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_report  # noqa: E402


@pytest.mark.slow
@needs_fashion_mnist
def test_gpu_check_dry_run_writes_every_result(tmp_path):
    out = tmp_path / "gpu-check"
    env = {**os.environ, "SELFSUP_GPU_CHECK_DRY_RUN": "1", "OUT": str(out), "OMP_NUM_THREADS": "2"}
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((out / "gpu_check.json").read_text())
    stages = ["environment", "cuda_tests", "throughput", "simclr_fashion_mnist"]
    assert [s["stage"] for s in results["stages"]] == stages
    assert all(s["exit"] == 0 for s in results["stages"])
    assert {(r["method"], r["setting"]) for r in results["throughput"]} == {
        ("simclr", "gpu-small"),
        ("simclr", "gpu-imagenet"),
    }
    assert all(r["ours_over_model_only"] > 0 for r in results["throughput"])
    evaluation = results["simclr_fashion_mnist"]["evaluation"]
    assert 0 < evaluation["knn_top1_h"] <= 1
    report = (out / "report.md").read_text()
    assert "| simclr | gpu-imagenet | resnet50/imagenet |" in report and "kNN top-1 on h" in report
    assert "1 skipped" in results["cuda_tests"] or "passed" in results["cuda_tests"]


def _gpu_results(ratios: dict[str, float], knn: float) -> dict:
    rows = [
        {"method": m, "setting": s, "device": "cuda:0", "ours_over_model_only": ratios.get(m, 1.0)}
        for m in gpu_report.EXPECTED_METHODS
        for s in gpu_report.EXPECTED_SETTINGS
    ]
    return {"throughput": rows, "simclr_fashion_mnist": {"evaluation": {"knn_top1_h": knn}}, "stages": []}


def test_report_criteria_are_judged_on_gpu_results():
    reference = json.loads(gpu_report.CPU_REFERENCE.read_text())["knn_top1_h"]
    met = gpu_report.criteria(_gpu_results({}, knn=reference))
    assert [ok for _, ok, _ in met] == [True, True]
    unmet = gpu_report.criteria(_gpu_results({"swav": 0.85}, knn=reference - 0.01))
    assert [ok for _, ok, _ in unmet] == [False, False] and "swav 0.850" in unmet[0][2]
    partial = _gpu_results({}, knn=reference)
    partial["throughput"] = partial["throughput"][1:]
    assert gpu_report.missing_measurements(partial) == ["simclr/gpu-small"]
