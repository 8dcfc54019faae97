"""NT-Xent, SimCLR's normalized temperature-scaled cross-entropy (Chen et al. 2020, Eq. 1),
and the two alternatives of SimCLR Table 2 (NT-Logistic and margin triplet).

For a batch of N images with two views, let u_i = z_i/‖z_i‖ over the 2N views and
s_ij = u_iᵀu_j. For a positive pair (i, j):

    ℓ(i, j) = −log [ exp(s_ij/τ) / Σ_{k≠i} exp(s_ik/τ) ]                          (Eq. 1)

The loss is the mean of ℓ over all 2N anchors; the 2(N−1) other views are the negatives.
The official code sums the two views' means instead of averaging them, which only rescales the
learning rate.

With ``gather_distributed=True`` each rank uses its local anchors against the views of the
*global* batch, gathered with gradients (see :mod:`selfsup.distributed`); the positive and
self-similarity indices are offset by the rank. This is the bug-prone part that
``tests/test_distributed.py`` compares against a single process.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from selfsup import distributed as dist
from selfsup.losses.float32 import float32_loss

__all__ = ["nt_xent", "nt_logistic", "margin_triplet"]


def _pair_similarities(
    z1: torch.Tensor, z2: torch.Tensor, gather_distributed: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cosine similarities of the 2n local views against the 2N global views.

    Returns ``(sim, positive_index, self_index)``; ``sim`` has shape (2n, 2N).
    """
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"z1 and z2 must both be (N, D); got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if z1.shape[0] < 2:
        raise ValueError("NT-Xent needs at least 2 images per batch (the other images are the negatives)")
    a = F.normalize(z1, dim=1)
    b = F.normalize(z2, dim=1)
    n = a.shape[0]
    if gather_distributed and dist.world_size() > 1:
        a_all, b_all, offset = dist.gather(a), dist.gather(b), dist.rank() * n
    else:
        a_all, b_all, offset = a, b, 0
    total = a_all.shape[0]
    sim = torch.cat([a, b]) @ torch.cat([a_all, b_all]).T
    local = torch.arange(n, device=a.device) + offset
    self_index = torch.cat([local, local + total])
    positive_index = torch.cat([local + total, local])
    return sim, positive_index, self_index


@float32_loss
def nt_xent(
    z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1, gather_distributed: bool = False
) -> torch.Tensor:
    """SimCLR's NT-Xent loss (Eq. 1), averaged over all 2N anchors.

    Args:
        z1, z2: projections of the two views, shape (N, D); row i of both is the same image.
            They are L2-normalised here.
        temperature: τ. 0.1 for the ImageNet recipe, 0.5 for CIFAR (SimCLR Appendix B.9).
        gather_distributed: use the negatives of every rank (with gradients).
    """
    sim, positive, self_index = _pair_similarities(z1, z2, gather_distributed)
    logits = sim / temperature
    rows = torch.arange(len(logits), device=logits.device)
    self_mask = torch.zeros_like(logits, dtype=torch.bool)
    self_mask[rows, self_index] = True
    logits = logits.masked_fill(self_mask, float("-inf"))
    return F.cross_entropy(logits, positive)


def _positive_and_negatives(
    z1: torch.Tensor, z2: torch.Tensor, gather_distributed: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    sim, positive, self_index = _pair_similarities(z1, z2, gather_distributed)
    rows = torch.arange(len(sim), device=sim.device)
    pos = sim[rows, positive]
    negative_mask = torch.ones_like(sim, dtype=torch.bool)
    negative_mask[rows, positive] = False
    negative_mask[rows, self_index] = False
    return sim, pos, negative_mask


@float32_loss
def nt_logistic(
    z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.2, gather_distributed: bool = False
) -> torch.Tensor:
    """NT-Logistic (SimCLR Table 2): −log σ(s⁺/τ) − log σ(−s⁻/τ).

    The negative term is averaged over each anchor's 2(N−1) negatives so that positives and
    negatives carry equal weight; the result is averaged over the 2N anchors.
    """
    sim, pos, negative_mask = _positive_and_negatives(z1, z2, gather_distributed)
    positive_term = -F.logsigmoid(pos / temperature)
    negative_terms = -F.logsigmoid(-sim / temperature) * negative_mask
    negative_term = negative_terms.sum(1) / negative_mask.sum(1)
    return (positive_term + negative_term).mean()


@float32_loss
def margin_triplet(
    z1: torch.Tensor, z2: torch.Tensor, margin: float = 0.5, gather_distributed: bool = False
) -> torch.Tensor:
    """Margin triplet (SimCLR Table 2): max(s⁻ − s⁺ + m, 0), averaged over every
    (anchor, negative) pair, on cosine similarities."""
    sim, pos, negative_mask = _positive_and_negatives(z1, z2, gather_distributed)
    hinge = F.relu(sim - pos[:, None] + margin) * negative_mask
    return (hinge.sum(1) / negative_mask.sum(1)).mean()
