"""Datasets (in memory or on disk) and the view pipelines that feed the engine."""

from selfsup.data import imagefolder  # noqa: F401  (registers "imagefolder")
from selfsup.data.base import DatasetNotFoundError, ImageDataset
from selfsup.data.datasets import DATASETS, SPLITS, load_dataset
from selfsup.data.pipeline import DATA_PATHS, build_pipeline
from selfsup.data.sampling import ViewBatch

__all__ = [
    "DATASETS",
    "DATA_PATHS",
    "SPLITS",
    "DatasetNotFoundError",
    "ImageDataset",
    "ViewBatch",
    "build_pipeline",
    "load_dataset",
]
