"""The projectors and predictors follow the official code."""

from __future__ import annotations

import torch

from tests.helpers import (
    tiny_method,
)


def test_heads_follow_the_official_code():
    d = 512
    byol_m = tiny_method("byol")
    assert [type(m).__name__ for m in byol_m.projector] == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert byol_m.projector[0].bias is not None and byol_m.projector[3].bias is None
    simsiam_m = tiny_method("simsiam", projector_layers=3)
    linears = [m for m in simsiam_m.projector if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 3 and all(m.bias is None for m in linears)
    assert not simsiam_m.projector[-1].affine  # BN(affine=False) ends the projector
    assert simsiam_m.predictor[0].bias is None and simsiam_m.predictor[-1].bias is not None
    v1, v2, v3 = tiny_method("moco-v1"), tiny_method("moco-v2"), tiny_method("moco-v3")
    assert len(v1.projector) == 1 and v1.projector[0].in_features == d
    assert [type(m).__name__ for m in v2.projector] == ["Linear", "ReLU", "Linear"]
    assert all(m.bias is None for m in v3.modules() if isinstance(m, torch.nn.Linear))
    assert isinstance(v3.projector[-1], torch.nn.BatchNorm1d) and not v3.projector[-1].affine
    assert not isinstance(v3.predictor[-1], torch.nn.BatchNorm1d)
