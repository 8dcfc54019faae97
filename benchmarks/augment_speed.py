"""Augmentation throughput: torchvision's per-image pipeline vs the batched augmenter, on the CPU.

    python benchmarks/augment_speed.py [--size 32] [--channels 3] [--batch 256] [--threads 1] [--json]

(a) per-image: PIL images -> one torchvision ``Compose`` per view (2 views per image by default), then
    stacked into batches, as DataLoader workers would do;
(b) batched: :class:`selfsup.augment.BatchedViewAugmenter` on uint8 ``(B, C, H, W)`` batches.

Both run in this process with ``torch.set_num_threads(--threads)`` (1 by default: one worker's worth of
CPU), on the same "real-looking" random images and the same resolved :class:`AugmentConfig`. The rounds
of (a) and (b) are interleaved and the best round is reported with the median, because shared
machines make single timings noisy. Images/s counts source images (each yields ``views`` views).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from selfsup.augment import BatchedViewAugmenter, per_image_view_transforms  # noqa: E402
from selfsup.config import AugmentConfig  # noqa: E402
from selfsup.runtime import machine, machine_line  # noqa: E402

RECIPES = {
    "simclr": {},  # SimCLR Appendix A; no blur at <= 64 px (AugmentConfig.resolved)
    "byol": {"blur_prob": (1.0, 0.1), "solarize_prob": (0.0, 0.2)},  # BYOL Table 6
}


def make_images(n: int, channels: int, size: int, seed: int = 0) -> torch.Tensor:
    """uint8 ``(n, C, size, size)`` images with smooth colour fields, edges and noise."""
    g = torch.Generator().manual_seed(seed)
    x = F.interpolate(
        torch.rand(n, channels, 4, 4, generator=g), size=(size, size), mode="bicubic", align_corners=False
    )
    x = (x + 0.05 * torch.randn(n, channels, size, size, generator=g)).clamp(0, 1)
    return (x * 255).round().to(torch.uint8)


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    arrays = images.permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in arrays]


def time_once(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(size: int, channels: int, batch: int, threads: int, rounds: int, recipe: str) -> dict:
    torch.set_num_threads(threads)
    cfg = AugmentConfig(**RECIPES[recipe]).resolved(size)
    mean, std = [0.5] * channels, [0.25] * channels
    images = make_images(batch, channels, size)
    pils = to_pil(images)
    transforms = per_image_view_transforms(cfg, channels, mean, std)
    augmenter = BatchedViewAugmenter(cfg, channels, mean, std)
    generator = torch.Generator().manual_seed(0)

    def per_image() -> list[torch.Tensor]:
        views = [[t(img) for t in transforms] for img in pils]
        return [torch.stack([v[i] for v in views]) for i in range(len(transforms))]

    def batched() -> list[torch.Tensor]:
        return augmenter(images, generator)

    per_image()  # warm-up
    batched()
    times: dict[str, list[float]] = {"per_image": [], "batched": []}
    for _ in range(rounds):
        times["per_image"].append(time_once(per_image))
        for _ in range(3):  # the batched round is short: take a few to smooth scheduler noise
            times["batched"].append(time_once(batched))

    def rates(ts: list[float]) -> dict[str, float]:
        return {"best": batch / min(ts), "median": batch / statistics.median(ts)}

    result = {
        "size": size,
        "channels": channels,
        "batch": batch,
        "threads": threads,
        "views": len(transforms),
        "recipe": recipe,
        "torch": torch.__version__,
        "per_image_images_per_s": rates(times["per_image"]),
        "batched_images_per_s": rates(times["batched"]),
    }
    result["speedup_best"] = result["batched_images_per_s"]["best"] / result["per_image_images_per_s"]["best"]
    result["speedup_median"] = result["batched_images_per_s"]["median"] / result["per_image_images_per_s"]["median"]
    result["machine"] = machine()
    return result


def print_table(r: dict) -> None:
    print(f"machine: {machine_line(r['machine'])}")
    print(
        f"{r['size']} px, {r['channels']} channel(s), batch {r['batch']}, {r['views']} views/image, "
        f"recipe {r['recipe']}, {r['threads']} thread(s), torch {r['torch']}"
    )
    print(f"{'path':<28}{'images/s (best)':>18}{'images/s (median)':>20}")
    for name, key in [
        ("(a) per-image torchvision", "per_image_images_per_s"),
        ("(b) batched (CPU)", "batched_images_per_s"),
    ]:
        print(f"{name:<28}{r[key]['best']:>18.0f}{r[key]['median']:>20.0f}")
    print(f"{'ratio (b)/(a)':<28}{r['speedup_best']:>18.1f}{r['speedup_median']:>20.1f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=3, choices=(1, 3))
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds of each path")
    parser.add_argument("--recipe", default="simclr", choices=sorted(RECIPES))
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    result = run(args.size, args.channels, args.batch, args.threads, args.rounds, args.recipe)
    if args.json:
        print(json.dumps(result))
    else:
        print_table(result)


if __name__ == "__main__":
    main()
