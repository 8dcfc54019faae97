"""The bf16 convolution guard: degenerate strided convolutions run in float32 under CPU autocast.

The gradient tests fail without the guard on a CPU whose oneDNN bf16 kernel has the defect (an Intel Xeon
with AMX-BF16: NaN or garbage in the weight gradient of a strided conv on a one-pixel-wide map) and pass
everywhere with it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from selfsup.engine.bf16_guard import GuardedConv2d, degenerate_for_bf16, guard_bf16_convolutions
from selfsup.models import build_backbone

pytestmark = pytest.mark.usefixtures("one_thread")


def gradients(model: nn.Module, x: torch.Tensor, bf16: bool) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = model(x)
    out.float().pow(2).mean().backward()
    return {name: p.grad.detach().float().clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("shape", [(1, 1), (2, 1), (4, 1), (1, 2)])
@pytest.mark.parametrize("kernel", [3, 5])
def test_guarded_strided_conv_on_a_one_pixel_map_matches_float32(shape, kernel):
    torch.manual_seed(0)
    conv = nn.Conv2d(256, 512, kernel, stride=2, padding=kernel // 2, bias=False)
    guard_bf16_convolutions(conv)
    for trial in range(3):  # the defect is uninitialised memory: it does not show on every call
        x = torch.randn(8, 256, *shape)
        reference = gradients(conv, x, bf16=False)["weight"]
        guarded = gradients(conv, x, bf16=True)["weight"]
        assert torch.isfinite(guarded).all(), trial
        assert torch.allclose(guarded, reference, atol=1e-5, rtol=1e-4), trial


def test_resnet_at_16px_gets_exact_zero_gradients_where_the_kernel_only_sees_padding():
    """ResNet-10 with the ImageNet stem at 16 px: layer4.0.conv1 (3x3, stride 2) sees a 1x1 map, so only its
    centre tap touches data and the other 8 taps' true gradient is exactly 0. The defective kernel puts
    uninitialised memory there (NaN, 3e22 or 1e-7, call by call)."""
    torch.manual_seed(0)
    backbone = build_backbone("resnet10", "imagenet", in_channels=1)
    assert guard_bf16_convolutions(backbone) == sum(type(m) is GuardedConv2d for m in backbone.modules()) > 0
    padding_only = torch.ones(3, 3, dtype=torch.bool)
    padding_only[1, 1] = False
    for _ in range(5):
        x = torch.randn(16, 1, 16, 16)
        reference = gradients(backbone, x, bf16=False)["net.layer4.0.conv1.weight"]
        mixed = gradients(backbone, x, bf16=True)["net.layer4.0.conv1.weight"]
        assert torch.isfinite(mixed).all()
        assert torch.equal(mixed[:, :, padding_only], torch.zeros_like(mixed[:, :, padding_only]))
        cosine = torch.nn.functional.cosine_similarity(
            mixed[:, :, 1, 1].flatten(), reference[:, :, 1, 1].flatten(), dim=0
        )
        assert cosine > 0.95  # bf16 everywhere upstream: close to float32, not equal


def test_the_guard_keeps_the_state_dict_and_bf16_elsewhere():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.Conv2d(8, 8, 3, padding=1))
    keys = list(model.state_dict())
    assert guard_bf16_convolutions(model) == 2
    assert list(model.state_dict()) == keys and all(isinstance(m, nn.Conv2d) for m in model)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(torch.randn(2, 3, 8, 8)).dtype == torch.bfloat16  # ordinary maps stay in bf16
        assert model[0](torch.randn(2, 3, 1, 1)).dtype == torch.float32  # the degenerate one runs in float32


def test_which_geometries_are_degenerate():
    assert degenerate_for_bf16(torch.empty(1, 1, 1, 1), (2, 2))
    assert degenerate_for_bf16(torch.empty(1, 1, 4, 1), (2, 2))
    assert not degenerate_for_bf16(torch.empty(1, 1, 1, 1), (1, 1))
    assert not degenerate_for_bf16(torch.empty(1, 1, 2, 2), (2, 2))
