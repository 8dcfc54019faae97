"""Barlow Twins: the projector and the bias/BN learning rate."""

from __future__ import annotations

import pytest
import torch

from selfsup.optim import apply_lr, build_optimizer
from selfsup.presets import resolve_config
from tests.helpers import (
    images,
    make_method,
    progress,
)


class TestBarlowTwinsMethod:
    def test_step_end_to_end(self):
        method = make_method("barlowtwins", projector=(32, 32, 16))
        out = method([images(8, 8, 0), images(8, 8, 1)], progress())
        assert torch.isfinite(out.loss) and out.embedding.shape == (8, 16)
        expected = out.logs["on_diagonal"] + 0.0051 * out.logs["off_diagonal"]
        assert float(out.loss.detach()) == pytest.approx(float(expected), rel=1e-6)
        out.loss.backward()
        assert all(p.grad is not None for p in method.parameters())
        assert all(m.bias is None for m in method.projector if isinstance(m, torch.nn.Linear))

    def test_two_learning_rates_weights_and_biases(self):
        cfg = resolve_config("barlowtwins", "imagenet")
        method = make_method("barlowtwins", projector=(32, 32, 16), bias_lr_mult=cfg.method_args["bias_lr_mult"])
        optimizer = build_optimizer(method.parameter_groups(), cfg)
        groups = {g["lars_exclude"]: g for g in optimizer.param_groups}
        assert len(optimizer.param_groups) == 2
        assert groups[False]["lr"] == pytest.approx(0.2 * 2048 / 256)  # 1.6
        assert groups[True]["lr"] == pytest.approx(0.0048 * 2048 / 256)  # 0.0384
        assert groups[False]["weight_decay"] == 1e-6 and groups[True]["weight_decay"] == 0.0
        assert all(p.ndim == 1 for p in groups[True]["params"])
        assert all(p.ndim > 1 for p in groups[False]["params"])
        apply_lr(optimizer, cfg.lr, 0.5)  # the schedule scales both groups alike
        assert groups[False]["lr"] == pytest.approx(0.8) and groups[True]["lr"] == pytest.approx(0.0192)
