"""``selfsup eval RUN_DIR``: kNN and linear evaluation of a pretrained encoder, with baselines."""

from __future__ import annotations

import argparse
import json

from selfsup.evaluation.evaluate import PROTOCOLS
from selfsup.runtime import DEVICES


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a pretrained encoder (kNN, linear probe, baselines)",
        description="Evaluate the encoder of RUN_DIR on the labelled train/test splits of its dataset: kNN "
        "(cosine, k=200, T=0.1, weighted vote) and a linear probe (logistic regression on frozen "
        "features of un-augmented images), on backbone features h and projector outputs z, next "
        "to two baselines: raw pixels and the same architecture at random initialisation. "
        "Results are also written to RUN_DIR/eval.json.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the --out folder of `selfsup pretrain`")
    parser.add_argument("--protocol", default="all", choices=PROTOCOLS, help="knn, linear or all (default)")
    parser.add_argument("--device", default="auto", choices=DEVICES, help="auto (default), cpu, cuda or mps")
    parser.add_argument("--no-baselines", action="store_true", help="skip the raw-pixel and random-init rows")
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object (accuracies as fractions) instead of the table"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from selfsup.evaluation.evaluate import evaluate_run, format_table

    results = evaluate_run(
        args.run_dir, args.protocol, args.device, baselines=not args.no_baselines, progress=not args.json
    )
    print(json.dumps(results, indent=2) if args.json else format_table(results))
    return 0
