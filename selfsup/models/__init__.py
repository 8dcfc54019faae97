"""Backbones and heads."""

from selfsup.models import encoders  # noqa: F401  (registers the DIM, AMDIM and CPC encoders)
from selfsup.models.backbones import BACKBONES, STEMS, Backbone, backbone_label, build_backbone, is_library_name
from selfsup.models.heads import mlp
from selfsup.models.library import LibraryOptions

__all__ = [
    "BACKBONES",
    "STEMS",
    "Backbone",
    "LibraryOptions",
    "backbone_label",
    "build_backbone",
    "is_library_name",
    "mlp",
]
