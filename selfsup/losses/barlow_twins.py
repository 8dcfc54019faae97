"""Barlow Twins' redundancy-reduction loss (Zbontar, Jing, Misra, LeCun, Deny, ICML 2021, Eqs. 1-2).

With z¹, z² the projector outputs of the two views (N × D), each standardised along the batch,

    ẑ = (z − mean_b z) / √(Var_b z + ε)        (an affine-free BatchNorm in training mode: biased
                                                 variance, ε = 1e-5, as ``nn.BatchNorm1d(affine=False)``)
    C_ij = Σ_b ẑ¹_bi ẑ²_bj / N                  (Eq. 2, the cross-correlation matrix)
    L = Σ_i (1 − C_ii)² + λ Σ_i Σ_{j≠i} C_ij²   (Eq. 1, λ = 0.0051 in the official code)

C is computed in float32 with autocast disabled (:func:`selfsup.losses.float32.float32_loss`): an fp16
matmul over N = 2048 rows of standardised values can overflow, and bf16 keeps about 3 digits.

**Distributed: why we gather.** The official code (facebookresearch/barlowtwins ``main.py``) uses a
SyncBatchNorm for the global statistics, divides its local C by the global batch and ``all_reduce``s
C. That all-reduce is invisible to autograd: each rank back-propagates dL/dC through its own samples
only, and DDP's averaging then divides the gradient by the number of ranks. It also needs SyncBN,
which PyTorch does not run on the CPU. Here, with ``gather_distributed``, both embeddings are gathered
with gradients (:func:`selfsup.distributed.gather`) and the statistics and C are computed from the
global batch on every rank: the loss is the one-process loss, identical on every rank, and the
gather's backward (an all-reduce of the gradients) combined with DDP's averaging gives exactly the
one-process gradient (``tests/distributed/test_equivalence.py``). The price is that every rank computes
the D × D product of the global batch instead of its share of it; at D = 8192 and N = 2048 that is about
0.3 TFLOP per step per rank, small next to the ResNet-50.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from selfsup import distributed as dist
from selfsup.losses.float32 import float32_loss

__all__ = ["BarlowTwinsTerms", "batch_standardize", "cross_correlation", "barlow_twins_terms", "barlow_twins"]


class BarlowTwinsTerms(NamedTuple):
    """The two unweighted sums of Eq. 1, for logging and for :func:`barlow_twins`."""

    on_diagonal: torch.Tensor
    off_diagonal: torch.Tensor

    def total(self, lambd: float = 0.0051) -> torch.Tensor:
        return self.on_diagonal + lambd * self.off_diagonal


def batch_standardize(z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """(z − mean) / √(biased var + ε) along the batch: ``BatchNorm1d(affine=False)`` in training mode."""
    mean = z.mean(dim=0)
    var = z.var(dim=0, unbiased=False)
    return (z - mean) / torch.sqrt(var + eps)


@float32_loss
def cross_correlation(
    z1: torch.Tensor, z2: torch.Tensor, eps: float = 1e-5, gather_distributed: bool = False
) -> torch.Tensor:
    """C = BN(z¹)ᵀ BN(z²) / N over the (global, with ``gather_distributed``) batch, in float32 (Eq. 2)."""
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"z1 and z2 must both be (N, D); got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if gather_distributed and dist.world_size() > 1:
        z1, z2 = dist.gather(z1), dist.gather(z2)
    n = z1.shape[0]
    if n < 2:
        raise ValueError("Barlow Twins standardises along the batch: it needs at least 2 samples")
    return batch_standardize(z1, eps).T @ batch_standardize(z2, eps) / n


@float32_loss
def barlow_twins_terms(
    z1: torch.Tensor, z2: torch.Tensor, eps: float = 1e-5, gather_distributed: bool = False
) -> BarlowTwinsTerms:
    """Σ(1 − C_ii)² and Σ_{i≠j} C_ij² (unweighted) of Eq. 1."""
    c = cross_correlation(z1, z2, eps, gather_distributed)
    diagonal = torch.diagonal(c)
    on_diagonal = (1 - diagonal).pow(2).sum()
    off_diagonal = (c - torch.diag_embed(diagonal)).pow(2).sum()
    return BarlowTwinsTerms(on_diagonal, off_diagonal)


@float32_loss
def barlow_twins(
    z1: torch.Tensor, z2: torch.Tensor, lambd: float = 0.0051, eps: float = 1e-5, gather_distributed: bool = False
) -> torch.Tensor:
    """L = Σ_i (1 − C_ii)² + λ Σ_{i≠j} C_ij² (Eq. 1). λ = 0.0051 assumes D = 8192 (the paper tunes it with D).

    Args:
        z1, z2: projector outputs of the two views, (N, D); standardised here.
        lambd: λ, the weight of the redundancy-reduction term.
        eps: the BatchNorm ε of the standardisation.
        gather_distributed: statistics and C over the global batch (see the module docstring).
    """
    return barlow_twins_terms(z1, z2, eps, gather_distributed).total(lambd)
