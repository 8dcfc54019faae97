"""Re-run the search behind the ``cpu`` preset (docs/cpu-preset.md).

Each variant pretrains SimCLR on Fashion-MNIST for ONE epoch with ResNet-10 (ImageNet stem, 32 px)
and reports the kNN monitor (k = 200, 5000-image bank, 2000 test queries) at initialisation and
after the epoch, plus wall time. One epoch is a cheap proxy: variants are compared at the same
number of steps, which is robust to a busy machine; the chosen variant is then trained for the
full preset (``make demo``).

    python benchmarks/cpu_preset_search.py                 # all variants (about 15-25 minutes)
    python benchmarks/cpu_preset_search.py --only crop05,sgd_ref
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from selfsup.runtime import machine_line  # noqa: E402

COMMON = [
    "--backbone",
    "resnet10",
    "--epochs",
    "1",
    "--batch-size",
    "128",
    "--set",
    "knn_queries=2000",
    "--set",
    "warmup_epochs=0.1",
]
SGD = ["--set", "optimizer=sgd", "--set", "base_lr=0.7", "--set", "weight_decay=5e-4"]

VARIANTS: dict[str, list[str]] = {
    "sgd_ref": [*SGD, "--set", "aug.crop_scale=0.2,1.0"],
    "lars_lr1": [
        "--set",
        "optimizer=lars",
        "--set",
        "base_lr=1.0",
        "--set",
        "weight_decay=1e-6",
        "--set",
        "aug.crop_scale=0.2,1.0",
    ],
    "tau01": [*SGD, "--set", "aug.crop_scale=0.2,1.0", "--set", "temperature=0.1"],
    "bs64": [*SGD, "--set", "aug.crop_scale=0.2,1.0", "--batch-size", "64"],
    "vicreg_lars": [
        "--method",
        "vicreg",
        "--set",
        "optimizer=lars",
        "--set",
        "base_lr=0.6",
        "--set",
        "weight_decay=1e-6",
        "--set",
        "aug.crop_scale=0.2,1.0",
    ],
    "crop04": [*SGD, "--set", "aug.crop_scale=0.4,1.0"],
    "crop05": [*SGD, "--set", "aug.crop_scale=0.5,1.0"],
    "crop06": [*SGD, "--set", "aug.crop_scale=0.6,1.0"],
    "crop04_tau01": [*SGD, "--set", "aug.crop_scale=0.4,1.0", "--set", "temperature=0.1"],
    "crop04_nojitter": [*SGD, "--set", "aug.crop_scale=0.4,1.0", "--set", "aug.jitter_prob=0.0"],
    "crop04_28px": [*SGD, "--set", "aug.crop_scale=0.4,1.0", "--set", "aug.image_size=28"],
}


def run(name: str, extra: list[str], root: Path) -> dict:
    out = root / name
    cmd = [sys.executable, "-m", "selfsup", "pretrain", "--out", str(out), "--no-progress", *COMMON, *extra]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    summary = json.loads((out / "summary.json").read_text())
    return {
        "variant": name,
        "knn_init": summary["initial_knn_top1"],
        "knn_after_1_epoch": summary["final_knn_top1"],
        "wall_time_s": summary["wall_time_s"],
        "images_per_s": summary["images_per_s"],
        "precision": summary.get("precision"),
        "channels_last": summary.get("channels_last"),
        "machine": summary.get("machine"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="comma-separated variant names (default: all)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n] or list(VARIANTS)
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}. Valid: {', '.join(VARIANTS)}")
    if not args.json:
        print(f"machine: {machine_line()}")
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for name in names:
            rows.append(run(name, VARIANTS[name], Path(tmp)))
            if not args.json:
                r = rows[-1]
                print(
                    f"{name:16} init {r['knn_init']:.4f}  after 1 epoch {r['knn_after_1_epoch']:.4f}  "
                    f"gain {100 * (r['knn_after_1_epoch'] - r['knn_init']):+.1f} pt  {r['wall_time_s']:.0f} s",
                    flush=True,
                )
    if args.json:
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
