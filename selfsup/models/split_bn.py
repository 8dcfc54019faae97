"""Split-batch BatchNorm: the statistics of K groups of a batch, as if K devices each held one group.

MoCo v1/v2 train with per-device BN on 8 GPUs and shuffle the key batch across them (Shuffle-BN, He et al.
2020 §3.3): a query and its key then never share BN statistics, which would otherwise let the model find
the positive key through the statistics alone. In one process there is no device to shuffle across; the
official CIFAR-10 demo (facebookresearch/moco, branch ``colab-notebook``, ``moco_cifar10_demo.ipynb``,
``SplitBatchNorm``) emulates 8 devices by normalising 8 groups of the batch separately, in the query and in
the key encoder, the key batch shuffled first. :func:`split_batchnorm` does the same for any model: within
the ``with`` block, every BatchNorm of ``module`` (converted once by :func:`make_splittable`) normalises
each of ``groups`` contiguous groups of its input with that group's own mean and variance, in one pass. Its
running statistics follow the mean over the groups (as the demo's do). Outside the block, or in eval mode,
the layers are ordinary BatchNorm, and the state dict is unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


class _SplitMixin(_BatchNorm):
    groups: int = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = self.groups
        if groups <= 1 or not self.training:
            return super().forward(x)
        n = x.shape[0]
        if n % groups or n // groups < 2:
            raise ValueError(
                f"split-batch BatchNorm: a batch of {n} cannot be cut into {groups} groups of 2 or more samples; "
                "make the (per-process) batch a multiple of 2 x shuffle_bn_groups"
            )
        # (N, C, ...) -> (N/K, K*C, ...): group g of sample i lands in channels g*C..(g+1)*C of row i, so one
        # batch_norm call with K*C channels normalises every group over its own samples
        c = x.shape[1]
        grouped = (
            x.reshape(groups, n // groups, c, *x.shape[2:])
            .transpose(0, 1)
            .reshape(n // groups, groups * c, *x.shape[2:])
        )
        mean = self.running_mean.repeat(groups) if self.running_mean is not None else None
        var = self.running_var.repeat(groups) if self.running_var is not None else None
        weight = self.weight.repeat(groups) if self.affine else None
        bias = self.bias.repeat(groups) if self.affine else None
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked)
        out = F.batch_norm(grouped, mean, var, weight, bias, True, momentum, self.eps)
        if mean is not None and var is not None:  # the running statistics: the mean over the groups
            assert self.running_mean is not None and self.running_var is not None
            with torch.no_grad():
                self.running_mean.copy_(mean.view(groups, c).mean(0))
                self.running_var.copy_(var.view(groups, c).mean(0))
        return out.reshape(n // groups, groups, c, *x.shape[2:]).transpose(0, 1).reshape(x.shape)


class SplitBatchNorm1d(_SplitMixin, nn.BatchNorm1d):
    """``nn.BatchNorm1d`` that can normalise groups of its batch separately (see the module docstring)."""


class SplitBatchNorm2d(_SplitMixin, nn.BatchNorm2d):
    """``nn.BatchNorm2d`` that can normalise groups of its batch separately (see the module docstring)."""


_SPLIT: dict[type[nn.Module], type[nn.Module]] = {nn.BatchNorm1d: SplitBatchNorm1d, nn.BatchNorm2d: SplitBatchNorm2d}


def make_splittable(module: nn.Module) -> int:
    """Let every ``nn.BatchNorm1d/2d`` of ``module`` be split (in place; parameters, buffers and the state dict
    stay as they are). Returns how many layers were converted."""
    count = 0
    for layer in module.modules():
        split = _SPLIT.get(type(layer))
        if split is not None:
            layer.__class__ = split
            count += 1
    return count


@contextlib.contextmanager
def split_batchnorm(module: nn.Module, groups: int) -> Iterator[None]:
    """Within the block, the splittable BatchNorms of ``module`` normalise ``groups`` groups separately."""
    layers = [m for m in module.modules() if isinstance(m, _SplitMixin)]
    for layer in layers:
        layer.groups = groups
    try:
        yield
    finally:
        for layer in layers:
            layer.groups = 1
