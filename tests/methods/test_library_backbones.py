"""Every method whose loss works on a global vector trains a timm ViT and a timm ConvNeXt; CPC, DIM and AMDIM
refuse them, saying why."""

from __future__ import annotations

import pytest
import torch

from selfsup.config import ConfigError, TrainConfig
from selfsup.models import LibraryOptions, build_backbone
from selfsup.optim import build_optimizer
from selfsup.presets import resolve_config
from tests.helpers import GLOBAL_VECTOR_ARGS, PROGRESS, TINY_LIBRARY_BACKBONES, library_method, make_method

pytestmark = pytest.mark.usefixtures("one_thread")

ADAMW = TrainConfig(optimizer="adamw", base_lr=1e-3, lr_scaling="none", weight_decay=0.05, weight_decay_exclude=True)


@pytest.mark.parametrize("kind", ["vit", "convnext"])
@pytest.mark.parametrize("name", list(GLOBAL_VECTOR_ARGS))
def test_global_vector_methods_train_timm_backbones(name, kind):
    method = library_method(name, kind)
    trainable = {n: p.detach().clone() for n, p in method.backbone.named_parameters() if p.requires_grad}
    optimizer = build_optimizer(method.parameter_groups(), ADAMW, method.no_weight_decay_parameters())
    g = torch.Generator().manual_seed(1)
    size = TINY_LIBRARY_BACKBONES[kind][2]
    views = [torch.randn(8, 3, size, size, generator=g) for _ in range(method.num_views(method.args))]
    for step in range(3):
        optimizer.zero_grad(set_to_none=True)
        out = method(views, PROGRESS)
        assert torch.isfinite(out.loss), (name, kind, step)
        out.loss.backward()
        if step == 0:
            missing = [n for n, p in method.backbone.named_parameters() if p.requires_grad and p.grad is None]
            assert not missing, missing  # every trained parameter of the backbone takes part (DDP needs it)
        method.before_optimizer_step(PROGRESS)
        optimizer.step()
        method.after_optimizer_step(PROGRESS)
    moved = [n for n, p in method.backbone.named_parameters() if p.requires_grad and not torch.equal(p, trainable[n])]
    assert len(moved) == len(trainable)


def test_swav_multi_crop_on_a_vit_resamples_the_position_embedding_for_the_small_crops():
    method = library_method("swav", "vit")
    g = torch.Generator().manual_seed(2)
    views = [torch.randn(8, 3, 16, 16, generator=g) for _ in range(2)] + [
        torch.randn(8, 3, 8, 8, generator=g) for _ in range(2)
    ]
    out = method(views, PROGRESS)
    out.loss.backward()
    assert torch.isfinite(out.loss) and method.backbone.net.pos_embed.grad.abs().sum() > 0


def test_vit_position_embedding_and_class_token_take_no_weight_decay():
    method = library_method("simclr", "vit")
    optimizer = build_optimizer(method.parameter_groups(), ADAMW, method.no_weight_decay_parameters())
    decay = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    net = method.backbone.net
    assert decay[id(net.pos_embed)] == decay[id(net.cls_token)] == decay[id(net.norm.weight)] == 0.0
    assert decay[id(net.blocks[0].attn.qkv.bias)] == 0.0 and decay[id(net.blocks[0].attn.qkv.weight)] == 0.05
    lars = TrainConfig(optimizer="lars", lars_exclude_1d=True)
    groups = build_optimizer(method.parameter_groups(), lars, method.no_weight_decay_parameters()).param_groups
    excluded = {id(p) for g in groups if g["lars_exclude"] for p in g["params"]}
    assert {id(net.pos_embed), id(net.cls_token)} <= excluded and id(net.patch_embed.proj.weight) not in excluded


@pytest.mark.parametrize("method", ["cpc", "dim", "amdim"])
def test_methods_that_read_spatial_maps_refuse_a_vit_and_say_why(method):
    with pytest.raises(ConfigError, match=f"{method} cannot train timm:vit_tiny_patch16_224: .*(maps|patch)"):
        resolve_config(method, "cpu", flags={"backbone": "timm:vit_tiny_patch16_224"})
    backbone = build_backbone("timm:vit_tiny_patch16_224", options=LibraryOptions(image_size=32, args=("depth=1",)))
    with pytest.raises(ValueError, match="cannot train this backbone"):
        make_method(method, "timm:vit_tiny_patch16_224", options=LibraryOptions(image_size=32, args=("depth=1",)))
    assert not backbone.has_stage_maps
