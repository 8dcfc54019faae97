"""Collect the results of ``benchmarks/gpu_check.sh`` into ``gpu_check.json`` and ``report.md``.

    python benchmarks/gpu_report.py gpu-check/

Reads ``environment.json``, ``stages.jsonl``, ``cuda_tests.txt``, ``throughput.json`` and the run folder
``simclr-fashion-mnist/`` (``summary.json``, ``eval.json``) from the folder; a stage whose file is missing or
unreadable is reported as such. Two criteria are checked:

* (b)/(a) >= 0.9 at ResNet-18, 32 px, batch 512 (``gpu-small``), for every method measured;
* the GPU run's kNN top-1 on h is at least that of the same command on the CPU (``CPU_REFERENCE``: 2 epochs
  of the cpu preset, measured with the command in its ``command`` field).

Exits with 1 when a stage failed, a throughput measurement is missing or a criterion is not met (criteria are
not judged in a dry run, which measures nothing real).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

EXPECTED_METHODS = ("simclr", "byol", "vicreg", "moco-v3", "swav")
EXPECTED_SETTINGS = ("gpu-small", "gpu-imagenet")
MIN_OURS_OVER_MODEL_ONLY = 0.9  # at gpu-small
CPU_REFERENCE = Path(__file__).with_name("reference") / "simclr_fashion_mnist_2_epochs_cpu.json"


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text().splitlines() if line.strip()]
    except OSError:
        return "missing"
    return lines[-1] if lines else "empty"


def collect(folder: Path) -> dict[str, Any]:
    stages = []
    if (folder / "stages.jsonl").exists():
        stages = [json.loads(line) for line in (folder / "stages.jsonl").read_text().splitlines() if line.strip()]
    run = folder / "simclr-fashion-mnist"
    return {
        "environment": _json(folder / "environment.json"),
        "stages": stages,
        "cuda_tests": _last_line(folder / "cuda_tests.txt"),
        "throughput": _json(folder / "throughput.json") or [],
        "simclr_fashion_mnist": {"summary": _json(run / "summary.json"), "evaluation": _json(run / "eval.json")},
    }


def _fmt(value: Any, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def markdown(results: dict[str, Any]) -> str:
    env = results["environment"] or {}
    lines = [
        "# GPU check",
        "",
        f"Machine: GPU {env.get('gpu') or 'none'}; CPU {env.get('cpu', '?')} ({env.get('cores', '?')} cores); "
        f"torch {env.get('torch', '?')}.",
        "",
        "| stage | exit |",
        "|---|---|",
        *[f"| {s['stage']} | {s['exit']} |" for s in results["stages"]],
        "",
        f"CUDA tests: {results['cuda_tests']}",
        "",
        "## Throughput: (a) model-only step vs (b) the full step with our data path",
        "",
        "| method | setting | backbone | px | batch | precision | channels_last | (a) img/s | (b) img/s "
        "| (b)/(a) | peak GPU MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["throughput"]:
        lines.append(
            f"| {r['method']} | {r['setting']} | {r['backbone']} | {r['image_size']} | {r['batch_size']} "
            f"| {r['precision']} | {r['channels_last']} | {_fmt(r.get('model_only_images_per_s'))} "
            f"| {_fmt(r.get('full_images_per_s'))} | {_fmt(r.get('ours_over_model_only'), '.3f')} "
            f"| {_fmt(r.get('peak_gpu_mib'), '.0f')} |"
        )
    missing = missing_measurements(results)
    if missing:
        lines += ["", f"Missing measurements (see throughput.log): {', '.join(missing)}"]
    run = results["simclr_fashion_mnist"]
    summary, evaluation = run["summary"] or {}, run["evaluation"] or {}
    reference = _json(CPU_REFERENCE) or {}
    lines += [
        "",
        "## Criteria",
        "",
        *[f"* {name}: {'met' if ok else 'NOT MET'} ({detail})" for name, ok, detail in criteria(results)],
    ]
    lines += [
        "",
        "## SimCLR on Fashion-MNIST (cpu preset) on the GPU",
        "",
        f"Training: {_fmt(summary.get('wall_time_s'))} s, {summary.get('steps', '-')} steps, "
        f"precision {summary.get('precision', '-')}.",
        f"kNN top-1 on h: {_fmt(evaluation.get('knn_top1_h'), '.4f')} (random init "
        f"{_fmt(evaluation.get('random_init_knn_top1'), '.4f')}, raw pixels "
        f"{_fmt(evaluation.get('raw_pixels_knn_top1'), '.4f')}); linear top-1 on h: "
        f"{_fmt(evaluation.get('linear_top1_h'), '.4f')}.",
        f"The same command on the CPU ({reference.get('machine', '?')}): kNN top-1 on h "
        f"{_fmt(reference.get('knn_top1_h'), '.4f')}.",
        "",
    ]
    return "\n".join(lines)


def dry_run(results: dict[str, Any]) -> bool:
    rows = results["throughput"]
    return bool(rows) and all(r.get("device") == "cpu" for r in rows)


def criteria(results: dict[str, Any]) -> list[tuple[str, bool, str]]:
    """(name, met, detail) of the GPU criteria; empty in a dry run."""
    if dry_run(results):
        return []
    small = [r for r in results["throughput"] if r["setting"] == "gpu-small"]
    limit = MIN_OURS_OVER_MODEL_ONLY
    slow = [f"{r['method']} {r['ours_over_model_only']:.3f}" for r in small if r["ours_over_model_only"] < limit]
    evaluation = results["simclr_fashion_mnist"]["evaluation"] or {}
    reference = _json(CPU_REFERENCE) or {}
    gpu_knn, cpu_knn = evaluation.get("knn_top1_h"), reference.get("knn_top1_h")
    knn_ok = gpu_knn is not None and cpu_knn is not None and gpu_knn >= cpu_knn
    return [
        (
            f"(b)/(a) >= {MIN_OURS_OVER_MODEL_ONLY} at ResNet-18, 32 px, batch 512",
            bool(small) and not slow,
            f"below: {', '.join(slow)}" if slow else f"{len(small)} methods measured",
        ),
        ("2-epoch kNN on the GPU >= on the CPU", knn_ok, f"GPU {_fmt(gpu_knn, '.4f')}, CPU {_fmt(cpu_knn, '.4f')}"),
    ]


def missing_measurements(results: dict[str, Any]) -> list[str]:
    rows = results["throughput"]
    methods = sorted({r["method"] for r in rows}) if dry_run(results) else EXPECTED_METHODS
    have = {(r["method"], r["setting"]) for r in rows}
    return [f"{m}/{s}" for m in methods for s in EXPECTED_SETTINGS if (m, s) not in have]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    folder = Path(argv[0])
    results = collect(folder)
    (folder / "gpu_check.json").write_text(json.dumps(results, indent=2) + "\n")
    (folder / "report.md").write_text(markdown(results))
    print((folder / "report.md").read_text())
    failed = [s["stage"] for s in results["stages"] if s["exit"]]
    unmet = [name for name, ok, _ in criteria(results) if not ok]
    return 1 if failed or unmet or missing_measurements(results) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
