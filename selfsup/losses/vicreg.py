"""VICReg: Variance-Invariance-Covariance Regularization (Bardes, Ponce, LeCun, ICLR 2022).

    ℓ(Z, Z') = λ·s(Z, Z') + μ·[v(Z) + v(Z')]/2 + ν·[c(Z) + c(Z')]                 (Eq. 6)

with the official code's conventions (facebookresearch/vicreg ``main_vicreg.py``):

* invariance s: ``F.mse_loss``, the mean squared error over batch **and** dimensions
  (the paper's Eq. 5 sums over dimensions; λ = 25 belongs to the mean form);
* variance v(Z) = (1/d) Σ_j max(0, γ − √(Var(z_j) + ε))  (Eq. 1), averaged over the two branches
  (the code's ½·v(Z) + ½·v(Z'); the paper writes the sum, see vicreg issues #8 and #26);
* covariance c(Z) = (1/d) Σ_{i≠j} C(Z)_ij², with C(Z) = (Z − Z̄)ᵀ(Z − Z̄)/(n − 1)  (Eq. 3–4),
  summed over both branches.

With ``gather_distributed`` the variance and covariance use the global batch, gathered with
gradients; the invariance term stays local, as in the official code.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from selfsup import distributed as dist
from selfsup.losses.float32 import float32_loss

__all__ = ["VICRegTerms", "variance_term", "covariance_term", "vicreg_terms", "vicreg", "VARIANCE_MODES"]

VARIANCE_MODES = ("std", "var")


class VICRegTerms(NamedTuple):
    """The three unweighted terms of VICReg, for logging and for :func:`vicreg`."""

    invariance: torch.Tensor
    variance: torch.Tensor
    covariance: torch.Tensor

    def total(self, sim_coeff: float = 25.0, std_coeff: float = 25.0, cov_coeff: float = 1.0) -> torch.Tensor:
        return sim_coeff * self.invariance + std_coeff * self.variance + cov_coeff * self.covariance


@float32_loss
def variance_term(z: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4, mode: str = "std") -> torch.Tensor:
    """v(Z) = mean_j relu(γ − √(Var z_j + ε)) (Eq. 1). ``mode="var"`` uses the variance itself
    instead of the standard deviation (the ablation of the paper's Table 7)."""
    var = z.var(dim=0)
    if mode == "std":
        spread = torch.sqrt(var + eps)
    elif mode == "var":
        spread = var
    else:
        raise ValueError(f"unknown variance mode {mode!r}. Valid: {', '.join(VARIANCE_MODES)}")
    return F.relu(gamma - spread).mean()


@float32_loss
def covariance_term(z: torch.Tensor) -> torch.Tensor:
    """c(Z) = (1/d) Σ_{i≠j} C_ij², with the unbiased covariance C (Eq. 3–4)."""
    n, d = z.shape
    centred = z - z.mean(dim=0)
    cov = centred.T @ centred / (n - 1)
    off_diagonal = cov - torch.diag_embed(torch.diagonal(cov))
    return off_diagonal.pow(2).sum() / d


@float32_loss
def vicreg_terms(
    z1: torch.Tensor,
    z2: torch.Tensor,
    gamma: float = 1.0,
    eps: float = 1e-4,
    gather_distributed: bool = False,
    variance_mode: str = "std",
) -> VICRegTerms:
    """The invariance, variance and covariance terms (unweighted); see the module docstring."""
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"z1 and z2 must both be (N, D); got {tuple(z1.shape)} and {tuple(z2.shape)}")
    invariance = F.mse_loss(z1, z2)
    if gather_distributed and dist.world_size() > 1:
        z1, z2 = dist.gather(z1), dist.gather(z2)
    if z1.shape[0] < 2:
        raise ValueError("VICReg's variance and covariance need at least 2 samples per batch")
    variance = 0.5 * (variance_term(z1, gamma, eps, variance_mode) + variance_term(z2, gamma, eps, variance_mode))
    covariance = covariance_term(z1) + covariance_term(z2)
    return VICRegTerms(invariance, variance, covariance)


def vicreg(
    z1: torch.Tensor,
    z2: torch.Tensor,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    gamma: float = 1.0,
    eps: float = 1e-4,
    gather_distributed: bool = False,
    variance_mode: str = "std",
) -> torch.Tensor:
    """The weighted VICReg loss λ·s + μ·v + ν·c (Eq. 6). Use :func:`vicreg_terms` to log the terms."""
    terms = vicreg_terms(z1, z2, gamma, eps, gather_distributed, variance_mode)
    return terms.total(sim_coeff, std_coeff, cov_coeff)
