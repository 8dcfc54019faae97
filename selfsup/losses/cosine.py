"""SimSiam's negative cosine similarity with stop-gradient (Chen & He, CVPR 2021, Eqs. 1-4).

    D(p, z) = −⟨p/‖p‖, z/‖z‖⟩                                                     (Eq. 1)
    D(p, stopgrad(z))                                                             (Eq. 3)
    L = ½·D(p1, stopgrad(z2)) + ½·D(p2, stopgrad(z1))                             (Eq. 4)

averaged over the batch (the official ``criterion(p1, z2).mean()``). The minimum is −1, reached
when every prediction points along its target. The stop-gradient is what prevents collapse
(SimSiam §4.1): ``z`` is detached here. A per-sample loss: no gather under DDP.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from selfsup.losses.float32 import float32_loss

__all__ = ["negative_cosine", "simsiam"]


@float32_loss
def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """D(p, stopgrad(z)) = −cos(p, z), averaged over the batch (Eqs. 1 and 3). ``z`` is detached."""
    if p.shape != z.shape or p.ndim != 2:
        raise ValueError(f"p and z must both be (N, D); got {tuple(p.shape)} and {tuple(z.shape)}")
    return -F.cosine_similarity(p, z.detach(), dim=1).mean()


@float32_loss
def simsiam(p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """The symmetrised SimSiam loss ½·D(p1, z2) + ½·D(p2, z1) (Eq. 4), in [−1, 1].

    Args:
        p1, p2: predictor outputs of views 1 and 2, shape (N, D).
        z1, z2: projector outputs of views 1 and 2, shape (N, D); detached here.
    """
    return 0.5 * negative_cosine(p1, z2) + 0.5 * negative_cosine(p2, z1)
