"""Small builders shared by the tests: tiny methods on a ResNet-10 (or a given encoder), random views and
images, training progress, and helpers for the momentum (EMA) tests."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from selfsup.methods import METHODS, Method, Progress
from selfsup.models import LibraryOptions, build_backbone

TINY_ARGS: dict[str, dict] = {
    "byol": {"hidden_dim": 32, "pred_hidden_dim": 32, "latent_dim": 16},
    "simsiam": {"hidden_dim": 32, "pred_hidden_dim": 8, "latent_dim": 16},
    "moco-v1": {"version": "v1", "latent_dim": 16, "queue_size": 32, "temperature": 0.07, "shuffle_bn_groups": 2},
    "moco-v2": {"version": "v2", "hidden_dim": 32, "latent_dim": 16, "queue_size": 32, "shuffle_bn_groups": 2},
    "moco-v3": {"version": "v3", "hidden_dim": 32, "pred_hidden_dim": 32, "latent_dim": 16, "temperature": 1.0},
}
"""Small heads for the methods with a momentum target or a predictor (``tiny_method``)."""

GLOBAL_VECTOR_ARGS: dict[str, dict] = {
    "simclr": {"hidden_dim": 32, "latent_dim": 16, "temperature": 0.5},
    **TINY_ARGS,
    "swav": {"hidden_dim": 32, "latent_dim": 8, "nmb_prototypes": 5, "freeze_prototypes_epochs": 0.0},
    "wmse": {"hidden_dim": 32, "latent_dim": 4, "w_size": 8},
    "tico": {"hidden_dim": 32, "latent_dim": 16},
    "vicreg": {"expander": (32, 32, 32)},
    "barlowtwins": {"projector": (32, 32, 16)},
}
"""Small heads for every method whose loss works on a global vector (all but CPC, DIM and AMDIM), by CLI name."""

TINY_LIBRARY_BACKBONES = {
    "vit": ("timm:vit_tiny_patch16_224", ("depth=2",), 16),
    "convnext": ("timm:convnext_atto", (), 32),
}
"""timm backbones for fast tests and their image size: a 2-block ViT-Tiny (patch 4 on small images, 16 px) and
ConvNeXt-Atto (32 px: its stride-32 stages need 32 px at least)."""

PINNED_RUNTIME = ["--set", "precision=fp32", "--set", "channels_last=false"]
"""CLI flags for runs that are compared bitwise: ``auto`` would be settled by a measurement in each run."""

LOG2 = math.log(2.0)
PROGRESS = Progress(0, 10, 0, 10)


def make_method(
    name: str,
    backbone: str = "resnet10",
    args: dict | None = None,
    norm: str = "batch",
    options: LibraryOptions | None = None,
    **more_args,
) -> Method:
    """Method ``name`` (a registered name, no variant suffix) with ``args`` on a CIFAR-stem 3-channel
    ``backbone`` (``options`` for a timm:/tv: one), seeded."""
    torch.manual_seed(0)
    cls = METHODS.get(name)
    encoder = build_backbone(backbone, "cifar", 3, norm=norm, options=options)
    return cls(encoder, cls.make_args({**(args or {}), **more_args}))


def library_method(name: str, kind: str) -> Method:
    """The method of CLI name ``name`` (``moco-v3`` ...) with :data:`GLOBAL_VECTOR_ARGS` on a
    :data:`TINY_LIBRARY_BACKBONES` backbone, for RGB images of that backbone's size."""
    backbone, backbone_args, image_size = TINY_LIBRARY_BACKBONES[kind]
    options = LibraryOptions(image_size=image_size, args=backbone_args)
    return make_method(name.split("-")[0], backbone, GLOBAL_VECTOR_ARGS[name], options=options)


def tiny_method(name: str, eval_bn: bool = False, **extra) -> Method:
    """A method of :data:`TINY_ARGS` (``moco-v2`` ...) on ResNet-10; ``eval_bn`` puts BatchNorm in eval mode,
    so that per-sample outputs can be recomputed exactly."""
    method = make_method(name.split("-")[0], args={**TINY_ARGS[name], **extra})
    if eval_bn:
        for module in method.modules():
            if isinstance(module, _BatchNorm):
                module.eval()
    return method


def views(batch: int = 8, seed: int = 1, size: int = 16) -> list[torch.Tensor]:
    """Two random RGB views."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 3, size, size, generator=g) for _ in range(2)]


def images(n: int = 8, size: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def at(step: int, total: int = 100) -> Progress:
    """Progress at ``step`` of ``total`` steps (one epoch)."""
    return Progress(step, total, 0, total)


def progress(step: int = 0, epoch: int = 0, steps_per_epoch: int = 10) -> Progress:
    return Progress(step, 1000, epoch, steps_per_epoch)


def unit(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=-1)


def sp(x: float) -> float:
    """softplus."""
    return math.log1p(math.exp(x))


def perturb_online(method: nn.Module) -> None:
    """Stand-in for an optimizer step: move every trainable parameter."""
    with torch.no_grad():
        for p in method.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn_like(p))


def target_pairs(method: nn.Module) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(online, momentum target) parameter pairs of the backbone and the projector."""
    for online_name in ("backbone", "projector"):
        online = getattr(method, online_name)
        target = getattr(method, f"momentum_{online_name}")
        yield from zip(online.parameters(), target.parameters())


def smooth_image(rng: np.random.Generator, width: int, height: int, mode: str = "RGB") -> Image.Image:
    """A photo-like image (smooth colour fields plus a little noise), so that JPEG keeps it recognisable."""
    channels = 3 if mode == "RGB" else 1
    coarse = torch.from_numpy(rng.random((1, channels, 4, 4), dtype=np.float32))
    x = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
    x = x + 0.03 * torch.from_numpy(rng.standard_normal((1, channels, height, width), dtype=np.float32))
    array = (x.clamp(0, 1)[0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(array[..., 0] if channels == 1 else array, mode)


def make_jpeg_folder(root, per_class: int = 8, size: tuple[int, int] = (40, 30), mode: str = "RGB"):
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            smooth_image(rng, *size, mode=mode).save(root / name / f"{name}{i}.jpg", quality=90)
    return root


def make_folder(root, classes, per_class, mode="RGB", size=20):
    """``root/<class>/<class>_<i>.png``: random noise images, ``per_class`` of each class."""
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            shape = (size, size, 3) if mode == "RGB" else (size, size)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(root / c / f"{c}_{i}.png")


# ----------------------------------------------------------------------------- CLI flags of tiny runs

TINY_PRETRAIN = [
    "--backbone", "resnet10", "--batch-size", "16", "--epochs", "2", "--no-progress",
    "--set", "train_subset=64", "--set", "aug.image_size=16", "--set", "knn_every=0",
]  # fmt: skip
"""Two epochs of 4 steps on 64 Fashion-MNIST images at 16 px (ResNet-10), no kNN monitor: the base of the
engine and compare tests' runs, which add their own settings."""
SMALL_HEADS = ["--set", "hidden_dim=32", "--set", "latent_dim=16"]
"""A 32-wide hidden layer and 16-d z, for the tiny runs."""


# ----------------------------------------------------------------------------- real selfsup processes

TINY_RUN = [
    "--backbone", "resnet10", "--batch-size", "16", "--no-progress",
    "--set", "train_subset=128", "--set", "aug.image_size=16", "--set", "knn_every=0",
    "--set", "hidden_dim=32", "--set", "latent_dim=16", "--set", "log_every=1", *PINNED_RUNTIME,
]  # fmt: skip
"""A SimCLR run of 8 steps per epoch on 16-px Fashion-MNIST (ResNet-10, pinned runtime: runs compare bitwise)."""


def selfsup_process(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``python -m selfsup ARGS`` in a new process (one thread: the same numbers in every process)."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "SELFSUP_OFFLINE": "1", **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "selfsup", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=full_env,
    )


def run_selfsup(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``selfsup ARGS`` to the end in a new process."""
    process = selfsup_process(*args)
    out, err = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def wait_for_steps(run: Path, steps: int, process: subprocess.Popen, timeout: float = 90) -> int:
    """Wait until ``run``'s metrics.jsonl (logged every step) holds ``steps`` rows; returns the count."""
    metrics = run / "metrics.jsonl"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = len(metrics.read_text().splitlines()) if metrics.exists() else 0
        if rows >= steps:
            return rows
        if process.poll() is not None:
            raise AssertionError(
                f"the run ended (status {process.returncode}) before step {steps}: "
                f"{process.stderr.read() if process.stderr else ''}"
            )
        time.sleep(0.01)
    raise AssertionError(f"no step {steps} within {timeout} s")
