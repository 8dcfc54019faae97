"""JPEG decoding for the image-folder paths, with and without PIL's reduced-scale decoding (``draft``).

    python benchmarks/decode_speed.py [--width 500] [--height 375] [--images 48] [--json]

Times, in this process on one core, per image of a folder of photo-like JPEGs (ImageNet's typical
500x375):

* ``stream``: :func:`selfsup.data.streaming.crop_views` (decode, 2 random-resized crops + flips to the
  view size, as a DataLoader worker of the streaming path does), for views of 224, 96 and 32 px;
* ``cache``: :func:`selfsup.data.cache.decode_square` (decode, shorter side to the stored size, central
  square), the one-off cost of building the in-memory cache, for stored sizes 256, 110 and 37 px.

Each with ``draft`` on and off; images/s and the speed-up are reported (best of 3 passes).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from selfsup.augment.views import view_specs  # noqa: E402
from selfsup.config import AugmentConfig  # noqa: E402
from selfsup.data.cache import decode_square, stored_size  # noqa: E402
from selfsup.data.streaming import crop_views  # noqa: E402
from selfsup.runtime import machine, machine_line  # noqa: E402


def make_jpegs(folder: Path, count: int, width: int, height: int) -> list[str]:
    from PIL import Image

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from augment_speed import make_images

    images = make_images(count, 3, max(width, height))[:, :, :height, :width]
    paths = []
    for i, image in enumerate(images):
        path = folder / f"{i}.jpg"
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(path, quality=90)
        paths.append(str(path))
    return paths


def best_rate(fn, paths: list[str], passes: int = 3) -> float:
    best = float("inf")
    for _ in range(passes):
        start = time.perf_counter()
        for path in paths:
            fn(path)
        best = min(best, time.perf_counter() - start)
    return len(paths) / best


def run(width: int, height: int, count: int) -> list[dict]:
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_jpegs(Path(tmp), count, width, height)
        for size in (224, 96, 32):
            cfg = AugmentConfig(image_size=size, crop_scale=(0.08, 1.0)).resolved(size)
            specs = view_specs(cfg)
            rates = {}
            for draft in (False, True):
                generator = torch.Generator().manual_seed(0)
                rates[draft] = best_rate(
                    partial(crop_views, specs=specs, cfg=cfg, channels=3, generator=generator, use_draft=draft), paths
                )
            rows.append(
                {
                    "path": "stream",
                    "size": size,
                    "no_draft_images_per_s": round(rates[False], 1),
                    "draft_images_per_s": round(rates[True], 1),
                    "speedup": round(rates[True] / rates[False], 2),
                }
            )
            stored = stored_size(size)
            for draft in (False, True):
                rates[draft] = best_rate(partial(decode_square, size=stored, channels=3, use_draft=draft), paths)
            rows.append(
                {
                    "path": "cache",
                    "size": stored,
                    "no_draft_images_per_s": round(rates[False], 1),
                    "draft_images_per_s": round(rates[True], 1),
                    "speedup": round(rates[True] / rates[False], 2),
                }
            )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=500)
    parser.add_argument("--height", type=int, default=375)
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows = run(args.width, args.height, args.images)
    if args.json:
        print(json.dumps({"machine": machine(), "rows": rows}, indent=2))
        return
    print(f"machine: {machine_line()}")
    print(f"{args.images} JPEGs of {args.width}x{args.height}, one core, images/s (best of 3)")
    print(f"{'path':<8}{'size':>6}{'no draft':>10}{'draft':>10}{'speed-up':>10}")
    for r in rows:
        print(
            f"{r['path']:<8}{r['size']:>6}{r['no_draft_images_per_s']:>10.0f}{r['draft_images_per_s']:>10.0f}"
            f"{r['speedup']:>10.2f}"
        )


if __name__ == "__main__":
    main()
