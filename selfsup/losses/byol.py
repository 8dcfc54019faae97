"""BYOL's regression loss (Grill et al., NeurIPS 2020, §3.1 Eq. 2 and the symmetrised Eq. 3).

With q the online prediction of one view and z' the target projection of the other view,

    ℓ(q, z') = ‖ q/‖q‖ − z'/‖z'‖ ‖²₂ = 2 − 2·⟨q, z'⟩ / (‖q‖·‖z'‖)                      (Eq. 2)

summed over the feature dimension (the identity on the right). The loss is symmetrised,
L = ℓ(q1, z'2) + ℓ(q2, z'1) (Eq. 3), and averaged over the batch, as ``byol_experiment.py`` does
(``loss = regression(q1, z'2) + regression(q2, z'1)`` then ``jnp.mean``): its range is [0, 8].

The target is a stop-gradient: ``z'`` is detached here, so passing a tensor that carries a graph
cannot leak gradient into the target network. BYOL is a per-sample loss: under DDP each rank's mean
is averaged by DDP, no gather is needed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from selfsup.losses.float32 import float32_loss

__all__ = ["byol_regression", "byol"]


@float32_loss
def byol_regression(q: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """ℓ(q, z') = 2 − 2·cos(q, z') per sample (Eq. 2), shape (N,). ``z`` is detached (stop-gradient)."""
    if q.shape != z.shape or q.ndim != 2:
        raise ValueError(f"q and z must both be (N, D); got {tuple(q.shape)} and {tuple(z.shape)}")
    q = F.normalize(q, dim=1)
    z = F.normalize(z.detach(), dim=1)
    return 2 - 2 * (q * z).sum(dim=1)


@float32_loss
def byol(q1: torch.Tensor, q2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """The symmetrised BYOL loss mean_n [ℓ(q1_n, z'2_n) + ℓ(q2_n, z'1_n)] (Eq. 3), in [0, 8].

    Args:
        q1, q2: online predictions of views 1 and 2, shape (N, D).
        z1, z2: target projections of views 1 and 2, shape (N, D); detached here.
    """
    return (byol_regression(q1, z2) + byol_regression(q2, z1)).mean()
