"""BatchNorm over the global batch of all ranks: the ``sync_bn`` of the papers' multi-GPU recipes, on any device.

SimCLR normalises with the statistics of the whole global batch (global BN, §2.2: per-device BN lets the two
views of an image, which sit on one device, share statistics, a shortcut the loss exploits), BYOL with
cross-replica BN in the encoder and both heads, MoCo v3, SimSiam, VICReg and Barlow Twins convert the whole
model with ``nn.SyncBatchNorm``, and SwAV syncs BN within groups of 8 GPUs. :func:`convert_batchnorm`
applies that to a model when several processes train it:

* on CUDA, PyTorch's own ``nn.SyncBatchNorm`` (NCCL);
* elsewhere (gloo on the CPU, where ``nn.SyncBatchNorm`` does not run), :class:`CrossRankBatchNorm`, written
  here: the mean and the variance are those of the union of the ranks' batches, computed in two passes (the
  sum and count, then the sum of squared deviations) with ``torch.distributed.nn.functional.all_reduce``,
  whose backward all-reduces the gradient, so that N ranks give the gradients of one process holding the
  whole batch (``tests/distributed/test_cross_rank_bn.py``; ``benchmarks/gpu_check.sh`` checks it against
  ``nn.SyncBatchNorm`` on CUDA).

``group_size`` > 0 syncs within groups of that many consecutive ranks (SwAV's ``syncbn_process_group_size``;
apex forms groups of consecutive ranks, one 8-GPU node each), 0 over every rank.
"""

from __future__ import annotations

import torch
import torch.distributed as torch_dist
from torch import nn
from torch.distributed.nn.functional import all_reduce as differentiable_all_reduce
from torch.nn.modules.batchnorm import _BatchNorm

from selfsup import distributed as dist


class CrossRankBatchNorm(_BatchNorm):
    """``nn.BatchNorm1d/2d/3d`` whose training statistics are those of the batch of every rank of ``group``.

    In eval mode (or outside a process group) it is an ordinary BatchNorm. Statistics are computed in at least
    float32."""

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        group: object | None = None,
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self.group = group

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected an input of at least 2 dimensions (N, C, ...), got {x.dim()}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_distributed()):
            return super().forward(x)
        self._check_input_dim(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        xf = x.to(torch.promote_types(x.dtype, torch.float32))  # float32, or float64 as is
        count = torch.tensor([xf.numel() / xf.shape[1]], device=x.device, dtype=xf.dtype)
        totals = differentiable_all_reduce(torch.cat([xf.sum(dims), count]), group=self.group)
        n = totals[-1]
        mean = totals[:-1] / n
        centred = xf - mean.view(shape)
        var = differentiable_all_reduce((centred * centred).sum(dims), group=self.group) / n
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            count_all = float(n.detach())
            self._update_running_stats(mean.detach(), var.detach() * count_all / max(count_all - 1.0, 1.0))
        return out.to(x.dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, unbiased_var: torch.Tensor) -> None:
        assert self.num_batches_tracked is not None and self.running_mean is not None and self.running_var is not None
        self.num_batches_tracked.add_(1)
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.mul_(1 - factor).add_(mean.to(self.running_mean.dtype), alpha=factor)
        self.running_var.mul_(1 - factor).add_(unbiased_var.to(self.running_var.dtype), alpha=factor)


def rank_group(group_size: int) -> object | None:
    """The process group of this rank's BN group: None (every rank) for 0 or a size covering the world; else
    the group of ``group_size`` consecutive ranks holding this rank. Every rank must call it (collectively)."""
    world = dist.world_size()
    if group_size <= 0 or group_size >= world:
        return None
    if world % group_size:
        raise ValueError(f"sync_bn_group={group_size} must divide the number of processes ({world})")
    mine = None
    for start in range(0, world, group_size):
        group = torch_dist.new_group(list(range(start, start + group_size)))
        if start <= dist.rank() < start + group_size:
            mine = group
    return mine


def convert_batchnorm(module: nn.Module, device_type: str, group_size: int = 0) -> nn.Module:
    """``module`` with every BatchNorm synced across ranks (see the module docstring); returns the converted
    module (the root may be replaced). A no-op in one process."""
    if not dist.is_distributed() or dist.world_size() == 1:
        return module
    group = rank_group(group_size)
    if device_type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module, process_group=group)
    return _convert(module, group)


def _convert(module: nn.Module, group: object | None) -> nn.Module:
    converted = module
    if isinstance(module, _BatchNorm) and not isinstance(module, (CrossRankBatchNorm, nn.SyncBatchNorm)):
        converted = CrossRankBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats, group
        )
        if module.affine:
            with torch.no_grad():
                converted.weight = module.weight
                converted.bias = module.bias
        converted.running_mean = module.running_mean
        converted.running_var = module.running_var
        converted.num_batches_tracked = module.num_batches_tracked
        converted.train(module.training)
    for name, child in module.named_children():
        converted.add_module(name, _convert(child, group))
    return converted


def is_synced(module: nn.Module) -> bool:
    """Whether ``module`` holds a BatchNorm synced across ranks."""
    return any(isinstance(m, (CrossRankBatchNorm, nn.SyncBatchNorm)) for m in module.modules())
