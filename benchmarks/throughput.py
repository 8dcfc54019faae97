"""Training throughput per method: the model's own step, our full step, and a conventional pipeline.

For each method and setting this builds the real engine (:class:`selfsup.engine.trainer.Trainer`) and
measures, each (method, setting, pipeline) in a fresh subprocess so that peak memory is its own:

(a) **model-only**: ``Trainer.train_step`` (LR, forward, backward, optimizer step, hooks) on pre-made
    view tensors already on the device, with our runtime choices (the config's defaults: channels_last,
    ``precision=auto``, the allocator fix);
(b) **ours**: the same step fed by our data path (``data_path=auto``: batched on-device augmentation
    of in-memory uint8 images); (a) and (b) are timed in alternating rounds in one process, so that
    drift on a busy machine affects both alike;
(c) **conventional**: the full step with the usual PyTorch recipe at the same settings: torchvision
    per-image transforms in DataLoader workers (``data_path=per-image``, ``--workers``), fp32,
    default memory format, and glibc's default allocator behaviour (``SELFSUP_NO_MALLOPT=1``: the
    fix is process-wide, hence the subprocess).

Reported: images/s (source images; each gives 2 views) of (a), (b), (c), the ratios (b)/(a) and
(b)/(c), peak RSS, peak GPU memory (CUDA), minor page faults per step and the kernel's share of CPU
time during the timed full steps (this process only; DataLoader workers are children). On a shared
machine wall-clock ratios are noisy; (b)/(a) is also given from this process's CPU time per step
(``ours_over_model_only_cpu_time``), which other processes do not inflate.

Settings: ``cpu`` is the demo (each method's ``--preset cpu``: Fashion-MNIST at 32 px, batch 128,
ResNet-10 with the ImageNet stem, or the paper encoder for CPC, DIM and AMDIM); ``cifar`` is
ResNet-18 with the CIFAR stem at 32 px, batch 256, the ``small`` preset's recipe,
on CIFAR-10 when it is on disk, else on synthetic 32 px RGB images (same shapes and work). The GPU
settings (``benchmarks/gpu_check.sh``): ``gpu-small`` is ResNet-18/CIFAR stem at 32 px, batch 512, the
``small`` recipe; ``gpu-imagenet`` ResNet-50/ImageNet stem at 224 px, batch 128, the ``imagenet`` recipe
(multi-crop included for SwAV), both on synthetic images.

    python benchmarks/throughput.py                                   # every method, cpu setting
    python benchmarks/throughput.py --settings cifar --steps 1 --methods simclr
    python benchmarks/throughput.py --methods vicreg --set channels_last=false --skip-conventional
    python benchmarks/throughput.py --no-allocator-fix --skip-conventional   # (a)/(b) without the fix
    python benchmarks/throughput.py --methods simclr --backbone timm:vit_tiny_patch16_224   # any backbone

``--backbone`` takes any name ``--backbone`` of ``selfsup pretrain`` takes (a ViT gets the preset's ViT recipe).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from selfsup import runtime  # noqa: E402

SETTINGS: dict[str, dict] = {
    "cpu": {"preset": "cpu", "sets": {}},
    "cifar": {
        "preset": "small",
        "dataset": "cifar10",
        "sets": {"backbone": "resnet18", "stem": "cifar", "batch_size": "256", "aug.image_size": "32"},
    },
    "gpu-small": {
        "preset": "small",
        "synthetic": (50000, 32),
        "sets": {"backbone": "resnet18", "stem": "cifar", "batch_size": "512", "aug.image_size": "32"},
    },
    "gpu-imagenet": {
        "preset": "imagenet",
        "synthetic": (2048, 256),
        "sets": {"backbone": "resnet50", "stem": "imagenet", "batch_size": "128", "aug.image_size": "224"},
    },
}
CONVENTIONAL = {"data_path": "per-image", "channels_last": "false", "precision": "fp32"}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic_rgb(n: int = 50000, size: int = 32, seed: int = 0):
    """CIFAR-shaped stand-in: uint8 RGB images with smooth colour fields, edges and noise."""
    from selfsup.data.base import ImageDataset

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from augment_speed import make_images

    images = torch.cat([make_images(min(5000, n - i), 3, size, seed + i) for i in range(0, n, 5000)])
    return ImageDataset(
        name="synthetic-rgb",
        channels=3,
        mean=[0.5] * 3,
        std=[0.25] * 3,
        images=images,
        labels=torch.zeros(n, dtype=torch.long),
        classes=["none"],
    )


def _use_synthetic(n: int = 50000, size: int = 32) -> str:
    """Route the Trainer's loader to ``n`` synthetic RGB images of ``size`` px; returns the dataset name."""
    from selfsup.engine import trainer

    data = synthetic_rgb(n, size)
    trainer.run_dataset = lambda cfg, split: data
    return f"synthetic-rgb-{size}px"


def _use_synthetic_if_missing(dataset: str) -> str:
    """Route the Trainer's loader to synthetic images when ``dataset`` is not on disk; returns the name used."""
    from selfsup.data import load_dataset

    try:
        load_dataset(dataset, "pretrain")
        return dataset
    except Exception:  # not downloaded (offline): the synthetic stand-in has the same shapes
        return _use_synthetic()


def measure(
    method: str, setting: str, pipeline: str, steps: int, rounds: int, warmup: int, sets: dict[str, str]
) -> dict:
    """One measurement in this process: (a) and (b) for ``ours``, (c) for ``conventional``."""
    from selfsup.engine.trainer import Trainer
    from selfsup.models import backbone_label
    from selfsup.presets import resolve_config

    spec = SETTINGS[setting]
    overrides = {"knn_every": "0", **spec["sets"], **sets}
    if pipeline == "conventional":
        overrides.update(CONVENTIONAL)
    dataset = spec.get("dataset")
    if dataset:
        dataset = _use_synthetic_if_missing(dataset)
        if dataset == "cifar10":
            overrides["dataset"] = dataset
    elif "synthetic" in spec:
        dataset = _use_synthetic(*spec["synthetic"])
    cfg = resolve_config(method, spec["preset"], sets=overrides)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, Path(tmp))
        trainer.setup()
        trainer.method.train()
        device = trainer.device
        epoch = 0
        batches = trainer.pipeline.epoch(epoch)

        def next_views():  # noqa: ANN202 - a ViewBatch
            nonlocal batches, epoch
            try:
                return next(batches)
            except StopIteration:
                epoch += 1
                batches = trainer.pipeline.epoch(epoch)
                return next(batches)

        fixed = next_views()
        step = 0
        for _ in range(warmup):  # allocator, kernels, autotuning, compilation, DataLoader workers
            trainer.train_step(next_views(), step, 0)
            step += 1
        model_time = full_time = model_cpu = full_cpu = 0.0
        faults = sys_time = 0.0
        for _ in range(rounds):
            if pipeline == "ours":
                _sync(device)
                start, start_cpu = time.perf_counter(), time.process_time()
                for _ in range(steps):
                    trainer.train_step(fixed, step, 0)
                    step += 1
                _sync(device)
                model_time += time.perf_counter() - start
                model_cpu += time.process_time() - start_cpu
            before = resource.getrusage(resource.RUSAGE_SELF)
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(steps):
                trainer.train_step(next_views(), step, 0)
                step += 1
            _sync(device)
            full_time += time.perf_counter() - start
            full_cpu += time.process_time() - start_cpu
            after = resource.getrusage(resource.RUSAGE_SELF)
            faults += after.ru_minflt - before.ru_minflt
            sys_time += after.ru_stime - before.ru_stime
        images = steps * rounds * cfg.batch_size
        row = {
            "method": method,
            "setting": setting,
            "pipeline": pipeline,
            "dataset": dataset or cfg.dataset,
            "backbone": backbone_label(cfg.backbone, cfg.stem),
            "image_size": trainer.image_size,
            "batch_size": cfg.batch_size,
            "device": str(device),
            "precision": cfg.precision,
            "channels_last": trainer.channels_last,
            "compile": cfg.compile,
            "allocator_fix": runtime.freed_memory_kept(),
            "data_path": type(trainer.pipeline).__name__,
            "full_images_per_s": round(images / full_time, 2),
            "page_faults_per_step": round(faults / (steps * rounds)),
            "kernel_cpu_share": round(sys_time / max(full_cpu, 1e-9), 3),
            "full_cpu_seconds_per_step": round(full_cpu / (steps * rounds), 3),
            "peak_rss_mib": round(runtime.peak_rss_mib(), 1),
            "peak_gpu_mib": runtime.peak_gpu_mib(device),
            "runtime_trial": trainer.runtime_trial,
            "machine": runtime.machine(),
        }
        if pipeline == "ours":
            row["model_only_images_per_s"] = round(images / model_time, 2)
            row["model_only_cpu_seconds_per_step"] = round(model_cpu / (steps * rounds), 3)
        return row


def run_subprocess(method: str, setting: str, pipeline: str, args: argparse.Namespace) -> dict:
    env = dict(os.environ)
    if pipeline == "conventional" or args.no_allocator_fix:
        env["SELFSUP_NO_MALLOPT"] = "1"
    command = [
        sys.executable,
        __file__,
        "--worker",
        pipeline,
        "--methods",
        method,
        "--settings",
        setting,
        "--steps",
        str(args.steps),
        "--rounds",
        str(args.rounds),
        "--warmup",
        str(args.warmup),
    ]
    for item in args.sets + ([f"num_workers={args.workers}"] if pipeline == "conventional" else []):
        command += ["--set", item]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{method}/{setting}/{pipeline} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def combine(ours: dict, conventional: dict | None) -> dict:
    row = dict(ours)
    row["ours_over_model_only"] = round(ours["full_images_per_s"] / ours["model_only_images_per_s"], 3)
    # the same ratio from this process's CPU time: robust to other processes on a shared machine (the
    # batched path has no worker processes, so its CPU time is all of its work)
    row["ours_over_model_only_cpu_time"] = round(
        ours["model_only_cpu_seconds_per_step"] / ours["full_cpu_seconds_per_step"], 3
    )
    if conventional:
        row["conventional_images_per_s"] = conventional["full_images_per_s"]
        row["ours_over_conventional"] = round(ours["full_images_per_s"] / conventional["full_images_per_s"], 3)
        row["conventional"] = {
            k: conventional[k]
            for k in (
                "peak_rss_mib",
                "peak_gpu_mib",
                "page_faults_per_step",
                "kernel_cpu_share",
                "precision",
                "channels_last",
                "allocator_fix",
                "data_path",
            )
        }
    return row


def print_table(rows: list[dict], header: bool = True) -> None:
    if header:
        print(
            f"{'method':<10}{'setting':<8}{'device':<8}{'(a) model':>10}{'(b) ours':>10}{'(c) conv':>10}"
            f"{'(b)/(a)':>9}{'cpu-time':>9}{'(b)/(c)':>9}{'RSS b/c MiB':>16}{'faults/step b/c':>18}{'GPU MiB':>9}"
        )
    for r in rows:
        conv = r.get("conventional") or {}
        rss = f"{r['peak_rss_mib']:.0f}/{conv.get('peak_rss_mib', float('nan')):.0f}"
        faults = f"{r['page_faults_per_step']}/{conv.get('page_faults_per_step', '-')}"
        gpu = f"{r['peak_gpu_mib']:.0f}" if r.get("peak_gpu_mib") else "-"
        print(
            f"{r['method']:<10}{r['setting']:<8}{r['device']:<8}{r['model_only_images_per_s']:>10.1f}"
            f"{r['full_images_per_s']:>10.1f}{r.get('conventional_images_per_s', float('nan')):>10.1f}"
            f"{r['ours_over_model_only']:>9.3f}{r['ours_over_model_only_cpu_time']:>9.3f}"
            f"{r.get('ours_over_conventional', float('nan')):>9.2f}"
            f"{rss:>16}{faults:>18}{gpu:>9}",
            flush=True,
        )


def describe(row: dict) -> str:
    return (
        f"ours: {row['precision']}, channels_last={row['channels_last']}, compile={row['compile']}, "
        f"allocator fix={row['allocator_fix']}, {row['data_path']}; conventional: fp32, contiguous, "
        "no allocator fix, PerImagePipeline with workers"
    )


def main(argv: list[str] | None = None) -> None:
    from selfsup.methods import method_names

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default=None, help="comma-separated method names (default: all)")
    parser.add_argument("--settings", default="cpu", help=f"comma-separated, from {', '.join(SETTINGS)}")
    parser.add_argument("--steps", type=int, default=2, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds of (a) and (b)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument(
        "--workers",
        type=int,
        default=min(8, os.cpu_count() or 2),
        help="DataLoader workers of the conventional pipeline (default: one per core, at most 8)",
    )
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="settings for (a) and (b), e.g. precision=fp32, compile=true",
    )
    parser.add_argument(
        "--backbone", default=None, help="any backbone name of selfsup pretrain, e.g. timm:vit_tiny_patch16_224"
    )
    parser.add_argument("--skip-conventional", action="store_true", help="measure (a) and (b) only")
    parser.add_argument("--no-allocator-fix", action="store_true", help="(a) and (b) without the allocator fix")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", choices=("ours", "conventional"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.backbone:
        args.sets.append(f"backbone={args.backbone}")
    methods = [m.strip() for m in args.methods.split(",")] if args.methods else method_names()
    settings = [s.strip() for s in args.settings.split(",")]
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        parser.error(f"unknown settings {unknown}; valid: {', '.join(SETTINGS)}")
    if args.worker:  # one measurement, in this (fresh) process
        sets = dict(item.split("=", 1) for item in args.sets)
        print(json.dumps(measure(methods[0], settings[0], args.worker, args.steps, args.rounds, args.warmup, sets)))
        return
    rows = []
    if not args.json:
        print(f"machine: {runtime.machine_line()}")
    for setting in settings:
        for method in methods:
            try:
                ours = run_subprocess(method, setting, "ours", args)
                conventional = None if args.skip_conventional else run_subprocess(method, setting, "conventional", args)
            except RuntimeError as err:  # one broken method does not stop the others
                print(err, file=sys.stderr)
                continue
            rows.append(combine(ours, conventional))
            if not args.json:
                if len(rows) == 1:
                    print(describe(rows[0]))
                print_table(rows[-1:], header=len(rows) == 1)
    if args.json:
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
