"""``selfsup embed RUN_DIR --images PATH --out FILE``: embeddings of a folder of images."""

from __future__ import annotations

import argparse

from selfsup.runtime import DEVICES


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "embed",
        help="embed a folder of images with a pretrained encoder (.npy or .parquet)",
        description="Compute the backbone features h (or the projector outputs z) of every image under --images "
        "(recursively, sorted by path) with RUN_DIR's encoder, using the run's image size and "
        "normalisation. .npy: a float32 (N, D) array, with the image paths in FILE.paths.txt; "
        ".parquet: a `path` column and an `embedding` column (fixed-size list of float32).",
        epilog="example:  selfsup embed runs/demo --images ~/photos --out photos.parquet",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the --out folder of `selfsup pretrain`")
    parser.add_argument("--images", required=True, help="a folder of images (searched recursively) or one image")
    parser.add_argument("--out", required=True, help="output file: .npy or .parquet")
    parser.add_argument(
        "--features", default="h", choices=("h", "z"), help="h: backbone features (default); z: projector outputs"
    )
    parser.add_argument("--batch-size", type=int, default=256, help="images per forward pass (default 256)")
    parser.add_argument("--device", default="auto", choices=DEVICES, help="auto (default), cpu, cuda or mps")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--force", action="store_true", help="replace an existing output file")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from selfsup.reuse import embed_folder

    path, count, dim = embed_folder(
        args.run_dir,
        args.images,
        args.out,
        args.features,
        args.batch_size,
        args.device,
        progress=not args.no_progress,
        force=args.force,
    )
    print(f"selfsup embed: wrote {count} embeddings of dimension {dim} ({args.features}) to {path}")
    return 0
