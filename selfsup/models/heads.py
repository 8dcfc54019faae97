"""The one MLP builder that every projector, predictor and expander is made from.

Examples (``d`` is the backbone width):

* SimCLR v1 projector (``model_util.py`` at tag 1.0): ``mlp([d, 2048, 128], last_bn=True, last_bn_affine="scale",
  last_bias=False)``
* VICReg expander: ``mlp([d, 8192, 8192, 8192], last_bias=False)``
* SimSiam projector: ``mlp([d, 2048, 2048, 2048], bias=False, last_bn=True)``
* MoCo v1 head: ``mlp([d, 128])`` (a single linear layer)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn


def scale_only_batchnorm(width: int) -> nn.BatchNorm1d:
    """BatchNorm1d with a learnable scale γ and no shift β (TensorFlow's ``center=False, scale=True``, the last
    BN of SimCLR v1's projection head). β is kept as a frozen zero parameter, the PyTorch idiom, so that the
    layer is an ordinary ``nn.BatchNorm1d`` to SyncBatchNorm conversion, DDP and the optimizers (which skip
    parameters that do not require grad)."""
    bn = nn.BatchNorm1d(width)
    assert bn.bias is not None
    with torch.no_grad():
        bn.bias.zero_()
    bn.bias.requires_grad_(False)
    return bn


def mlp(
    dims: Sequence[int],
    *,
    hidden_bn: bool = True,
    last_bn: bool = False,
    last_bn_affine: bool | Literal["scale"] = False,
    bias: bool = True,
    last_bias: bool | None = None,
    activation: type[nn.Module] = nn.ReLU,
) -> nn.Sequential:
    """Linear layers ``dims[0] -> dims[1] -> ... -> dims[-1]``.

    Args:
        dims: layer widths, input first. ``[d, k]`` is a single linear layer.
        hidden_bn: BatchNorm1d after every hidden linear layer (before the activation).
        last_bn: BatchNorm1d after the last linear layer.
        last_bn_affine: whether that last BN has learnable scale and shift. ``False`` gives the
            affine-free BN of SimSiam, MoCo v3 and Barlow Twins' standardisation, ``"scale"`` a learnable
            scale without a shift (:func:`scale_only_batchnorm`, SimCLR v1).
        bias: bias of the hidden linear layers. A bias directly followed by BN is redundant,
            so recipes often turn it off.
        last_bias: bias of the last linear layer (defaults to ``bias``).
        activation: the hidden non-linearity.
    """
    if len(dims) < 2:
        raise ValueError(f"an MLP needs at least input and output widths, got {list(dims)}")
    last_bias = bias if last_bias is None else last_bias
    layers: list[nn.Module] = []
    for i, (width_in, width_out) in enumerate(zip(dims[:-1], dims[1:])):
        is_last = i == len(dims) - 2
        layers.append(nn.Linear(width_in, width_out, bias=last_bias if is_last else bias))
        if is_last:
            if last_bn and last_bn_affine == "scale":
                layers.append(scale_only_batchnorm(width_out))
            elif last_bn:
                layers.append(nn.BatchNorm1d(width_out, affine=bool(last_bn_affine)))
        else:
            if hidden_bn:
                layers.append(nn.BatchNorm1d(width_out))
            layers.append(activation())
    return nn.Sequential(*layers)
