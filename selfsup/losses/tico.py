"""TiCo: Transformation Invariance and Covariance Contrast (Zhu et al. 2022, arXiv 2206.10698).

With z' and z'' the L2-normalised embeddings of the two views of a batch of N images:

    C_t = β·C_{t−1} + (1 − β)·(1/N)·Σ_n z'_n z'_nᵀ          (running second moment, detached)
    L   = −(1/N)·Σ_n z'_nᵀ z''_n + (ρ/N)·Σ_n z'_nᵀ C_t z'_n

C comes from **branch 1** (z') only and is carried across steps; it is detached, so gradients
flow only through the explicit z' factors (lightly's ``tico_loss.py`` follows the paper's
pseudo-code this way). With β = 0 the covariance term equals (ρ/N²)·Σ_{n,m} (z'_nᵀz'_m)²: a
contrastive term of branch 1 against every sample of its own branch. With β > 0, C_t acts as a
memory bank of unbounded size.

Under DDP (``gather_distributed=True``) C is updated with the gathered global batch, so that the
"memory" is the same on every rank.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from selfsup import distributed as dist
from selfsup.losses.float32 import float32_loss

__all__ = ["tico"]


@float32_loss
def tico(
    z1: torch.Tensor,
    z2: torch.Tensor,
    C: torch.Tensor,
    beta: float = 0.9,
    rho: float = 8.0,
    gather_distributed: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(loss, C_new)``.

    Args:
        z1, z2: embeddings of the two views, shape (N, D); normalised here.
        C: the running second-moment matrix (D, D) from the previous step (zeros at the start).
        beta: β, the moving-average coefficient (0.9).
        rho: ρ, the weight of the covariance-contrast term (8).
        gather_distributed: update C with the global batch.
    """
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"z1 and z2 must both be (N, D); got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if C.shape != (z1.shape[1], z1.shape[1]):
        raise ValueError(f"C must be ({z1.shape[1]}, {z1.shape[1]}), got {tuple(C.shape)}")
    a = F.normalize(z1, dim=1)
    b = F.normalize(z2, dim=1)
    with torch.no_grad():
        a_all = dist.gather(a, with_grad=False) if gather_distributed else a
        C_new = beta * C + (1 - beta) * (a_all.T @ a_all) / a_all.shape[0]
    invariance = -(a * b).sum(dim=1).mean()
    contrast = ((a @ C_new) * a).sum(dim=1).mean()
    return invariance + rho * contrast, C_new.detach()
