"""TiCo: Transformation Invariance and Covariance Contrast (Zhu et al. 2022, arXiv 2206.10698).

With z' and z'' the L2-normalised embeddings of the two views of a batch of N images, and y the branch
whose embeddings update the running second moment (``covariance_branch``: y = z' for ``"same"``, the
default, y = z'' for ``"other"``):

    C_t = β·C_{t−1} + (1 − β)·(1/N)·Σ_n y_n y_nᵀ          (running second moment, detached)
    L   = −(1/N)·Σ_n z'_nᵀ z''_n + (ρ/N)·Σ_n z'_nᵀ C_t z'_n

C is carried across steps and detached, so gradients flow only through the explicit z' factors (lightly's
``tico_loss.py`` computes C under ``detach``). With β = 0 the covariance term is a sum of squared similarities:

* ``"same"``:  (ρ/N²)·Σ_{n,m} (z'_n·z'_m)², the same-view pairwise form: branch 1 against every sample of
  its own branch (the n = m terms are the constant ρ/N). Both reference codes, sayannag/TiCo-pytorch
  ``main.py`` and lightly ``tico_loss.py``, build C from the online branch z' this way;
* ``"other"``: (ρ/N²)·Σ_{n,m} (z'_n·z''_m)², the cross-view pairwise form: branch 1 against every sample of
  the other view, as the negatives of MoCo/SimCLR (with squared similarities, and m = n included).

With β > 0, C_t is an exponential average over past batches: the "implicit memory bank of unlimited size"
of the paper's abstract. The paper's own equations could not be read with the search tools used here, so
which branch the paper's C is built from is not verified (docs/methods/tico.md).

Under DDP (``gather_distributed=True``) C is updated with the gathered global batch of y, so that the
"memory" is the same on every rank.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from selfsup import distributed as dist
from selfsup.losses.float32 import float32_loss

__all__ = ["COVARIANCE_BRANCHES", "tico"]

COVARIANCE_BRANCHES = ("same", "other")
"""Which view's embeddings update C: ``same`` (z', the reference codes) or ``other`` (z'')."""


@float32_loss
def tico(
    z1: torch.Tensor,
    z2: torch.Tensor,
    C: torch.Tensor,
    beta: float = 0.9,
    rho: float = 8.0,
    gather_distributed: bool = False,
    covariance_branch: str = "same",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(loss, C_new)``.

    Args:
        z1, z2: embeddings of the two views, shape (N, D); normalised here. The covariance term is
            computed on z1.
        C: the running second-moment matrix (D, D) from the previous step (zeros at the start).
        beta: β, the moving-average coefficient (0.9).
        rho: ρ, the weight of the covariance-contrast term (8).
        gather_distributed: update C with the global batch.
        covariance_branch: ``"same"`` updates C with z1 (same view), ``"other"`` with z2 (cross view).
    """
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"z1 and z2 must both be (N, D); got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if C.shape != (z1.shape[1], z1.shape[1]):
        raise ValueError(f"C must be ({z1.shape[1]}, {z1.shape[1]}), got {tuple(C.shape)}")
    if covariance_branch not in COVARIANCE_BRANCHES:
        raise ValueError(f"unknown covariance_branch {covariance_branch!r}. Valid: {', '.join(COVARIANCE_BRANCHES)}")
    a = F.normalize(z1, dim=1)
    b = F.normalize(z2, dim=1)
    with torch.no_grad():
        y = a if covariance_branch == "same" else b
        y_all = dist.gather(y, with_grad=False) if gather_distributed else y
        C_new = beta * C + (1 - beta) * (y_all.T @ y_all) / y_all.shape[0]
    invariance = -(a * b).sum(dim=1).mean()
    contrast = ((a @ C_new) * a).sum(dim=1).mean()
    return invariance + rho * contrast, C_new.detach()
