"""Methods with a momentum (EMA) target network: BYOL, MoCo, and TiCo's optional EMA branch.

Following solo-learn's split, :class:`MomentumMethod` adds to :class:`Method`:

* ``make_momentum_copy(module)``: a frozen copy (``requires_grad=False``) that starts equal to the
  online module;
* the EMA update ξ ← τ·ξ + (1 − τ)·θ of every (online, target) pair (BYOL §3.2), with τ following
  BYOL's cosine increase from ``momentum_base`` to ``momentum_final`` over training;
* the update timing: BYOL updates after the optimizer step (``"after_step"``, the default);
  MoCo updates before computing the keys (``"before_forward"``), which the method calls itself
  through :meth:`momentum_update`.

Target networks run in train mode, so their BatchNorm uses batch statistics, as in BYOL.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import torch
from torch import nn

from selfsup.methods.base import Method, Progress, cosine_increase
from selfsup.models.backbones import Backbone


class MomentumMethod(Method):
    """A :class:`Method` with EMA targets. Subclasses register pairs with :meth:`make_momentum_copy`."""

    momentum_timing: ClassVar[str] = "after_step"

    def __init__(self, backbone: Backbone, args: Any, gather_distributed: bool = False) -> None:
        super().__init__(backbone, args, gather_distributed)
        self._momentum_pairs: list[tuple[str, str]] = []

    def make_momentum_copy(self, online_name: str) -> nn.Module:
        """Create ``self.momentum_<online_name>``, a frozen copy of ``self.<online_name>``."""
        online = getattr(self, online_name)
        target = copy.deepcopy(online)
        for parameter in target.parameters():
            parameter.requires_grad_(False)
        target_name = f"momentum_{online_name}"
        setattr(self, target_name, target)
        self._momentum_pairs.append((online_name, target_name))
        return target

    def momentum_at(self, progress: Progress) -> float:
        """τ at this point of training (cosine from ``args.momentum_base`` to ``momentum_final``)."""
        base = float(self.args.momentum_base)
        final = float(getattr(self.args, "momentum_final", 1.0))
        if not getattr(self.args, "momentum_cosine", True):
            return base
        return cosine_increase(base, progress.fraction, final)

    @torch.no_grad()
    def momentum_update(self, tau: float) -> None:
        """ξ ← τ·ξ + (1 − τ)·θ for every registered pair (parameters only)."""
        for online_name, target_name in self._momentum_pairs:
            online = getattr(self, online_name)
            target = getattr(self, target_name)
            online_params = [p.detach() for p in online.parameters()]
            target_params = list(target.parameters())
            torch._foreach_mul_(target_params, tau)
            torch._foreach_add_(target_params, online_params, alpha=1 - tau)

    def after_optimizer_step(self, progress: Progress) -> None:
        if self.momentum_timing == "after_step":
            self.momentum_update(self.momentum_at(progress))
