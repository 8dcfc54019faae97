"""``selfsup compare``: train several methods under one budget, evaluate them, write a report."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from selfsup.config import ConfigError, parse_assignment
from selfsup.data import DATASETS
from selfsup.models import BACKBONES, STEMS
from selfsup.presets import PRESETS
from selfsup.runtime import DEVICES

EPILOG = """\
examples:
  selfsup compare --methods simclr,vicreg --dataset fashion-mnist --out runs/cmp
  selfsup compare --methods all --ablation projector loss variance projector-bn --out runs/cpu-all
  selfsup compare --methods all --preset small --dataset cifar10 --data-dir ~/data --epochs 200
  selfsup compare --out runs/cmp --methods simclr,vicreg --report-only     # rebuild the report

Each run lives in OUT/<run name>; running the same command again resumes unfinished runs and
skips finished ones (their saved config must match). OUT/report.md and OUT/report.html (one file,
plots embedded) hold the results table, the plots and one section per ablation.

ablations (SimCLR or VICReg runs with one setting changed):
  projector     simclr projector=mlp|linear|none: why removing the head hurts; h versus z
  loss          simclr loss=nt_xent|nt_logistic|margin_triplet
  variance      vicreg variance_mode=std|var
  projector-bn  simclr hidden_bn on/off x last_bn on/off

--set keys apply to every run that has them (method keys only to the methods that define them);
METHOD:key=value scopes one, e.g. --set simclr:temperature=0.5 --set supervised:label_smoothing=0.1.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from selfsup.compare.plan import ABLATIONS

    parser = subparsers.add_parser(
        "compare",
        help="train and evaluate several methods under one budget; write a report",
        description="Train every method of --methods (and a supervised baseline) with the same preset and "
        "budget, evaluate each with kNN and a linear probe on h and z, run the requested ablations, "
        "and write OUT/report.md and a self-contained OUT/report.html.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--methods",
        default="all",
        help="'all' (every registered method, one per variant; default) or a comma-separated list",
    )
    parser.add_argument(
        "--dataset",
        default="fashion-mnist",
        choices=DATASETS.names(),
        metavar="D",
        help=f"dataset: {', '.join(DATASETS.names())} (default: fashion-mnist)",
    )
    parser.add_argument("--data-dir", default=None, help="where the dataset is (or is downloaded to)")
    parser.add_argument("--preset", default="cpu", choices=PRESETS, help="recipe scale (default: cpu)")
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="the common budget: epochs for every run (default: each method's preset)",
    )
    parser.add_argument("--batch-size", type=int, default=None, help="global batch size for every run")
    parser.add_argument(
        "--backbone",
        default=None,
        metavar="NAME",
        help=f"backbone for every run: {', '.join(BACKBONES.names())}, or any timm:NAME or tv:NAME",
    )
    parser.add_argument("--stem", default=None, choices=STEMS, help="ResNet stem for every run")
    parser.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="stop every run after this many steps (smoke tests; runs stay resumable)",
    )
    parser.add_argument(
        "--seeds",
        default="0",
        help="comma-separated seeds; each run is repeated per seed to measure the run-to-run spread (default: 0)",
    )
    parser.add_argument(
        "--ablation-seeds",
        default=None,
        help="comma-separated seeds for the ablation arms only (default: --seeds); the compared "
        "methods that are also an arm get them too",
    )
    parser.add_argument(
        "--ablation",
        nargs="+",
        default=[],
        choices=list(ABLATIONS),
        metavar="NAME",
        help=f"ablations to run: {', '.join(ABLATIONS)}",
    )
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting for every run that has it; repeatable (see below)",
    )
    parser.add_argument("--out", default="runs/compare", help="comparison folder (default: runs/compare)")
    parser.add_argument(
        "--report-dir", default=None, help="where report.md, report.html and plots/ go (default: --out)"
    )
    parser.add_argument("--no-supervised", action="store_true", help="skip the supervised baseline")
    parser.add_argument(
        "--eval-train",
        type=int,
        default=0,
        help="evaluate on this many labelled training images (evenly spaced; default: all)",
    )
    parser.add_argument(
        "--eval-test", type=int, default=0, help="evaluate on this many test images (evenly spaced; default: all)"
    )
    parser.add_argument("--device", default=None, choices=DEVICES, help="auto (default), cpu, cuda or mps")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="train in this process instead of one child process per run (peak memory is then "
        "the maximum over the runs so far)",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="train and evaluate nothing; rebuild the report from the runs in --out",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(run=run)


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds expects comma-separated integers, got {text!r}") from None
    if not seeds:
        raise ConfigError("--seeds needs at least one seed")
    return list(dict.fromkeys(seeds))


def options_from_args(args: argparse.Namespace):  # noqa: ANN201 - CompareOptions, imported lazily
    from selfsup.compare.plan import check_ablations, expand_methods
    from selfsup.compare.runner import CompareOptions

    flags = {
        "data_dir": args.data_dir,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "backbone": args.backbone,
        "stem": args.stem,
        "device": args.device,
        "max_steps": args.max_steps,
    }
    return CompareOptions(
        out=Path(args.out),
        methods=expand_methods(args.methods),
        dataset=args.dataset,
        preset=args.preset,
        flags={k: v for k, v in flags.items() if v is not None},
        sets=dict(parse_assignment(item) for item in args.sets),
        ablations=check_ablations(args.ablation),
        seeds=_seeds(args.seeds),
        ablation_seeds=_seeds(args.ablation_seeds) if args.ablation_seeds else None,
        supervised=not args.no_supervised,
        isolate=not args.in_process,
        progress=not args.no_progress,
        eval_train=args.eval_train,
        eval_test=args.eval_test,
        device=args.device or "auto",
        report_dir=Path(args.report_dir) if args.report_dir else None,
        command=_reproducing_command(),
        train=not args.report_only,
    )


def _reproducing_command() -> str:
    """The command line that produces this report (``--report-only`` only rebuilds it, so it is left out)."""
    if sys.argv[1:2] != ["compare"]:
        return ""
    return "selfsup " + " ".join(shlex.quote(a) for a in sys.argv[1:] if a != "--report-only")


def run(args: argparse.Namespace) -> int:
    from selfsup.compare.runner import run_compare

    opts = options_from_args(args)
    _, results = run_compare(opts)
    failed = [r.spec.name for r in results if r.failed]
    if failed:
        print(
            f"selfsup compare: {len(failed)} run(s) failed: {', '.join(failed)} (see their error.txt)", file=sys.stderr
        )
        return 1
    return 0
