"""Deep InfoMax: prior matching (with the discriminator's gradient penalty), occlusion, the presets
(cortex's Adam betas, the alex64x64 encoder at 64 px)."""

from __future__ import annotations

import pytest
import torch

from selfsup.config import ConfigError
from selfsup.losses.dim import prior_discriminator_loss
from selfsup.methods.build import build_method
from selfsup.methods.dim import occlude
from selfsup.optim import build_optimizer
from selfsup.presets import resolve_config
from tests.helpers import (
    PROGRESS,
    make_method,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_prior_matching_gradients_reach_only_their_own_player():
    """With only the prior terms, the discriminator's gradient does not depend on γ (the encoder's term
    sends it nothing) and the encoder's gradient scales with γ (the discriminator's term sends it nothing)."""
    grads = {}
    for gamma in (1.0, 2.0):
        dim = make_method("dim", "dim32", {"beta": 0.0, "gamma": gamma})
        torch.manual_seed(1)
        dim([torch.randn(8, 3, 32, 32)], PROGRESS).loss.backward()
        grads[gamma] = {n: p.grad.clone() for n, p in dim.named_parameters()}
    for name, grad in grads[1.0].items():
        if name.startswith("discriminator"):
            assert torch.allclose(grads[2.0][name], grad, atol=1e-6), name
        else:
            assert torch.allclose(grads[2.0][name], 2 * grad, rtol=1e-4, atol=1e-7), name
    assert any(g.abs().sum() > 0 for n, g in grads[1.0].items() if n.startswith("backbone"))


def test_occlusion_hides_one_square_of_the_requested_size_per_image():
    """Each image loses exactly one side x side square (set to 0), at a place drawn per image."""
    torch.manual_seed(0)
    images = torch.rand(64, 3, 32, 32) + 1.0  # no zeros before occlusion
    hidden = occlude(images, 0.25) == 0
    assert torch.equal(hidden[:, 0], hidden[:, 1]) and torch.equal(hidden[:, 0], hidden[:, 2])  # all channels
    for mask in hidden[:, 0]:
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        assert len(rows) == len(cols) == 8 and int(mask.sum()) == 64
        assert rows.max() - rows.min() == 7 and cols.max() - cols.min() == 7  # one contiguous square
    tops = {int(mask.any(1).nonzero()[0]) for mask in hidden[:, 0]}
    assert len(tops) > 5
    # a slice of a larger draw is the matching rows of that draw (what each DDP rank uses)
    torch.manual_seed(3)
    whole = occlude(images, 0.5)
    torch.manual_seed(3)
    assert torch.equal(occlude(images[16:32], 0.5, offset=16, total=64), whole[16:32])


def test_occlusion_feeds_y_the_occluded_copy_and_the_local_map_the_full_image():
    """DIM §4.3: with occlusion the global Y never sees the hidden square (its gradient there is zero),
    while the local features still depend on every pixel. (Eval mode, so that BatchNorm's batch statistics,
    which mix the full and occluded copies, do not couple the images.)"""
    dim = make_method("dim", "dim32", {"mi_units": 32, "gamma": 0.0, "occlusion": 0.5}).eval()
    images = torch.randn(4, 3, 32, 32, requires_grad=True)
    torch.manual_seed(7)
    y_grad = torch.autograd.grad(dim([images], PROGRESS).embedding.sum(), images)[0]
    torch.manual_seed(7)
    hidden = occlude(torch.ones(4, 3, 32, 32), 0.5) == 0
    assert torch.all(y_grad[hidden] == 0) and torch.count_nonzero(y_grad[~hidden]) > 0
    torch.manual_seed(7)
    loss_grad = torch.autograd.grad(dim([images], PROGRESS).loss, images)[0]
    assert torch.count_nonzero(loss_grad[hidden]) > 0  # the local map still sees the hidden pixels


PRIOR_ONLY = {"beta": 0.0, "gamma": 1.0, "global_dim": 8, "prior_hidden": (16,)}


def _grads(args: dict) -> dict[str, torch.Tensor]:
    dim = make_method("dim", "dim32", args)
    torch.manual_seed(1)
    dim([torch.randn(8, 3, 32, 32)], PROGRESS).loss.backward()
    return {n: p.grad.clone() for n, p in dim.named_parameters() if p.grad is not None}


def test_prior_gradient_penalty_trains_only_the_discriminator():
    """The penalty (rdevon/DIM Discriminator.routine) is part of D's loss only: the encoder's gradients do not
    change with its weight, D's do, and linearly (the difference at weight 2 is twice that at weight 1)."""
    off, one, two = (_grads({**PRIOR_ONLY, "prior_penalty": w}) for w in (0.0, 1.0, 2.0))
    assert off.keys() == one.keys() == two.keys()
    for name, grad in off.items():
        if name.startswith("discriminator"):
            assert torch.allclose(two[name] - grad, 2 * (one[name] - grad), rtol=1e-3, atol=1e-7), name
        else:
            assert torch.equal(one[name], grad) and torch.equal(two[name], grad), name
    # a ReLU net's input gradient depends on its weights only (its biases get no penalty gradient)
    for name in ("discriminator.0.weight", "discriminator.2.weight"):
        assert (one[name] - off[name]).abs().max() > 1e-4, name


def test_prior_gradient_penalty_is_the_per_sample_mean_at_prior_and_encoder_samples():
    """Logged penalty = 0.5 (P + Q), P and Q the mean over samples of ||dD(x_i)/dx_i||^2 at the prior samples
    and at sigmoid(Y), each sample differentiated on its own; D's loss = GAN loss + 1.0 x penalty (the default
    weight, the code's gradient_penalty=1.0)."""
    dim = make_method("dim", "dim32", PRIOR_ONLY)
    assert dim.args.prior_penalty == 1.0
    images = torch.randn(6, 3, 32, 32)
    torch.manual_seed(5)
    out = dim([images], PROGRESS)
    torch.manual_seed(5)
    prior = torch.rand(6, 8)  # the step's first draw (DIM._prior_sample)
    fake = torch.sigmoid(out.embedding.detach())

    def mean_squared_norm(samples: torch.Tensor) -> float:
        norms = []
        for row in samples:
            x = row[None].clone().requires_grad_()
            (grad,) = torch.autograd.grad(dim.discriminator(x).sum(), x)
            norms.append(float(grad.pow(2).sum()))
        return sum(norms) / len(norms)

    expected = 0.5 * (mean_squared_norm(prior) + mean_squared_norm(fake))
    assert expected > 0
    assert out.logs["prior_gradient_penalty"].item() == pytest.approx(expected, rel=1e-4)
    with torch.no_grad():
        gan = prior_discriminator_loss(dim.discriminator(prior), dim.discriminator(fake)).item()
    assert out.logs["prior_discriminator"].item() == pytest.approx(gan + expected, rel=1e-5)


def test_prior_penalty_is_a_non_negative_setting():
    assert resolve_config("dim", "cpu").method_args["prior_penalty"] == 1.0
    with pytest.raises(ConfigError, match="prior_penalty=-1.0 is out of range"):
        resolve_config("dim", "cpu", sets={"prior_penalty": "-1"})


@pytest.mark.parametrize("preset", ["imagenet", "small", "cpu"])
def test_every_preset_uses_cortex_adam_for_all_parameters_discriminator_included(preset):
    """cortex/_lib/optimizer.py: Adam, lr 1e-4, betas (0.5, 0.999), for every network (D too)."""
    cfg = resolve_config("dim", preset, sets={"mi_units": "16"})
    assert (cfg.optimizer, cfg.base_lr, cfg.adam_betas) == ("adam", 1e-4, (0.5, 0.999))
    if preset == "imagenet":
        return  # alex64's optimizer is checked by the training step below; building it here is slow
    dim = build_method(cfg, 3)
    optimizer = build_optimizer(dim.parameter_groups(), cfg)
    assert isinstance(optimizer, torch.optim.Adam)
    assert all(group["betas"] == (0.5, 0.999) for group in optimizer.param_groups)
    stepped = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert all(id(p) in stepped for p in dim.discriminator.parameters())


def test_the_64px_preset_is_alex64x64():
    cfg = resolve_config("dim", "imagenet")
    assert (cfg.backbone, cfg.augment.image_size, cfg.batch_size) == ("alex64", 64, 64)


def test_one_training_step_with_alex64_at_64px_is_finite_and_moves_every_player():
    """The 64 px preset's encoder with the preset's optimizer: one step gives a finite loss, the encoder, the
    MI networks and the discriminator all change, and no parameter becomes NaN."""
    cfg = resolve_config("dim", "imagenet", sets={"mi_units": "32"})
    dim = build_method(cfg, 3)
    optimizer = build_optimizer(dim.parameter_groups(), cfg)
    before = {n: p.detach().clone() for n, p in dim.named_parameters()}
    torch.manual_seed(0)
    out = dim([torch.randn(4, 3, 64, 64)], PROGRESS)
    assert out.embedding.shape == (4, 64) and torch.isfinite(out.loss)
    assert all(torch.isfinite(v) for v in out.logs.values()) and out.logs["prior_gradient_penalty"] > 0
    out.loss.backward()
    optimizer.step()
    assert all(torch.isfinite(p).all() for p in dim.parameters())
    for prefix in ("backbone.net.convs.0", "backbone.net.fc", "global_head", "local_mi", "discriminator"):
        assert any(not torch.equal(p, before[n]) for n, p in dim.named_parameters() if n.startswith(prefix)), prefix
