"""LARS exclusions and the learning-rate schedule's shape."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from selfsup.config import TrainConfig
from selfsup.optim import LARS, apply_lr, build_optimizer, lr_factor


def test_lars_adapts_and_decays_weights():
    w = nn.Parameter(torch.tensor([3.0, 4.0]).view(1, 2))  # ||w|| = 5
    w.grad = torch.tensor([[0.6, 0.8]])
    opt = LARS([{"params": [w]}], lr=0.1, weight_decay=0.1, eta=1e-3)
    opt.step()
    d = torch.tensor([[0.6, 0.8]]) + 0.1 * torch.tensor([[3.0, 4.0]])
    trust = 1e-3 * 5 / d.norm()
    assert torch.allclose(w.detach(), torch.tensor([[3.0, 4.0]]) - 0.1 * trust * d)


def test_lars_excluded_group_is_plain_momentum_sgd():
    b = nn.Parameter(torch.tensor([1.0, 2.0]))
    b.grad = torch.tensor([0.5, -0.5])
    opt = LARS([{"params": [b], "lars_exclude": True, "weight_decay": 0.0}], lr=0.1, weight_decay=0.5)
    opt.step()
    assert torch.allclose(b.detach(), torch.tensor([1.0 - 0.05, 2.0 + 0.05]))
    b.grad = torch.tensor([0.5, -0.5])
    opt.step()  # momentum buffer: 0.9 * g + g
    assert torch.allclose(b.detach(), torch.tensor([0.95 - 0.1 * 1.9 * 0.5, 2.05 + 0.1 * 1.9 * 0.5]))


def test_lars_clip_caps_the_effective_lr_at_the_global_lr():
    w = nn.Parameter(torch.ones(1, 4))
    w.grad = torch.full((1, 4), 1e-6)  # huge trust ratio
    opt = LARS([{"params": [w]}], lr=0.01, eta=1e-3, clip=True)
    opt.step()
    assert torch.allclose(w.detach(), torch.ones(1, 4) - 0.01 * 1e-6)


def test_build_optimizer_excludes_biases_and_norms_from_decay_and_adaptation():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    cfg = TrainConfig(optimizer="lars", weight_decay=1e-6, base_lr=0.3, batch_size=512)
    opt = build_optimizer([{"params": list(model.parameters())}], cfg)
    groups = {g["lars_exclude"]: g for g in opt.param_groups}
    assert {p.ndim for p in groups[False]["params"]} == {2, 4}
    assert {p.ndim for p in groups[True]["params"]} == {1}
    assert groups[True]["weight_decay"] == 0.0 and groups[False]["weight_decay"] == 1e-6
    assert opt.param_groups[0]["lr"] == pytest.approx(0.3 * 512 / 256)


def test_exempt_parameters_join_the_norms_and_biases_and_adamw_can_exclude_them_from_decay():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.LayerNorm(4))
    token = nn.Parameter(torch.zeros(1, 1, 4))  # a ViT class token: 3-D, missed by the ndim rule
    params = [*model.parameters(), token]
    lars = build_optimizer([{"params": params}], TrainConfig(optimizer="lars"), exempt=[token])
    excluded = {id(p) for g in lars.param_groups if g["lars_exclude"] for p in g["params"]}
    assert excluded == {id(model[0].bias), id(model[1].weight), id(model[1].bias), id(token)}
    decayed = TrainConfig(optimizer="adamw", weight_decay=0.05)  # default: every parameter decays (ResNet recipes)
    assert [g["weight_decay"] for g in build_optimizer([{"params": params}], decayed, [token]).param_groups] == [0.05]
    split = TrainConfig(optimizer="adamw", weight_decay=0.05, weight_decay_exclude=True)
    groups = build_optimizer([{"params": params}], split, exempt=[token]).param_groups
    decay = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    assert decay[id(token)] == decay[id(model[0].bias)] == 0.0 and decay[id(model[0].weight)] == 0.05
    assert not any(g["lars_exclude"] for g in groups)


def test_swav_style_lars_adapts_every_parameter():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    cfg = TrainConfig(optimizer="lars", lars_exclude_1d=False)
    opt = build_optimizer([{"params": list(model.parameters())}], cfg)
    assert len(opt.param_groups) == 1 and not opt.param_groups[0]["lars_exclude"]


def test_fixed_lr_and_multiplier_groups():
    a, b = nn.Parameter(torch.ones(2, 2)), nn.Parameter(torch.ones(2, 2))
    cfg = TrainConfig(optimizer="sgd", base_lr=0.05, batch_size=512)
    opt = build_optimizer([{"params": [a]}, {"params": [b], "fixed_lr": True}], cfg)
    apply_lr(opt, cfg.lr, 0.25)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.25)
    assert opt.param_groups[1]["lr"] == pytest.approx(0.1)


class TestSchedule:
    def test_warmup_is_linear_then_cosine_to_the_final_ratio(self):
        spe, epochs = 10, 20
        f = [lr_factor(s, spe, epochs, warmup_epochs=2, final_lr_ratio=0.001) for s in range(spe * epochs)]
        assert f[0] == pytest.approx(1 / 20)
        assert f[9] == pytest.approx(10 / 20)
        assert f[19] == pytest.approx(1.0)
        assert all(b >= a for a, b in zip(f[:20], f[1:20]))
        assert all(b <= a + 1e-12 for a, b in zip(f[20:], f[21:]))
        assert f[-1] == pytest.approx(0.001, abs=2e-4)
        mid = 20 + (200 - 20) // 2
        assert f[mid] == pytest.approx(0.001 + 0.999 * 0.5 * (1 + math.cos(math.pi * 0.5)), abs=0.01)

    def test_step_schedule(self):
        assert lr_factor(0, 10, 200, schedule="step", milestones=(120, 160)) == 1.0
        assert lr_factor(1200, 10, 200, schedule="step", milestones=(120, 160)) == pytest.approx(0.1)
        assert lr_factor(1600, 10, 200, schedule="step", milestones=(120, 160)) == pytest.approx(0.01)

    def test_per_epoch_schedule_holds_within_an_epoch(self):
        values = {lr_factor(s, 10, 5, warmup_epochs=0, per_step=False) for s in range(10, 20)}
        assert len(values) == 1

    def test_unknown_schedule_lists_valid_ones(self):
        with pytest.raises(ValueError, match="warmup_cosine, step, constant"):
            lr_factor(0, 1, 1, schedule="linear")
