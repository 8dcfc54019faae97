"""Accuracy parity: the same pretraining through two data paths (or two precisions), then kNN.

    python benchmarks/data_path_accuracy.py                          # batched vs per-image, cpu preset
    python benchmarks/data_path_accuracy.py --compare precision      # bf16 vs fp32 autocast
    python benchmarks/data_path_accuracy.py --method vicreg --epochs 2 --set train_subset=20000

Each variant is one ``selfsup pretrain`` (``--preset cpu``, same seed, same everything except the
compared setting) followed by ``selfsup eval --protocol knn`` on the full train/test splits. The
fast path is acceptable when its kNN top-1 is within the seed-to-seed spread of the reference
(about +-0.5 point for the cpu preset on Fashion-MNIST; ``--seeds 0,1`` runs both variants per seed to
measure it). Runs go to ``--out`` (default ``runs/accuracy-parity``); a table and
``--out/parity.json`` summarise them. On 2 CPU cores the default (two cpu-preset runs) takes about
30-40 minutes; wrap it in ``flock /tmp/selfsup-cpu.lock`` on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from selfsup.runtime import machine_line  # noqa: E402

COMPARISONS = {
    # name: [(label, --set overrides)]; the first variant is the one under test, the second the reference
    "data_path": [("batched", {"data_path": "batched"}), ("per-image", {"data_path": "per-image", "num_workers": "2"})],
    "precision": [("bf16", {"precision": "bf16"}), ("fp32", {"precision": "fp32"})],
}


def run_variant(out: Path, label: str, seed: int, args: argparse.Namespace, sets: dict[str, str]) -> dict:
    run_dir = out / f"{label}-seed{seed}"
    pretrain = [
        sys.executable,
        "-m",
        "selfsup",
        "pretrain",
        "--method",
        args.method,
        "--dataset",
        args.dataset,
        "--preset",
        "cpu",
        "--seed",
        str(seed),
        "--out",
        str(run_dir),
        "--no-progress",
    ]
    if args.epochs:
        pretrain += ["--epochs", str(args.epochs)]
    if args.data_dir:
        pretrain += ["--data-dir", args.data_dir]
    for key, value in {**sets, **dict(item.split("=", 1) for item in args.sets)}.items():
        pretrain += ["--set", f"{key}={value}"]
    if not (run_dir / "summary.json").exists():
        print(" ".join(pretrain), flush=True)
        subprocess.run(pretrain, check=True)
    summary = json.loads((run_dir / "summary.json").read_text())
    if not (run_dir / "eval.json").exists():
        subprocess.run(
            [sys.executable, "-m", "selfsup", "eval", str(run_dir), "--protocol", "knn", "--no-baselines", "--json"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    evaluation = json.loads((run_dir / "eval.json").read_text())
    knn = {k: v for k, v in evaluation.items() if k.startswith("knn") and isinstance(v, float)}
    return {
        "variant": label,
        "seed": seed,
        "run_dir": str(run_dir),
        "wall_time_s": summary["wall_time_s"],
        "images_per_s": summary["images_per_s"],
        "final_loss": summary["final_loss"],
        "knn_monitor": summary.get("final_knn_top1"),
        **knn,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compare", default="data_path", choices=sorted(COMPARISONS))
    parser.add_argument("--method", default="simclr")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--epochs", type=int, default=None, help="default: the cpu preset's")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds; each runs every variant")
    parser.add_argument(
        "--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help="extra settings for every variant"
    )
    parser.add_argument("--out", default="runs/accuracy-parity")
    args = parser.parse_args(argv)
    out = Path(args.out) / args.compare
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows = [
        run_variant(out, label, int(seed), args, sets)
        for seed in args.seeds.split(",")
        for label, sets in COMPARISONS[args.compare]
    ]
    (out / "parity.json").write_text(json.dumps(rows, indent=2) + "\n")
    keys = [k for k in rows[0] if k.startswith("knn")]
    print(
        f"\n{args.method} on {args.dataset}, cpu preset, {args.compare}: "
        f"{(time.perf_counter() - started) / 60:.1f} min on {machine_line()}"
    )
    print(f"{'variant':<10}{'seed':>5}{'images/s':>10}{'final loss':>12}" + "".join(f"{k:>16}" for k in keys))
    for r in rows:
        print(
            f"{r['variant']:<10}{r['seed']:>5}{r['images_per_s']:>10.0f}{r['final_loss']:>12.4f}"
            + "".join(f"{r.get(k, float('nan')):>16.4f}" for k in keys)
        )


if __name__ == "__main__":
    main()
