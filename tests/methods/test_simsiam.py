"""SimSiam: the predictor's fixed learning rate."""

from __future__ import annotations

import pytest

from selfsup.optim import apply_lr, build_optimizer
from selfsup.presets import resolve_config
from tests.helpers import (
    tiny_method,
)


@pytest.mark.parametrize("fix", [True, False])
def test_simsiam_predictor_lr_stays_at_the_peak(fix):
    method = tiny_method("simsiam", fix_pred_lr=fix)
    cfg = resolve_config("simsiam", "imagenet")
    optimizer = build_optimizer(method.parameter_groups(), cfg)
    apply_lr(optimizer, cfg.lr, 0.25)
    predictor = {id(p) for p in method.predictor.parameters()}
    for group in optimizer.param_groups:
        is_predictor = all(id(p) in predictor for p in group["params"])
        expected = cfg.lr if (fix and is_predictor) else 0.25 * cfg.lr
        assert group["lr"] == pytest.approx(expected)
    assert cfg.lr == pytest.approx(0.1)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == sum(
        1 for p in method.parameters() if p.requires_grad
    )
