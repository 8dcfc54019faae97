"""ResNet backbones from torchvision, with the ImageNet or the CIFAR stem.

``build_backbone("resnet18", stem="cifar", in_channels=1)`` returns a torchvision ResNet whose
classifier is removed, so that ``backbone(x)`` is the pooled representation h (512-d for
ResNet-18/34, 2048-d for ResNet-50).

Stems:

* ``imagenet``: torchvision's 7x7 stride-2 conv followed by a 3x3 stride-2 max-pool (He et al. 2016);
* ``cifar``: a 3x3 stride-1 conv and no max-pool, as in every CIFAR recipe of SimCLR (Appendix B.9),
  MoCo's CIFAR demo and solo-learn. Keeps the full resolution of 32-px images.

``resnet10`` (one BasicBlock per stage, torchvision's ``ResNet`` class) is a cheap backbone for
CPU runs and tests.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from selfsup.registry import Registry

STEMS = ("imagenet", "cifar")


class Backbone(nn.Module):
    """A network that maps images (B, C, H, W) to representations h (B, ``out_dim``).

    ``feature_map(x)`` returns the last spatial map (B, out_dim, h, w) before pooling, for the
    methods that need local features (Deep InfoMax, AMDIM, CPC).
    """

    def __init__(self, net: ResNet, out_dim: int) -> None:
        super().__init__()
        self.net = net
        self.out_dim = out_dim

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        net = self.net
        return net.maxpool(net.relu(net.bn1(net.conv1(x))))

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        net = self.net
        x = self.stem(x)
        return net.layer4(net.layer3(net.layer2(net.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.net.avgpool(self.feature_map(x)), 1)


BackboneFactory = Callable[..., ResNet]
BACKBONES: Registry[BackboneFactory] = Registry("backbone")

BACKBONES.register("resnet18")(torchvision.models.resnet18)
BACKBONES.register("resnet34")(torchvision.models.resnet34)
BACKBONES.register("resnet50")(torchvision.models.resnet50)


@BACKBONES.register("resnet10")
def resnet10(**kwargs: object) -> ResNet:
    """ResNet-10: torchvision's ResNet with one BasicBlock per stage (a CPU-sized ResNet-18)."""
    return ResNet(BasicBlock, [1, 1, 1, 1], **kwargs)


def build_backbone(name: str, stem: str = "imagenet", in_channels: int = 3,
                   zero_init_residual: bool = False) -> Backbone:
    """A torchvision ResNet by ``name`` with the given stem and input channels, fc removed.

    ``zero_init_residual`` zero-initialises the last BN of every residual branch (Goyal et al.
    2017), as MoCo v3, SimSiam, VICReg and Barlow Twins do.
    """
    if stem not in STEMS:
        raise ValueError(f"unknown stem {stem!r}. Valid stems: {', '.join(STEMS)}")
    net = BACKBONES.get(name)(weights=None, zero_init_residual=zero_init_residual) if name != "resnet10" \
        else resnet10(zero_init_residual=zero_init_residual)
    width = net.conv1.out_channels
    if stem == "cifar":
        net.conv1 = nn.Conv2d(in_channels, width, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    elif in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False)
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    last = net.layer4[-1]
    out_dim = last.bn3.num_features if isinstance(last, Bottleneck) else last.bn2.num_features
    net.fc = nn.Identity()
    return Backbone(net, out_dim)
