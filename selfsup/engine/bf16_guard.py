"""Run the convolutions that oneDNN's bf16 CPU kernels get wrong in float32.

**The defect.** Under bf16 autocast on the CPU, the backward pass of a strided convolution whose input
is one pixel wide (``W == 1``, or ``H == 1``) returns wrong gradients: garbage in the weight gradient of
the kernel taps that only ever see padding (whose true gradient is exactly 0), and sometimes in the input
gradient. The garbage is uninitialised memory: finite and off by factors of 3 to 1e35 on one call, NaN or
inf on the next. Measured with torch 2.14.1 (oneDNN) on an Intel Xeon with AMX-BF16: a 3x3, stride-2,
padding-1 convolution of 256 -> 512 channels on a 1x1 map gives NaN in 3 of 5 calls; 1x1 inputs with
kernels 3, 5 and 7 and 64 to 512 channels all go wrong, and so do 2x1 and 4x1 inputs; 1x2 and 2x2 and
larger inputs, stride 1, and float32 are all correct (``tests/engine/test_bf16_guard.py``). On an AMD
EPYC with AVX512-BF16 the same weight gradient was found not to be reproducible from call to call
(``docs/performance.md``), the same uninitialised memory.

**Where it bites.** ResNet's ``layer4.0.conv1`` (3x3, stride 2) sees a 1x1 map when 16-px images go
through the ImageNet stem: SimCLR's loss became NaN at step 2 of a 16-px run on the Xeon.

**The fix.** :func:`guard_bf16_convolutions` makes every plain ``nn.Conv2d`` of a model check its input
at each call: a strided convolution of a map that is one pixel high or wide, run under CPU autocast,
is computed in float32 instead (autocast off, input cast to float32). Such maps are tiny, so the cost is
nil; every other convolution keeps bf16. The state dict, the parameters and ``isinstance(m,
nn.Conv2d)`` are unchanged (the module's class becomes a subclass of ``nn.Conv2d`` that adds the check),
so checkpoints and exports do not see the guard.
"""

from __future__ import annotations

import torch
from torch import nn


def degenerate_for_bf16(x: torch.Tensor, stride: tuple[int, ...]) -> bool:
    """Whether oneDNN's bf16 backward is wrong for a convolution of ``x`` (N, C, H, W) with ``stride``:
    a stride above 1 along a dimension of size 1."""
    return (x.shape[-2] == 1 and stride[0] > 1) or (x.shape[-1] == 1 and stride[1] > 1)


class GuardedConv2d(nn.Conv2d):
    """``nn.Conv2d`` that runs in float32 where bf16 CPU kernels are wrong (see the module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and torch.is_autocast_enabled("cpu") and degenerate_for_bf16(x, self.stride):
            with torch.autocast("cpu", enabled=False):
                bias = None if self.bias is None else self.bias.float()
                return self._conv_forward(x.float(), self.weight.float(), bias)
        return super().forward(x)


def guard_bf16_convolutions(model: nn.Module) -> int:
    """Guard every plain ``nn.Conv2d`` of ``model`` in place; returns how many were guarded.

    Subclasses of ``nn.Conv2d`` (which may have their own ``forward``) are left alone."""
    count = 0
    for module in model.modules():
        if type(module) is nn.Conv2d:
            module.__class__ = GuardedConv2d
            count += 1
    return count
