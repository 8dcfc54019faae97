"""Training steps of the methods end to end: finite losses, gradients everywhere, a falling loss."""

from __future__ import annotations

import pytest
import torch

from selfsup.evaluation.collapse import embedding_std
from tests.helpers import (
    PROGRESS,
    TINY_ARGS,
    at,
    make_method,
    tiny_method,
    views,
)


@pytest.mark.parametrize("name", list(TINY_ARGS))
def test_one_training_step_end_to_end(name):
    method = tiny_method(name)
    out = method(views(), at(3))
    assert torch.isfinite(out.loss) and out.embedding.shape == (8, 16)
    assert 0 < embedding_std(out.embedding) <= 1  # the engine logs it as z_std
    out.loss.backward()
    assert method.backbone.net.conv1.weight.grad.abs().sum() > 0
    targets = [m for n, m in method.named_children() if n.startswith("momentum_")]
    assert all(p.grad is None for m in targets for p in m.parameters())


END_TO_END = [
    (
        "cpc",
        "patchnet-small",
        {"latent_dim": 16, "context_dim": 16, "max_offset": 3, "directions": ("top_down", "right_left")},
        "group",
        1,
        24,
    ),
    ("cpc", "resnet10", {"latent_dim": 16, "context_dim": 16, "max_offset": 2, "num_negatives": 20}, "layer", 1, 16),
    ("dim", "dim32", {"mi_units": 32}, "batch", 1, 32),
    ("dim", "resnet10", {"mi_units": 32, "estimator": "nce", "alpha": 0.5}, "batch", 1, 32),
    ("amdim", "amdim32-small", {"n_rkhs": 256}, "batch", 2, 32),
]


@pytest.mark.parametrize(
    "method, backbone, args, norm, views, size", END_TO_END, ids=[f"{c[0]}-{c[1]}" for c in END_TO_END]
)
def test_training_steps_reach_every_parameter_and_lower_the_loss(method, backbone, args, norm, views, size):
    """One step reaches every parameter (as DDP requires), and a few Adam steps on a fixed batch lower the loss."""
    model = make_method(method, backbone, args, norm)
    g = torch.Generator().manual_seed(5)
    batch = [torch.randn(8, 3, size, size, generator=g) for _ in range(views)]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for step in range(6):
        torch.manual_seed(step)
        out = model(batch, PROGRESS)
        assert torch.isfinite(out.loss) and out.embedding.shape[0] == 8
        optimizer.zero_grad()
        out.loss.backward()
        if step == 0:
            missing = [n for n, p in model.named_parameters() if p.grad is None]
            assert not missing, missing
        optimizer.step()
        losses.append(out.loss.item())
    assert losses[-1] < losses[0]
    model.eval()
    h, z = model.embed(batch[0])
    assert h.shape[0] == z.shape[0] == 8 and z.shape[1] == type(model).latent_dim(model.args)
