"""LARS: layer-wise adaptive rate scaling (You, Gitman, Ginsburg 2017, arXiv 1708.03888, Alg. 1).

For every parameter tensor w with gradient g (SimCLR, BYOL, VICReg and Barlow Twins variant):

    d     = g + λ·w                                   (weight decay)
    q     = η·‖w‖ / ‖d‖   if ‖w‖ > 0 and ‖d‖ > 0, else 1   (trust ratio, η = 1e-3)
    q     = min(q / lr, 1)  if clip                   (apex LARC "clip" mode: effective LR min(q, lr))
    m     = μ·m + q·d                                  (momentum μ = 0.9)
    w     = w − lr·m

Parameter groups with ``lars_exclude=True`` (biases and normalisation parameters, i.e. every
tensor with ndim ≤ 1) get neither weight decay nor the trust ratio: a plain momentum-SGD step.
torch has no LARS, so it is written here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch


class LARS(torch.optim.Optimizer):
    """LARS with per-group exclusion (``lars_exclude``) from weight decay and adaptation."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eta: float = 1e-3,
        clip: bool = False,
    ) -> None:
        if lr < 0 or momentum < 0 or weight_decay < 0 or eta <= 0:
            raise ValueError("LARS needs lr >= 0, momentum >= 0, weight_decay >= 0 and eta > 0")
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "eta": eta,
            "clip": clip,
            "lars_exclude": False,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr = group["lr"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                if not group["lars_exclude"]:
                    if group["weight_decay"]:
                        d = d.add(p, alpha=group["weight_decay"])
                    w_norm = torch.linalg.vector_norm(p)
                    d_norm = torch.linalg.vector_norm(d)
                    q = torch.where(
                        (w_norm > 0) & (d_norm > 0), group["eta"] * w_norm / d_norm, torch.ones_like(w_norm)
                    )
                    if group["clip"] and lr > 0:
                        q = torch.clamp(q / lr, max=1.0)
                    d = d.mul(q)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.clone(d).detach()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(d)
                p.add_(state["momentum_buffer"], alpha=-lr)
        return loss
