"""Choosing and building the view pipeline that feeds the engine.

Three implementations share one interface (:class:`selfsup.data.sampling.ViewPipeline`, yielding
:class:`~selfsup.data.sampling.ViewBatch` objects on the training device):

* :class:`~selfsup.data.in_memory.BatchedPipeline` (the default for in-memory datasets): a batch is an index
  into the uint8 image tensor, augmented on the device in one batched call;
* :class:`~selfsup.data.streaming.StreamingPipeline` (image folders over the memory budget): DataLoader
  workers decode and crop each image to uint8 views, the colour ops run batched on the device. Image
  folders within the budget are decoded once (:mod:`selfsup.data.cache`) and take the batched path;
* :class:`~selfsup.data.per_image.PerImagePipeline` (the conventional path, only when asked for with
  ``data_path=per-image``): DataLoader workers apply torchvision's per-image transforms.
"""

from __future__ import annotations

from typing import TypedDict

import torch

from selfsup.augment.views import require_resolved
from selfsup.config import AugmentConfig
from selfsup.data.base import ImageDataset
from selfsup.data.cache import decoded_bytes, fits_in_memory, load_or_build, memory_budget_bytes, stored_size
from selfsup.data.images import MAX_BAD_FRACTION
from selfsup.data.in_memory import BatchedPipeline
from selfsup.data.per_image import PerImagePipeline
from selfsup.data.sampling import ViewPipeline
from selfsup.data.streaming import StreamingPipeline, default_workers

DATA_PATHS = ("auto", "batched", "streaming", "per-image")


class _PipelineOptions(TypedDict):
    """The keyword arguments every pipeline takes."""

    augment: AugmentConfig
    batch_size: int
    device: torch.device
    seed: int
    rank: int
    world_size: int


def choose_data_path(
    dataset: ImageDataset, augment: AugmentConfig, data_path: str = "auto", memory_budget_mb: int | None = None
) -> str:
    """Which pipeline ``build_pipeline`` builds: ``batched`` (in-memory data), ``cached`` (an image folder
    decoded once into memory, then batched), ``streaming`` (an image folder over the memory budget) or
    ``per-image`` (the conventional pipeline, only when asked for)."""
    if data_path not in DATA_PATHS:
        raise ValueError(f"unknown data_path {data_path!r}. Valid: {', '.join(DATA_PATHS)}")
    if data_path == "per-image":
        return "per-image"
    if dataset.in_memory:
        if data_path == "streaming":
            raise ValueError(
                f"data_path=streaming reads image files; {dataset.name} is held in memory (use auto or batched)"
            )
        return "batched"
    if data_path == "streaming":
        return "streaming"
    image_size = int(require_resolved(augment).image_size)  # type: ignore[arg-type]
    if fits_in_memory(dataset, image_size, memory_budget_mb):
        return "cached"
    if data_path == "batched":
        size = stored_size(image_size)
        need = decoded_bytes(len(dataset), dataset.channels, size) / 2**20
        raise ValueError(
            f"data_path=batched: the {len(dataset)} images decoded at {size} px need {need:.0f} MiB, "
            f"over the memory budget of {memory_budget_bytes(memory_budget_mb) / 2**20:.0f} MiB; "
            "raise memory_budget_mb or use data_path=auto (streaming)"
        )
    return "streaming"


def build_pipeline(
    dataset: ImageDataset,
    augment: AugmentConfig,
    *,
    batch_size: int,
    device: torch.device,
    data_path: str = "auto",
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 2,
    memory_budget_mb: int | None = None,
    cache_dir: str | None = None,
    max_bad_fraction: float = MAX_BAD_FRACTION,
) -> ViewPipeline:
    """The view pipeline for ``dataset`` (see :func:`choose_data_path`).

    ``auto``: in-memory datasets are augmented in batches on the device; an image folder whose decoded
    images fit ``memory_budget_mb`` is decoded once (cached on disk under ``cache_dir``,
    :mod:`selfsup.data.cache`) and then treated the same way; a larger one streams from disk
    (:mod:`selfsup.data.streaming`: workers crop, the device colours). ``per-image`` is the
    conventional torchvision pipeline.

    Image files that cannot be read are skipped with one warning each on every path; more than
    ``max_bad_fraction`` of them fail the run (:mod:`selfsup.data.bad_images`).
    """
    path = choose_data_path(dataset, augment, data_path, memory_budget_mb)
    common: _PipelineOptions = {
        "augment": augment,
        "batch_size": batch_size,
        "device": device,
        "seed": seed,
        "rank": rank,
        "world_size": world_size,
    }
    if path == "per-image":
        return PerImagePipeline(dataset=dataset, num_workers=num_workers, max_bad_fraction=max_bad_fraction, **common)
    if path == "streaming":
        return StreamingPipeline(dataset=dataset, num_workers=num_workers, max_bad_fraction=max_bad_fraction, **common)
    if path == "cached":
        image_size = augment.image_size
        assert image_size is not None  # choose_data_path resolved it
        dataset = load_or_build(
            dataset,
            int(image_size),
            cache_dir,
            default_workers(num_workers),
            rank,
            verbose=rank == 0,
            max_bad_fraction=max_bad_fraction,
        )
    return BatchedPipeline(dataset=dataset, **common)
