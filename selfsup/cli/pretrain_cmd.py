"""``selfsup pretrain``: self-supervised pretraining of an encoder."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from selfsup.config import ConfigError, TrainConfig, apply_overrides, config_differences, parse_assignment, switch
from selfsup.data import DATASETS
from selfsup.methods import method_names, split_variant
from selfsup.models import BACKBONES, STEMS, backbone_label
from selfsup.presets import PRESETS, resolve_config
from selfsup.run_folder import RunFolder, json_text
from selfsup.runtime import DEVICES
from selfsup.validate import validate

DEFAULT_METHOD = "simclr"

HELP_EPILOG = """\
examples:
  selfsup pretrain                                   # default method, Fashion-MNIST, cpu preset
  selfsup pretrain --method vicreg --dataset cifar10 --preset small --data-dir ~/data
  selfsup pretrain --method simclr --set temperature=0.5 --set aug.blur_prob=0.5
  selfsup pretrain --dataset imagefolder --data-dir ~/photos --out runs/photos
  torchrun --nproc-per-node 4 -m selfsup pretrain --method vicreg --preset small --dataset cifar10

--set keys: run settings (epochs, base_lr, weight_decay, warmup_epochs, ...), augmentation settings
(aug.crop_scale=0.2,1.0  aug.blur_prob=1.0,0.1 for per-view values) and method settings
(temperature, latent_dim, ...). An unknown key lists the valid ones.

imagefolder: --data-dir ROOT with ROOT/<class>/*.jpg (labels for evaluation), ROOT/train/<class>
and ROOT/val/<class> (explicit splits), or any folder of images (unlabeled: pretraining only).
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pretrain",
        help="pretrain an encoder with a self-supervised method",
        description="Pretrain a backbone with a self-supervised method. Writes config.json, metrics.jsonl, "
        "TensorBoard logs, summary.json and checkpoints/last.pt to --out.",
        epilog=HELP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--method",
        default=None,
        choices=method_names(include_unlisted=True),
        metavar="M",
        help=f"self-supervised method: {', '.join(method_names())} (default: {DEFAULT_METHOD}); "
        "`supervised` trains the same backbone with labels, the baseline of `selfsup compare`",
    )
    parser.add_argument(
        "--dataset",
        default=None,
        choices=DATASETS.names(),
        metavar="D",
        help=f"dataset: {', '.join(DATASETS.names())} (default: fashion-mnist)",
    )
    parser.add_argument("--data-dir", default=None, help="where the dataset is (or is downloaded to)")
    parser.add_argument(
        "--preset",
        default=None,
        choices=PRESETS,
        help="recipe scale: imagenet (the papers), small (28-96 px data), cpu (2-core demo; default)",
    )
    parser.add_argument("--epochs", type=int, default=None, help="number of epochs (default: the preset's)")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="global batch size, split over torchrun processes (default: the preset's)",
    )
    parser.add_argument(
        "--backbone",
        default=None,
        metavar="NAME",
        help=f"backbone: {', '.join(BACKBONES.names())}, or any timm:NAME (timm.list_models()) or tv:NAME "
        "(torchvision.models.list_models()), e.g. timm:vit_tiny_patch16_224 (default: the preset's)",
    )
    parser.add_argument(
        "--stem", default=None, choices=STEMS, help="imagenet: 7x7/2 conv + max-pool; cifar: 3x3/1 conv, no max-pool"
    )
    parser.add_argument("--out", default=None, help="run directory (default: runs/METHOD-DATASET-TIME)")
    parser.add_argument("--device", default=None, choices=DEVICES, help="auto (default), cpu, cuda or mps")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    parser.add_argument(
        "--resume",
        nargs="?",
        const="yes",
        choices=("yes", "auto"),
        default=None,
        help="continue the run in --out from its last checkpoint (mid-epoch too), with its saved config; "
        "`--set` may change the settings that can change mid-run (learning rate, gradient clipping, "
        "precision, logging, checkpointing). `--resume auto` starts the run when --out holds no "
        "checkpoint yet and resumes it when it does, so one job script serves every restart",
    )
    parser.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="stop after this many optimizer steps in total (the LR schedule still spans "
        "--epochs; for smoke tests and benchmarks)",
    )
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any preset field; repeatable (see below)",
    )
    parser.add_argument("--eval", action="store_true", help="evaluate (kNN and linear) when training ends")
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the fully resolved config as JSON (what config.json will hold; precision and "
        "channels_last show `auto` where the run will settle them by measurement) and exit "
        "without training",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def _flags(args: argparse.Namespace) -> dict:
    return {
        "dataset": args.dataset,
        "data_dir": args.data_dir,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "backbone": args.backbone,
        "stem": args.stem,
        "device": args.device,
        "seed": args.seed,
        "max_steps": args.max_steps,
    }


MUTABLE_ON_RESUME = (
    "base_lr",
    "grad_clip",
    "precision",
    "channels_last",
    "device",
    "num_workers",
    "max_steps",
    "log_every",
    "knn_every",
    "knn_bank",
    "knn_queries",
    "progress",
    "checkpoint_every_min",
    "keep_checkpoints",
    "out",
)
"""The settings ``--resume`` may change: they do not change what the run is, only how it goes on."""


def resumed_config(folder: RunFolder, args: argparse.Namespace, sets: dict[str, str]) -> TrainConfig:
    """The saved config of ``folder`` with the changes asked for on the command line applied, when they are
    all in :data:`MUTABLE_ON_RESUME` (any other change is refused by name)."""
    saved = folder.read_config()
    if args.method is not None and split_variant(args.method)[0].name != saved.method:
        raise ConfigError(f"{folder.path} holds a {saved.method} run; --resume cannot change the method")
    if args.preset is not None and args.preset != saved.preset:
        raise ConfigError(f"{folder.path} holds a run of the {saved.preset} preset; --resume cannot change it")
    wanted = TrainConfig.from_dict(saved.to_dict())
    method_cls, _ = split_variant(saved.method)
    apply_overrides(wanted, {k: v for k, v in _flags(args).items() if v is not None}, method_cls.Args)
    apply_overrides(wanted, sets, method_cls.Args)
    wanted.max_steps = args.max_steps  # a stop for this invocation only: a resume without it runs to the end
    changed = config_differences(saved, wanted, ignore=("max_steps",))
    refused = [key for key in changed if key not in MUTABLE_ON_RESUME]
    if refused:
        shown = ", ".join(f"{k} ({_value(saved, k)} -> {_value(wanted, k)})" for k in refused)
        raise ConfigError(
            f"--resume continues the saved config of {folder.path}; these settings cannot change mid-run: {shown}. "
            f"Settings that may change on resume: {', '.join(MUTABLE_ON_RESUME)}. Nothing was changed."
        )
    wanted.channels_last = switch(wanted.channels_last, "channels_last")
    validate(wanted)
    for key in changed:
        print(f"selfsup: resuming with {key} {_value(saved, key)} -> {_value(wanted, key)}", flush=True)
    return wanted


def _value(cfg: TrainConfig, key: str) -> object:
    if key.startswith("aug."):
        return getattr(cfg.augment, key[4:])
    if key.startswith("method."):
        return cfg.method_args.get(key[7:])
    return getattr(cfg, key)


def resolve_run(args: argparse.Namespace) -> tuple[TrainConfig, Path, bool]:
    """The config, the run directory, and whether to resume, for these arguments."""
    sets = dict(parse_assignment(item) for item in args.sets)
    resume = False
    if args.resume:
        if not args.out:
            raise ConfigError("--resume needs --out RUN_DIR (the run to continue)")
        run_dir = Path(args.out)
        folder = RunFolder(run_dir)
        resume = folder.has_checkpoint() and folder.is_run()
        if not resume and args.resume != "auto":
            raise ConfigError(
                f"nothing to resume in {run_dir}: no checkpoint there yet (`--resume auto` starts the run then)"
            )
    if resume:
        cfg = resumed_config(folder, args, sets)
    else:
        cfg = resolve_config(args.method or DEFAULT_METHOD, args.preset or "cpu", _flags(args), sets)
        default_name = f"{cfg.method}-{cfg.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
        run_dir = Path(args.out) if args.out else Path("runs") / default_name
        if RunFolder(run_dir).has_checkpoint():
            raise ConfigError(
                f"{run_dir} already holds a run. Continue it with --resume, or choose another "
                "--out; nothing was overwritten."
            )
    cfg.out = str(run_dir)
    cfg.progress = not args.no_progress
    return cfg, run_dir, resume


def run(args: argparse.Namespace) -> int:
    from selfsup import distributed as dist
    from selfsup.engine.trainer import Trainer

    cfg, run_dir, resume = resolve_run(args)
    if args.print_config:
        print(json_text(cfg.to_dict()), end="")
        return 0
    if dist.is_main_process():
        print(
            f"selfsup: {cfg.method} on {cfg.dataset} ({cfg.preset} preset, {backbone_label(cfg.backbone, cfg.stem)}, "
            f"batch {cfg.batch_size}, {cfg.optimizer} lr {cfg.lr:.4g}, {cfg.epochs} epochs) -> {run_dir}",
            flush=True,
        )
    result = Trainer(cfg, run_dir, resume=resume).fit()
    if not dist.is_main_process() or not result.trained:
        return 0
    summary = result.summary
    knn = summary.get("final_knn_top1")
    print(
        f"selfsup: trained {result.steps} steps in {summary['wall_time_s']:.0f} s "
        f"({summary['images_per_s']:.0f} images/s), final loss {result.final_loss:.4f}"
        + (f", kNN monitor {knn:.4f}" if knn is not None else "")
    )
    if args.eval:
        from selfsup.evaluation.evaluate import evaluate_run, format_table

        print(format_table(evaluate_run(run_dir, progress=cfg.progress)))
    return 0
