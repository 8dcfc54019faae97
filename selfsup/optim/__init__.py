"""Optimizers (LARS, SGD, AdamW, Adam) and per-step learning-rate schedules."""

from selfsup.optim.build import OPTIMIZERS, apply_lr, build_optimizer
from selfsup.optim.lars import LARS
from selfsup.optim.schedule import SCHEDULES, lr_factor

__all__ = ["LARS", "OPTIMIZERS", "SCHEDULES", "apply_lr", "build_optimizer", "lr_factor"]
