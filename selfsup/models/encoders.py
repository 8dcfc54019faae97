"""The encoders of the mutual-information methods (DIM, AMDIM, CPC), registered as backbones.

Every encoder here is a :class:`~selfsup.models.backbones.Backbone` (``forward`` gives the pooled
representation h, ``feature_map`` the last spatial map) with one more method,
``stage_maps(x) -> (maps, h)``: every intermediate feature map, shallow to deep, and h, from one
forward pass. :func:`feature_pyramid` gives the same for the torchvision ResNets (the outputs of
``layer1`` .. ``layer4``), so that DIM and AMDIM also run on a ResNet.

Registered names (``build_backbone(name, stem, in_channels, zero_init_residual, norm)``; ``stem`` and
``zero_init_residual`` only concern ResNets and are ignored here):

* ``dim32`` / ``dim64``: Deep InfoMax's DCGAN-style ``basic32x32`` / ``basic64x64`` encoders (rdevon/DIM
  ``cortex_DIM/configs/convnets.py``): 4x4 stride-2 convolutions (64-128-256[-512]) + norm + ReLU, then a
  1024-unit fully connected layer + norm + ReLU. h is that 1024-d layer; DIM's 64-d global vector Y is
  a linear head of the method. The local map of DIM(L) is the 128-channel 8x8 map (``dim32``) or the
  256-channel 8x8 map (``dim64``): ``default_local_stage``. An adaptive average pool before the FC layer
  lets other input sizes (e.g. 28 px) through; at the native size it is the identity.
* ``alex64``: Deep InfoMax's ``alex64x64`` encoder (rdevon/DIM ``cortex_DIM/configs/convnets.py``, "used
  for STL10 and tiny Imagenet results"), an AlexNet-like stack of 3x3 stride-1 padding-1 convolutions
  96-192-384-384-192, each with norm + ReLU, a 3x3 stride-2 max-pool after the first, second and fifth,
  then two 4096-unit fully connected layers + norm + ReLU. At 64 px the maps are 96x31x31, 192x15x15,
  384x15x15, 384x15x15, 192x7x7; DIM(L)'s local map is the 384-channel 15x15 map (the code's
  ``local_task_idx=(2, -1)``), h the second 4096-d layer, and the 64-d Y a linear head of the method (the
  layer the code's ``Controller`` appends). Convolutions and linear layers followed by a norm have no
  bias (the code's ``bias = not bn``); PyTorch's default initialisation, as the code's. An adaptive
  average pool to 7x7 before the FC layers lets other sizes through (the identity at 64 px).
* ``amdim32`` / ``amdim64`` / ``amdim128``: AMDIM's encoders (Philip-Bachman/amdim-public ``model.py``)
  for 32, 64 and 128 px inputs: residual blocks **without padding** (so a local feature sees only its
  receptive field), ending in 7x7, 5x5 and 1x1 maps. Widths are the code's defaults (``ndf`` 128,
  ``n_depth`` 3, ``n_rkhs`` 1024) for 32 and 64 px and the README's ImageNet command (192, 8, 1536) for
  128 px. ``amdim32-small`` (ndf 32, depth 1, 256) is the CPU-sized version. As in the code, the
  blocks have no normalisation except the output layer (``norm`` picks its kind: BatchNorm for
  ``batch``, GroupNorm for ``group``/``layer``), and the last conv of every residual branch starts at
  zero (the code's ``init_weights``). ``stage_sizes`` lists the width of every map at the native size.
* ``patchnet`` / ``patchnet-small``: a small conv encoder for CPC's 8x8 patches: three 3x3 convolutions
  (strides 1, 2, 2; widths 64-128-256 or 32-64-128) with ``norm`` and ReLU, then global average pooling.
  With ``norm="group"`` or ``"layer"`` every patch is normalised on its own (CPC v2 §3).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import ResNet

from selfsup.models.backbones import BACKBONES, Backbone, norm_layer

__all__ = [
    "AMDIMEncoder",
    "AlexEncoder",
    "DCGANEncoder",
    "PatchEncoder",
    "default_local_stage",
    "feature_pyramid",
    "stage_channels",
]

_StageMaps = Callable[[torch.Tensor], tuple[list[torch.Tensor], torch.Tensor]]
"""The type of an encoder's ``stage_maps(x) -> (maps, h)``."""


def _norm1d(norm: str, features: int) -> nn.Module:
    return nn.BatchNorm1d(features) if norm == "batch" else nn.LayerNorm(features)


# ----------------------------------------------------------------------------- DIM


class ConvStackEncoder(Backbone):
    """DIM's encoders: a stack of conv blocks (``net["convs"]``, each block's output a stage map), a pool to the
    last map's size and fully connected layers (``net["fc"]``) giving h. Subclasses build ``net``."""

    net: nn.ModuleDict

    def __init__(
        self, net: nn.ModuleDict, fc_width: int, widths: Sequence[int], sizes: Sequence[int], local_stage: int
    ) -> None:
        super().__init__(net, fc_width)
        self.default_local_stage = local_stage
        self.stage_channels = list(widths)
        self.stage_sizes = list(sizes)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def stage_maps(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        maps = []
        for block in cast(nn.ModuleList, self.net["convs"]):
            x = block(x)
            maps.append(x)
        h = self.net["fc"](torch.flatten(self.net["pool"](x), 1))
        return maps, h

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        for block in cast(nn.ModuleList, self.net["convs"]):
            x = block(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net["fc"](torch.flatten(self.net["pool"](self.feature_map(x)), 1))


class DCGANEncoder(ConvStackEncoder):
    """DIM's ``basic32x32`` / ``basic64x64`` encoder: strided 4x4 convs, then FC 1024 (h)."""

    def __init__(
        self,
        in_channels: int,
        widths: Sequence[int],
        fc_width: int = 1024,
        input_size: int = 32,
        norm: str = "batch",
        local_stage: int = 1,
    ) -> None:
        layer = norm_layer(norm)
        blocks = []
        channels = in_channels
        for width in widths:
            blocks.append(
                nn.Sequential(nn.Conv2d(channels, width, 4, 2, 1, bias=False), layer(width), nn.ReLU(inplace=True))
            )
            channels = width
        final = input_size // 2 ** len(widths)
        net = nn.ModuleDict(
            {
                "convs": nn.ModuleList(blocks),
                "pool": nn.AdaptiveAvgPool2d(final),
                "fc": nn.Sequential(
                    nn.Linear(channels * final * final, fc_width), _norm1d(norm, fc_width), nn.ReLU(inplace=True)
                ),
            }
        )
        sizes = [input_size // 2 ** (i + 1) for i in range(len(widths))]
        super().__init__(net, fc_width, widths, sizes, local_stage)


def _pooled_size(size: int) -> int:
    """The width after a 3x3 stride-2 max-pool without padding."""
    return (size - 3) // 2 + 1


class AlexEncoder(ConvStackEncoder):
    """DIM's ``alex64x64`` encoder: five 3x3 convs (three followed by max-pools), then FC 4096 x 2 (h).

    rdevon/DIM ``cortex_DIM/configs/convnets.py`` (``_alex64x64``); see the module docstring.
    """

    def __init__(
        self,
        in_channels: int,
        widths: Sequence[int] = (96, 192, 384, 384, 192),
        pooled: Sequence[bool] = (True, True, False, False, True),
        fc_width: int = 4096,
        input_size: int = 64,
        norm: str = "batch",
        local_stage: int = 2,
    ) -> None:
        layer = norm_layer(norm)
        blocks = []
        channels, size, sizes = in_channels, input_size, []
        for width, pool in zip(widths, pooled, strict=True):
            modules: list[nn.Module] = [nn.Conv2d(channels, width, 3, 1, 1, bias=False), layer(width), nn.ReLU(True)]
            if pool:
                modules.append(nn.MaxPool2d(3, 2))
                size = _pooled_size(size)
            blocks.append(nn.Sequential(*modules))
            channels = width
            sizes.append(size)
        net = nn.ModuleDict(
            {
                "convs": nn.ModuleList(blocks),
                "pool": nn.AdaptiveAvgPool2d(size),
                "fc": nn.Sequential(
                    nn.Linear(channels * size * size, fc_width, bias=False),
                    _norm1d(norm, fc_width),
                    nn.ReLU(inplace=True),
                    nn.Linear(fc_width, fc_width, bias=False),
                    _norm1d(norm, fc_width),
                    nn.ReLU(inplace=True),
                ),
            }
        )
        super().__init__(net, fc_width, widths, sizes, local_stage)


# ----------------------------------------------------------------------------- AMDIM


class _MaybeNorm(nn.Module):
    """AMDIM's ``MaybeBatchNorm2d``: a normalisation layer that only runs when ``enabled``."""

    def __init__(self, channels: int, norm: str, enabled: bool) -> None:
        super().__init__()
        self.norm = norm_layer(norm)(channels) if enabled else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


class _ConvReLU(nn.Module):
    """AMDIM's ``Conv3x3``: optional (reflect) padding, a conv with bias, ReLU."""

    def __init__(self, n_in: int, n_out: int, kernel: int, stride: int, pad: int = 0) -> None:
        super().__init__()
        self.pad = pad
        self.conv = nn.Conv2d(n_in, n_out, kernel, stride, 0, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad:
            x = F.pad(x, (self.pad,) * 4, mode="reflect")
        return F.relu(self.conv(x))


class _ResNxN(nn.Module):
    """AMDIM's ``ConvResNxN``: conv(k, stride, no padding) -> ReLU -> conv 1x1, plus an average-pooled
    shortcut (zero-padded channels when widening, a conv when narrowing). No output activation."""

    def __init__(self, n_in: int, n_out: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.n_in, self.n_out, self.kernel, self.stride = n_in, n_out, kernel, stride
        self.conv1 = nn.Conv2d(n_in, n_out, kernel, stride, 0, bias=False)
        self.conv2 = nn.Conv2d(n_out, n_out, 1, 1, 0, bias=False)
        self.conv3 = nn.Conv2d(n_in, n_out, kernel, stride, 0, bias=True) if n_out < n_in else None
        nn.init.zeros_(self.conv2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.conv2(F.relu(self.conv1(x)))
        if self.conv3 is not None:
            shortcut = self.conv3(x)
        else:
            shortcut = F.avg_pool2d(x, self.kernel, self.stride, 0)
            if self.n_out > self.n_in:
                shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, self.n_out - self.n_in))
        return residual + shortcut


def _res_block(n_in: int, n_out: int, kernel: int, stride: int, depth: int) -> nn.Sequential:
    """AMDIM's ``ConvResBlock``: one NxN residual layer, then ``depth - 1`` 1x1 ones."""
    return nn.Sequential(_ResNxN(n_in, n_out, kernel, stride), *[_ResNxN(n_out, n_out, 1, 1) for _ in range(depth - 1)])


class AMDIMEncoder(Backbone):
    """AMDIM's no-padding residual encoder for ``input_size`` 32, 64 or 128 px (see the module docstring).

    ``stage_maps`` returns every layer's activation; the 7x7, 5x5 and 1x1 maps AMDIM uses are the last
    activations of those sizes (the code's ``dim2layer``). h is the 1x1 output, ``out_dim`` channels.
    """

    net: nn.ModuleList

    def __init__(
        self, in_channels: int, ndf: int, n_depth: int, out_dim: int, input_size: int = 32, norm: str = "batch"
    ) -> None:
        d = ndf
        if input_size == 32:
            layers = [
                _ConvReLU(in_channels, d, 3, 1),
                _ResNxN(d, d, 1, 1),
                _res_block(d, 2 * d, 4, 2, n_depth),
                _res_block(2 * d, 4 * d, 2, 2, n_depth),
            ]
            top = 4 * d
        elif input_size == 64:
            layers = [
                _ConvReLU(in_channels, d, 3, 1),
                _res_block(d, 2 * d, 4, 2, n_depth),
                _res_block(2 * d, 4 * d, 4, 2, n_depth),
                _res_block(4 * d, 8 * d, 2, 2, n_depth),
            ]
            top = 8 * d
        elif input_size == 128:
            layers = [
                _ConvReLU(in_channels, d, 5, 2, pad=2),
                _ConvReLU(d, d, 3, 1),
                _res_block(d, 2 * d, 4, 2, n_depth),
                _res_block(2 * d, 4 * d, 4, 2, n_depth),
                _res_block(4 * d, 8 * d, 2, 2, n_depth),
            ]
            top = 8 * d
        else:
            raise ValueError(f"AMDIM encoders exist for 32, 64 and 128 px inputs, not {input_size}")
        layers += [
            _MaybeNorm(top, norm, enabled=False),
            _res_block(top, top, 3, 1, n_depth),
            _res_block(top, top, 3, 1, n_depth),
            _ResNxN(top, out_dim, 3, 1),
            _MaybeNorm(out_dim, norm, True),
        ]
        super().__init__(nn.ModuleList(layers), out_dim)
        self.input_size = input_size
        self.stage_channels, self.stage_sizes = _probe(self, in_channels, input_size)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def stage_maps(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            raise ValueError(
                f"this AMDIM encoder takes {self.input_size} px images, got {tuple(x.shape[-2:])}; "
                f"set aug.image_size={self.input_size} or pick the amdim encoder of your size"
            )
        maps = []
        for layer in self.net:
            x = layer(x)
            maps.append(x)
        return maps, torch.flatten(x, 1)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.stage_maps(x)[0][-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stage_maps(x)[1]


# ----------------------------------------------------------------------------- CPC


class PatchEncoder(Backbone):
    """A small conv encoder for CPC patches: 3x3 convs (strides 1, 2, 2) + norm + ReLU, average pool."""

    net: nn.Sequential

    def __init__(self, in_channels: int, widths: Sequence[int] = (64, 128, 256), norm: str = "group") -> None:
        layer = norm_layer(norm)
        blocks = []
        channels = in_channels
        for i, width in enumerate(widths):
            blocks += [
                nn.Conv2d(channels, width, 3, 1 if i == 0 else 2, 1, bias=False),
                layer(width),
                nn.ReLU(inplace=True),
            ]
            channels = width
        super().__init__(nn.Sequential(*blocks), channels)
        self.stage_channels = list(widths)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def stage_maps(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        maps = []
        for module in self.net:
            x = module(x)
            if isinstance(module, nn.ReLU):
                maps.append(x)
        return maps, x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).mean(dim=(2, 3))


# ----------------------------------------------------------------------------- helpers


def feature_pyramid(backbone: Backbone, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Every intermediate feature map (shallow to deep) and the pooled h, from one forward pass.

    Encoders of this module define ``stage_maps``; for the torchvision ResNets the maps are the outputs
    of ``layer1`` .. ``layer4`` and h their global average.
    """
    if hasattr(backbone, "stage_maps"):
        return cast(_StageMaps, backbone.stage_maps)(x)
    net = cast(ResNet, backbone.net)
    y = backbone.stem(x)
    maps = []
    for name in ("layer1", "layer2", "layer3", "layer4"):
        y = getattr(net, name)(y)
        maps.append(y)
    return maps, torch.flatten(net.avgpool(y), 1)


def stage_channels(backbone: Backbone) -> list[int]:
    """The channel count of each map :func:`feature_pyramid` returns, known without a forward pass."""
    if hasattr(backbone, "stage_channels"):
        return list(cast(Sequence[int], backbone.stage_channels))
    channels = []
    for name in ("layer1", "layer2", "layer3", "layer4"):
        last = getattr(backbone.net, name)[-1]
        channels.append(last.conv3.out_channels if hasattr(last, "conv3") else last.conv2.out_channels)
    return channels


def _probe(backbone: Backbone, in_channels: int, size: int) -> tuple[list[int], list[int]]:
    """Channels and widths of every stage map, from one eval-mode forward pass of a blank image."""
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        maps, _ = cast(_StageMaps, backbone.stage_maps)(torch.zeros(1, in_channels, size, size))
    backbone.train(was_training)
    return [m.shape[1] for m in maps], [m.shape[-1] for m in maps]


def default_local_stage(backbone: Backbone) -> int:
    """DIM's local layer: the encoder's own choice (``default_local_stage``), else ``layer3`` of a ResNet
    (8x8 for 32 px images with the CIFAR stem, 14x14 at 224 px with the ImageNet stem)."""
    return int(getattr(backbone, "default_local_stage", 2))


def _ignore_resnet_options(builder: Any, **fixed: Any) -> Any:
    """A backbone builder with the registry's signature; ``stem`` and ``zero_init_residual`` are unused."""

    def build(
        stem: str = "imagenet", in_channels: int = 3, zero_init_residual: bool = False, norm: str = "batch"
    ) -> Backbone:
        return builder(in_channels=in_channels, norm=norm, **fixed)

    return build


BACKBONES.register("dim32")(_ignore_resnet_options(DCGANEncoder, widths=(64, 128, 256), input_size=32, local_stage=1))
BACKBONES.register("dim64")(
    _ignore_resnet_options(DCGANEncoder, widths=(64, 128, 256, 512), input_size=64, local_stage=2)
)
BACKBONES.register("alex64")(_ignore_resnet_options(AlexEncoder, input_size=64, local_stage=2))
BACKBONES.register("amdim32")(_ignore_resnet_options(AMDIMEncoder, ndf=128, n_depth=3, out_dim=1024, input_size=32))
BACKBONES.register("amdim32-small")(_ignore_resnet_options(AMDIMEncoder, ndf=32, n_depth=1, out_dim=256, input_size=32))
BACKBONES.register("amdim64")(_ignore_resnet_options(AMDIMEncoder, ndf=128, n_depth=3, out_dim=1024, input_size=64))
BACKBONES.register("amdim128")(_ignore_resnet_options(AMDIMEncoder, ndf=192, n_depth=8, out_dim=1536, input_size=128))
BACKBONES.register("patchnet")(_ignore_resnet_options(PatchEncoder, widths=(64, 128, 256)))
BACKBONES.register("patchnet-small")(_ignore_resnet_options(PatchEncoder, widths=(32, 64, 128)))
