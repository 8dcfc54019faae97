"""Backbones: torchvision ResNets with the ImageNet or the CIFAR stem, in a registry.

``build_backbone("resnet18", stem="cifar", in_channels=1)`` returns a :class:`Backbone` whose
``forward`` gives the pooled representation h (512-d for ResNet-10/18/34, 2048-d for ResNet-50)
and whose ``feature_map`` gives the last spatial map before pooling.

Stems:

* ``imagenet``: torchvision's 7x7 stride-2 conv followed by a 3x3 stride-2 max-pool (He et al. 2016);
* ``cifar``: a 3x3 stride-1 conv and no max-pool, as in every CIFAR recipe of SimCLR (Appendix B.9),
  MoCo's CIFAR demo and solo-learn. Keeps the full resolution of 32-px images.

Normalisation (``norm``): ``batch`` (the default), or ``group`` / ``layer`` (GroupNorm with 32 or
1 group), which keep samples independent, as CPC v2 needs (Hénaff et al. 2020, §3).

``resnet10`` (one BasicBlock per stage, built with torchvision's ``ResNet`` class) is a cheap
backbone for CPU runs and tests.

Other encoders register a builder ``f(stem, in_channels, zero_init_residual, norm) -> Backbone``
with ``@BACKBONES.register("name")``. Any timm or torchvision model is a backbone too, named ``timm:NAME`` or
``tv:NAME`` (:mod:`selfsup.models.library`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, cast

import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from selfsup.registry import Registry

if TYPE_CHECKING:
    from selfsup.models.library import LibraryOptions

STEMS = ("imagenet", "cifar")
NORMS = ("batch", "group", "layer")


class Backbone(nn.Module):
    """Maps images (B, C, H, W) to representations h (B, ``out_dim``).

    The default implementation wraps a torchvision ResNet (``self.net``, with ``fc`` removed), so that
    ``self.net.state_dict()`` loads into ``torchvision.models.resnetXX()`` with the same stem.
    ``has_stage_maps``: whether the intermediate spatial maps that CPC, DIM and AMDIM read are available.
    """

    has_stage_maps = True

    def __init__(self, net: nn.Module, out_dim: int) -> None:
        super().__init__()
        self.net = net
        self.out_dim = out_dim

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        net = cast(ResNet, self.net)
        return net.maxpool(net.relu(net.bn1(net.conv1(x))))

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The last spatial feature map (B, out_dim, h, w), before global pooling."""
        net = cast(ResNet, self.net)
        x = self.stem(x)
        return net.layer4(net.layer3(net.layer2(net.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net = cast(ResNet, self.net)
        return torch.flatten(net.avgpool(self.feature_map(x)), 1)

    def no_weight_decay(self) -> set[str]:
        """Names of parameters that take no weight decay besides the norms and biases (every tensor with
        ndim <= 1, which the optimizer excludes anyway): none for a ResNet; a ViT's position embedding and class
        token (:class:`selfsup.models.library.LibraryBackbone`)."""
        return set()


BackboneBuilder = Callable[..., Backbone]
BACKBONES: Registry[BackboneBuilder] = Registry("backbone")


def norm_layer(norm: str) -> Callable[[int], nn.Module]:
    """The normalisation layer factory for ``norm`` (see the module docstring)."""
    if norm == "batch":
        return nn.BatchNorm2d
    if norm == "group":
        return lambda channels: nn.GroupNorm(min(32, channels), channels)
    if norm == "layer":
        return lambda channels: nn.GroupNorm(1, channels)
    raise ValueError(f"unknown norm {norm!r}. Valid: {', '.join(NORMS)}")


def resnet_backbone(
    factory: Callable[..., ResNet],
    stem: str = "imagenet",
    in_channels: int = 3,
    zero_init_residual: bool = False,
    norm: str = "batch",
) -> Backbone:
    """A torchvision ResNet with the given stem, input channels and normalisation, ``fc`` removed."""
    if stem not in STEMS:
        raise ValueError(f"unknown stem {stem!r}. Valid stems: {', '.join(STEMS)}")
    layer = norm_layer(norm)
    net = factory(weights=None, zero_init_residual=zero_init_residual, norm_layer=layer)
    if norm != "batch" and zero_init_residual:  # torchvision only zero-inits BatchNorm weights
        for module in net.modules():
            if isinstance(module, (BasicBlock, Bottleneck)):
                last = module.bn3 if isinstance(module, Bottleneck) else module.bn2
                nn.init.zeros_(last.weight)
    width = net.conv1.out_channels
    if stem == "cifar":
        net.conv1 = nn.Conv2d(in_channels, width, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    elif in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False)
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    last = net.layer4[-1]
    out_dim = last.conv3.out_channels if isinstance(last, Bottleneck) else last.conv2.out_channels
    net.fc = nn.Identity()
    return Backbone(net, out_dim)


def _resnet10(**kwargs: object) -> ResNet:
    kwargs.pop("weights", None)
    return ResNet(BasicBlock, [1, 1, 1, 1], **kwargs)


BACKBONES.register("resnet10")(partial(resnet_backbone, _resnet10))
BACKBONES.register("resnet18")(partial(resnet_backbone, torchvision.models.resnet18))
BACKBONES.register("resnet34")(partial(resnet_backbone, torchvision.models.resnet34))
BACKBONES.register("resnet50")(partial(resnet_backbone, torchvision.models.resnet50))


def build_backbone(
    name: str,
    stem: str = "imagenet",
    in_channels: int = 3,
    zero_init_residual: bool = False,
    norm: str = "batch",
    options: LibraryOptions | None = None,
) -> Backbone:
    """The backbone ``name``, randomly initialised: a registered one (``resnet10/18/34/50`` and the papers'
    encoders), or ``timm:NAME`` / ``tv:NAME`` built with ``options`` (image size, ViT options; ``stem``,
    ``zero_init_residual`` and ``norm`` apply to the registered ResNets only).

    ``zero_init_residual`` zero-initialises the last norm layer of every residual branch (Goyal et
    al. 2017), as MoCo v3, SimSiam, VICReg and Barlow Twins do.
    """
    if is_library_name(name):
        from selfsup.models.library import build_library_backbone

        return build_library_backbone(name, in_channels, options)
    return BACKBONES.get(name)(stem=stem, in_channels=in_channels, zero_init_residual=zero_init_residual, norm=norm)


class ImageSizeError(ValueError):
    """The backbone cannot encode images of the run's size (its stem or stages shrink them below a kernel)."""


@torch.no_grad()
def check_image_sizes(backbone: Backbone, name: str, in_channels: int, sizes: tuple[int, ...]) -> None:
    """Encode one blank image of each size in ``sizes`` (the run's views) and raise :class:`ImageSizeError`,
    naming the backbone and the size, if the backbone cannot: e.g. a ConvNeXt on 16-px images, whose stride-4
    stem and three downsamplings leave a map smaller than its 2 x 2 downsampling kernel. Run at set-up, before
    anything is written, so the user gets this sentence instead of a kernel error deep in the first step.
    Eval mode (BatchNorm uses its running statistics, nothing is updated); the training mode is restored."""
    parameter = next(backbone.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    was_training = backbone.training
    backbone.eval()
    try:
        for size in sorted(set(sizes)):
            try:
                backbone(torch.zeros(1, in_channels, size, size, device=device))
            except RuntimeError as err:
                reason = str(err).splitlines()[0]
                raise ImageSizeError(
                    f"{name} cannot encode {size}-px images ({reason}); use larger images (--set aug.image_size=N)"
                    + (" or a smaller --set backbone_patch_size" if is_library_name(name) else "")
                ) from None
    finally:
        backbone.train(was_training)


LIBRARY_PREFIXES = ("timm:", "tv:")


def backbone_label(name: str, stem: str) -> str:
    """``resnet10/imagenet`` (a registered backbone with its stem) or ``timm:vit_tiny_patch16_224`` (a library
    model, which has no selfsup stem): how logs and reports name a run's backbone."""
    return name if is_library_name(name) else f"{name}/{stem}"


def is_library_name(name: str) -> bool:
    """Whether ``name`` is ``timm:NAME`` or ``tv:NAME`` (:mod:`selfsup.models.library`)."""
    return name.lower().startswith(LIBRARY_PREFIXES)
