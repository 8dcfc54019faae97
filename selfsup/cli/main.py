"""``selfsup``: pretrain, evaluate and compare self-supervised encoders.

Each sub-command lives in its own module ``selfsup/cli/<name>_cmd.py`` with ``add_parser(subparsers)``
and ``run(args)``; every such module is found automatically. :data:`ORDER` fixes the order that
``selfsup --help`` shows; commands not listed there follow alphabetically.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

import selfsup.cli
from selfsup import __version__

ORDER = ("pretrain", "eval", "methods", "compare", "export", "embed")


def command_modules() -> list[str]:
    """The names of all ``*_cmd`` modules, in help order."""
    found = [m.name[: -len("_cmd")] for m in pkgutil.iter_modules(selfsup.cli.__path__) if m.name.endswith("_cmd")]
    return sorted(found, key=lambda name: (ORDER.index(name) if name in ORDER else len(ORDER), name))


def _expected_errors() -> tuple[type[BaseException], ...]:
    from selfsup.checkpoint import CheckpointError
    from selfsup.config import ConfigError
    from selfsup.data.base import DatasetNotFoundError
    from selfsup.engine.trainer import TrainingDiverged
    from selfsup.evaluation.evaluate import EvaluationError
    from selfsup.registry import UnknownNameError

    return (
        ConfigError,
        CheckpointError,
        DatasetNotFoundError,
        UnknownNameError,
        EvaluationError,
        TrainingDiverged,
        OSError,
        ValueError,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="selfsup",
        description="Self-supervised visual representation learning on PyTorch: pretrain an encoder with "
        "one of the methods below, evaluate it with kNN and linear probes, compare methods.",
        epilog="Quick start:  selfsup pretrain --out runs/demo && selfsup eval runs/demo\n"
        "Run `selfsup COMMAND --help` for the options of each command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"selfsup {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in command_modules():
        module = importlib.import_module(f"selfsup.cli.{name}_cmd")
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status: 0, 1 (training diverged), 2 (a clear error), or 128 + the
    signal's number after a clean stop on SIGTERM (143), SIGINT (130) or SIGUSR1 (138)."""
    from selfsup.engine.stopping import Stopped

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except Stopped as stop:
        print(f"selfsup: {stop}", file=sys.stderr)
        return stop.exit_status
    except KeyboardInterrupt:
        print(
            "selfsup: interrupted at once; checkpoints written before are kept (continue with --resume)",
            file=sys.stderr,
        )
        return 130
    except _expected_errors() as err:
        print(f"selfsup {args.command}: error: {err}", file=sys.stderr)
        return 1 if type(err).__name__ == "TrainingDiverged" else 2


if __name__ == "__main__":
    sys.exit(main())
