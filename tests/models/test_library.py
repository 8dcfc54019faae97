"""Backbones from timm and torchvision by name: plain library models without their classifier, for any input
channels and image size, with MoCo v3's ViT options; unknown names list the closest ones."""

from __future__ import annotations

import math

import pytest
import timm
import torch
import torchvision

from selfsup.models import LibraryOptions, build_backbone
from selfsup.models.backbones import ImageSizeError, check_image_sizes
from selfsup.models.library import BackboneNameError, is_transformer, parse_args


def _build(name: str, channels: int = 3, **options) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_backbone(name, in_channels=channels, options=LibraryOptions(**options))


class TestTimm:
    def test_vit_follows_the_data_patch_4_on_small_images_and_pools_the_class_token(self):
        backbone = _build("timm:vit_tiny_patch16_224", channels=1, image_size=32, args=("depth=2",))
        net = backbone.net
        assert net.patch_embed.proj.kernel_size == (4, 4) and net.patch_embed.proj.in_channels == 1
        assert net.pos_embed.shape == (1, 1 + 8 * 8, 192) and backbone.out_dim == 192
        x = torch.randn(3, 1, 32, 32)
        tokens = net.forward_features(x)
        torch.testing.assert_close(backbone(x), tokens[:, 0])  # the class token after the final norm
        assert is_transformer("timm:vit_tiny_patch16_224") and backbone.transformer

    def test_large_images_keep_the_models_patch_and_an_explicit_patch_size_wins(self):
        large = _build("timm:vit_tiny_patch16_224", image_size=96, args=("depth=1",))
        assert large.net.patch_embed.proj.stride == (16, 16)
        chosen = _build("timm:vit_tiny_patch16_224", image_size=32, patch_size=8, args=("depth=1",))
        assert chosen.net.patch_embed.proj.stride == (8, 8)

    def test_the_state_dict_loads_into_plain_timm_with_the_recorded_construction(self):
        backbone = _build("timm:vit_tiny_patch16_224", channels=1, image_size=32, args=("depth=2", "num_heads=12"))
        kwargs = backbone.construction.kwargs
        assert kwargs == {
            "num_classes": 0,
            "in_chans": 1,
            "img_size": 32,
            "dynamic_img_size": True,
            "patch_size": 4,
            "depth": 2,
            "num_heads": 12,
        }
        plain = timm.create_model("vit_tiny_patch16_224", pretrained=False, **kwargs)
        plain.load_state_dict(backbone.net.state_dict(), strict=True)
        x = torch.randn(2, 1, 32, 32)
        backbone.eval(), plain.eval()
        torch.testing.assert_close(plain(x), backbone(x))
        code = backbone.construction.code()
        assert "timm.create_model('vit_tiny_patch16_224', pretrained=False, num_classes=0" in code

    def test_convnext_any_channels_pooled_output_and_no_vit_options(self):
        backbone = _build("timm:convnext_atto", channels=1, image_size=32)
        assert backbone(torch.randn(2, 1, 32, 32)).shape == (2, 320) and not backbone.transformer
        assert not is_transformer("timm:convnext_atto")
        with pytest.raises(ValueError, match="apply to Vision Transformers"):
            _build("timm:convnext_atto", image_size=32, freeze_patch_embed=True)

    def test_position_embedding_and_class_token_take_no_weight_decay(self):
        backbone = _build("timm:vit_tiny_patch16_224", image_size=32, args=("depth=1",))
        assert backbone.no_weight_decay() == {"net.pos_embed", "net.cls_token"}
        assert _build("timm:convnext_atto", image_size=32).no_weight_decay() == set()


class TestMoCoV3ViTOptions:
    def test_frozen_random_patch_projection(self):
        backbone = _build("timm:vit_tiny_patch16_224", image_size=32, args=("depth=1",), freeze_patch_embed=True)
        proj = backbone.net.patch_embed.proj
        assert not proj.weight.requires_grad and not proj.bias.requires_grad and proj.bias.abs().max() == 0
        bound = math.sqrt(6 / (3 * 4 * 4 + 192))  # Xavier over 3*p*p inputs and D outputs (moco-v3 vits.py)
        assert proj.weight.abs().max() <= bound and proj.weight.abs().max() > 0.9 * bound

    def test_fixed_sincos_position_embedding(self):
        backbone = _build("timm:vit_tiny_patch16_224", image_size=32, args=("depth=1",), pos_embed="sincos")
        pos = backbone.net.pos_embed
        assert not pos.requires_grad and pos.shape == (1, 65, 192)
        assert pos[0, 0].abs().max() == 0  # the class token's slot is a zero vector
        quarter = 192 // 4
        omega = 1.0 / 10000 ** (torch.arange(quarter) / quarter)
        # token k = 8 * i + j of the 8 x 8 grid: the code's "w" is i and its "h" is j (meshgrid's ij indexing)
        k, i, j = 1 + 8 * 3 + 5, 3.0, 5.0
        expected = torch.cat([(i * omega).sin(), (i * omega).cos(), (j * omega).sin(), (j * omega).cos()])
        torch.testing.assert_close(pos[0, k], expected)


class TestTorchvision:
    def test_classifier_removed_and_first_conv_takes_the_channels(self):
        backbone = _build("tv:mobilenet_v3_small", channels=1, image_size=32)
        x = torch.randn(2, 1, 32, 32)
        assert backbone(x).shape == (2, backbone.out_dim)
        plain = torchvision.models.get_model("mobilenet_v3_small", weights=None)
        namespace = {"torch": torch, "torchvision": torchvision}
        exec("\n".join(backbone.construction.lines), namespace)  # the card's code builds the same model
        rebuilt = namespace["net"]
        rebuilt.load_state_dict(backbone.net.state_dict(), strict=True)
        rebuilt.eval(), backbone.eval()
        torch.testing.assert_close(rebuilt(x), backbone(x))
        assert len(plain.state_dict()) == len(rebuilt.state_dict()) + 2  # the classifier's weight and bias

    def test_vit_takes_the_run_image_size(self):
        backbone = _build("tv:vit_b_16", image_size=32)
        assert backbone(torch.randn(2, 3, 32, 32)).shape == (2, 768) and backbone.transformer
        assert backbone.no_weight_decay() == {"net.class_token", "net.encoder.pos_embedding"}


@pytest.mark.parametrize(
    ("name", "closest"),
    [("timm:vit_tiny_patch16_22", "timm:vit_tiny_patch16_224"), ("tv:resnet5", "tv:resnet50")],
)
def test_unknown_names_list_the_closest(name, closest):
    with pytest.raises(BackboneNameError, match=f"Closest: {closest}"):
        build_backbone(name)


def test_backbone_args_are_python_literals_or_strings():
    assert parse_args(("depth=2", "drop_path_rate=0.1", "global_pool=avg", "qkv_bias=False")) == {
        "depth": 2,
        "drop_path_rate": 0.1,
        "global_pool": "avg",
        "qkv_bias": False,
    }
    with pytest.raises(ValueError, match="key=value"):
        parse_args(("depth",))


def test_a_model_that_cannot_encode_the_image_size_is_named_with_the_size_and_the_remedy():
    # ConvNeXt: a stride-4 stem and three stride-2 downsamplings with 2 x 2 kernels; 16 px leaves 1 x 1 before
    # the last one, and torch's own error names neither the model nor the size
    backbone = _build("timm:convnext_atto", channels=1, image_size=16)
    backbone.train()
    with pytest.raises(ImageSizeError, match=r"timm:convnext_atto cannot encode 16-px images .*backbone_patch_size"):
        check_image_sizes(backbone, "timm:convnext_atto", 1, (32, 16))
    assert backbone.training  # the mode it had
    check_image_sizes(backbone, "timm:convnext_atto", 1, (32,))  # 32 px fits: no error
