"""Backbones and heads."""

from selfsup.models import encoders  # noqa: F401  (registers the DIM, AMDIM and CPC encoders)
from selfsup.models.backbones import BACKBONES, STEMS, Backbone, build_backbone
from selfsup.models.heads import mlp

__all__ = ["BACKBONES", "STEMS", "Backbone", "build_backbone", "mlp"]
