"""Learning-rate schedules, computed per optimizer step.

``warmup_cosine`` (SimCLR §B.1, BYOL, VICReg): linear warmup from ``warmup_start_ratio``·peak to the
peak over ``warmup_epochs``, then a half-cycle cosine down to ``final_lr_ratio``·peak at the last
step (VICReg uses 0.001). ``step``: ×``lr_gamma`` at each epoch in ``lr_milestones`` (MoCo v1,
AMDIM, W-MSE). ``constant``: the peak throughout. With ``schedule_per_step=False`` the value is
held for a whole epoch (MoCo v1/v2 and SimSiam update their LR once per epoch).
"""

from __future__ import annotations

import math

SCHEDULES = ("warmup_cosine", "step", "constant")


def lr_factor(
    step: int,
    steps_per_epoch: int,
    epochs: int,
    *,
    schedule: str = "warmup_cosine",
    warmup_epochs: float = 0.0,
    warmup_start_ratio: float = 0.0,
    final_lr_ratio: float = 0.0,
    milestones: tuple[float, ...] = (),
    gamma: float = 0.1,
    per_step: bool = True,
) -> float:
    """The multiplier of the peak LR at optimizer step ``step`` (0-based)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}. Valid: {', '.join(SCHEDULES)}")
    if not per_step:
        step = (step // steps_per_epoch) * steps_per_epoch
    total = max(1, epochs * steps_per_epoch)
    warmup = int(round(warmup_epochs * steps_per_epoch))
    if schedule == "constant":
        return 1.0
    if schedule == "step":
        epoch = step / steps_per_epoch
        factor = gamma ** sum(epoch >= m for m in milestones)
        if warmup and step < warmup:
            factor *= warmup_start_ratio + (1 - warmup_start_ratio) * (step + 1) / warmup
        return factor
    if warmup and step < warmup:
        return warmup_start_ratio + (1 - warmup_start_ratio) * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return final_lr_ratio + (1 - final_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
