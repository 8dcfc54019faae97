"""Training throughput: the full step against the model's own step, per method.

For each method, at the settings of a preset (the demo's ``cpu`` preset by default), this builds
the real engine (:class:`selfsup.engine.trainer.Trainer`) and measures, in one process:

* **model-only**: ``Trainer.train_step`` (LR, forward, backward, optimizer step, hooks) on
  pre-made view tensors already on the device;
* **full**: the same step fed by the data pipeline (sampling, device transfer, augmentation).

It reports images/s of both (source images, i.e. pairs of views) and the ratio full/model-only.
The two are timed in alternating rounds so that drift on a busy machine affects both alike.

    python benchmarks/throughput.py                      # simclr, tico, vicreg at the cpu preset
    python benchmarks/throughput.py --methods vicreg --steps 20 --json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from selfsup.engine import runtime  # noqa: E402
from selfsup.engine.trainer import Trainer  # noqa: E402
from selfsup.presets import resolve_config  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(method: str, preset: str, steps: int, rounds: int, sets: dict[str, str]) -> dict[str, float | str]:
    cfg = resolve_config(method, preset, sets={"knn_every": "0", **sets})
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, Path(tmp))
        trainer.setup()
        trainer.method.train()
        device = trainer.device
        batches = trainer.pipeline.epoch(0)
        fixed = next(batches).views
        for _ in range(3):  # warm-up: allocator, kernels, autotuning
            trainer.train_step(fixed, 0, 0)
        model_time = full_time = 0.0
        step = 0
        for _ in range(rounds):
            _sync(device)
            start = time.perf_counter()
            for _ in range(steps):
                trainer.train_step(fixed, step, 0)
                step += 1
            _sync(device)
            model_time += time.perf_counter() - start
            start = time.perf_counter()
            for _ in range(steps):
                try:
                    views = next(batches).views
                except StopIteration:
                    batches = trainer.pipeline.epoch(1)
                    views = next(batches).views
                trainer.train_step(views, step, 0)
                step += 1
            _sync(device)
            full_time += time.perf_counter() - start
        images = steps * rounds * cfg.batch_size
        model_ips, full_ips = images / model_time, images / full_time
        return {"method": method, "preset": preset, "batch_size": cfg.batch_size, "backbone": cfg.backbone,
                "image_size": trainer.image_size, "device": str(device),
                "model_only_images_per_s": round(model_ips, 1), "full_step_images_per_s": round(full_ips, 1),
                "full_over_model_only": round(full_ips / model_ips, 3),
                "peak_rss_mib": round(runtime.peak_rss_mib(), 1),
                "peak_gpu_mib": runtime.peak_gpu_mib(device)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="simclr,tico,vicreg", help="comma-separated method names")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--steps", type=int, default=10, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of model-only and full")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sets = dict(item.split("=", 1) for item in args.sets)
    rows = [measure(m.strip(), args.preset, args.steps, args.rounds, sets) for m in args.methods.split(",")]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'method':8} {'device':6} {'batch':>5} {'model-only img/s':>17} {'full img/s':>11} {'ratio':>6} "
          f"{'peak RSS MiB':>13}")
    for r in rows:
        print(f"{r['method']:8} {r['device']:6} {r['batch_size']:>5} {r['model_only_images_per_s']:>17} "
              f"{r['full_step_images_per_s']:>11} {r['full_over_model_only']:>6} {r['peak_rss_mib']:>13}")


if __name__ == "__main__":
    main()
