"""Datasets (in memory or on disk) and the view pipelines that feed the engine."""

from selfsup.data import imagefolder  # noqa: F401  (registers "imagefolder")
from selfsup.data.bad_images import BadImageLog, TooManyBadImagesError, read_images
from selfsup.data.base import DatasetNotFoundError, ImageDataset
from selfsup.data.datasets import DATASETS, SPLITS, load_dataset, run_dataset
from selfsup.data.images import MAX_BAD_FRACTION, BadImageError, read_image
from selfsup.data.pipeline import DATA_PATHS, build_pipeline
from selfsup.data.sampling import ViewBatch

__all__ = [
    "DATASETS",
    "DATA_PATHS",
    "MAX_BAD_FRACTION",
    "SPLITS",
    "BadImageError",
    "BadImageLog",
    "DatasetNotFoundError",
    "ImageDataset",
    "TooManyBadImagesError",
    "ViewBatch",
    "build_pipeline",
    "load_dataset",
    "read_image",
    "read_images",
    "run_dataset",
]
