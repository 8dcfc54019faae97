"""``selfsup methods``: the recipe table of every method at a preset."""

from __future__ import annotations

import argparse
import json

from selfsup.presets import PRESETS, recipe_table

COLUMNS = (
    ("method", "method"),
    ("latent dim", "latent_dim"),
    ("batch", "batch_size"),
    ("optimizer", "optimizer"),
    ("LR", "lr"),
    ("weight decay", "weight_decay"),
    ("schedule", "schedule"),
    ("epochs", "epochs"),
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "methods",
        help="list the methods and their recipes",
        description="Print every method's recipe at a preset as one table (latent dim, batch, optimizer, LR, "
        "weight decay, schedule, epochs). "
        "LR is the effective peak learning rate at that batch size (base LR x batch/256 "
        "where the recipe scales linearly).",
    )
    parser.add_argument(
        "--preset",
        default="imagenet",
        choices=PRESETS,
        help="imagenet: the papers' recipes; small: 28-96 px datasets; cpu: the 2-core demo (default: imagenet)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print a JSON list of objects with the keys method, latent_dim, batch_size, "
        "optimizer, lr, weight_decay, schedule, epochs",
    )
    parser.set_defaults(run=run)


def format_value(key: str, value: object) -> str:
    if key == "weight_decay":
        return f"{value:g}"
    if key == "lr":
        return f"{value:.4g}"
    return str(value)


def render(rows: list[dict]) -> str:
    cells = [[format_value(key, row[key]) for _, key in COLUMNS] for row in rows]
    widths = [max(len(title), *(len(c[i]) for c in cells)) for i, (title, _) in enumerate(COLUMNS)]
    line = " | ".join(title.ljust(w) for (title, _), w in zip(COLUMNS, widths)).rstrip()
    rule = "-|-".join("-" * w for w in widths)
    body = [" | ".join(c.ljust(w) for c, w in zip(cell, widths)).rstrip() for cell in cells]
    return "\n".join([line, rule, *body])


def run(args: argparse.Namespace) -> int:
    rows = recipe_table(args.preset)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"preset: {args.preset}")
        print(render(rows))
    return 0
