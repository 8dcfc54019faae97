"""The runtime trial of every method: which precision and memory format wins on this machine, and by how much.

For each method this builds the real engine at a preset (default ``cpu``, the demo) with ``precision=auto``
and ``channels_last=auto``, runs :meth:`selfsup.engine.trainer.Trainer.setup` (which runs the trial of
:mod:`selfsup.engine.autotune`), and reports every candidate's images/s, how close the bf16 trial losses came
to the limit of agreement with float32's (the largest ``|loss - loss_fp32| / (LOSS_TOLERANCE * |loss_fp32| +
LOSS_FLOOR)`` over steps and bf16 candidates: above 1 disqualifies) and the choice. Each method runs in a
fresh subprocess (oneDNN's kernel caches and the allocator are per process).

    python benchmarks/runtime_choice.py                         # every method, cpu preset
    python benchmarks/runtime_choice.py --methods simclr --set backbone=resnet18 --set stem=cifar --preset small
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def trial(method: str, preset: str, sets: dict[str, str]) -> dict:
    from selfsup import runtime
    from selfsup.engine import autotune
    from selfsup.engine.trainer import Trainer
    from selfsup.models import backbone_label
    from selfsup.presets import resolve_config

    cfg = resolve_config(method, preset, sets={"knn_every": "0", "precision": "auto", "channels_last": "auto", **sets})
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, Path(tmp))
        trainer.setup()
    record = trainer.runtime_trial
    reference = next((c["losses"] for c in record.get("candidates", []) if c["candidate"].startswith("fp32")), [])
    worst = 0.0
    for c in record.get("candidates", []):
        if c["candidate"].startswith("bf16") and reference:
            worst = max(
                [worst]
                + [
                    abs(a - b) / (autotune.LOSS_TOLERANCE * abs(b) + autotune.LOSS_FLOOR)
                    for a, b in zip(c["losses"], reference)
                ]
            )
    local_batch = cfg.batch_size
    return {
        "method": method,
        "preset": preset,
        "backbone": backbone_label(cfg.backbone, cfg.stem),
        "batch_size": local_batch,
        "chosen": record.get("chosen", f"{cfg.precision}/{cfg.channels_last}"),
        "images_per_s": {
            c["candidate"]: round(local_batch / c["seconds_per_step"], 1)
            for c in record.get("candidates", [])
            if c["seconds_per_step"] != float("inf")
        },
        "bf16_loss_difference_over_allowed": round(worst, 5),
        "machine": runtime.machine(),
    }


def main(argv: list[str] | None = None) -> None:
    from selfsup.methods import method_names
    from selfsup.runtime import machine_line

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default=None, help="comma-separated (default: every method)")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sets = dict(item.split("=", 1) for item in args.sets)
    methods = args.methods.split(",") if args.methods else [m for m in method_names() if m != "moco"]
    if args.worker:
        print(json.dumps(trial(methods[0], args.preset, sets)))
        return
    rows = []
    if not args.json:
        print(f"machine: {machine_line()}")
        print(
            f"{'method':<12}{'fp32/contig':>12}{'fp32/cl':>10}{'bf16/contig':>12}{'bf16/cl':>10}"
            f"{'bf16 diff/allowed':>19}  chosen"
        )
    for method in methods:
        command = [sys.executable, __file__, "--worker", "--methods", method, "--preset", args.preset]
        for item in args.sets:
            command += ["--set", item]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            print(f"{method}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
            continue
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        if not args.json:
            speeds = row["images_per_s"]
            cells = [
                speeds.get(k)
                for k in ("fp32/contiguous", "fp32/channels_last", "bf16/contiguous", "bf16/channels_last")
            ]
            text = "".join(f"{c:>{w}.0f}" if c else f"{'-':>{w}}" for c, w in zip(cells, (12, 10, 12, 10)))
            print(f"{method:<12}{text}{row['bf16_loss_difference_over_allowed']:>19.4f}  {row['chosen']}", flush=True)
    if args.json:
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
