"""InfoNCE on a grid of patch codes: Contrastive Predictive Coding (van den Oord et al. 2018, §2.3 and
§3.3; Hénaff et al. 2020, "CPC v2", §2).

An image is cut into a grid of patches with codes z_{i,j}; a causal context network summarises the
rows <= i into c_{i,j}; for an offset k a linear map W_k predicts the code k rows below,
ẑ_{i+k,j} = W_k c_{i,j}. With the score f_k(z, c) = exp(zᵀ W_k c), the loss of one prediction is

    L_N = −log [ f_k(z_{i+k,j}, c_{i,j}) / Σ_{z_l ∈ X} f_k(z_l, c_{i,j}) ]           (CPC Eq. 4)

where X holds the positive and N − 1 negatives: here every other code of the batch, at other positions
of the same image and at all positions of the other images (CPC v2 §2). It bounds the mutual
information I(z_{i+k}; c_i) >= log N − L_N (CPC Eq. 5, :func:`infonce_lower_bound`).

With ``gather_distributed=True`` the candidate codes are those of the global batch, gathered with
gradients; the local predictions keep their positive's index, offset by the rank. With
``num_negatives > 0`` the N − 1 negatives are a uniform sample of that many codes instead of all of
them (the positive is masked if drawn), which bounds the memory of the (predictions x codes) score
matrix; the sample is drawn from torch's global generator, identical on every rank when the ranks are
seeded alike, so that a 2-process run draws the same negatives as one process.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from selfsup import distributed as dist
from selfsup.losses.float32 import float32_loss

__all__ = ["cpc_infonce", "infonce_lower_bound"]


def infonce_lower_bound(loss: torch.Tensor | float, num_candidates: int) -> float:
    """The InfoNCE estimate of the mutual information, log N − L_N (CPC Eq. 5). It is at most log N."""
    return math.log(num_candidates) - float(loss)


@float32_loss
def cpc_infonce(
    predictions: torch.Tensor,
    codes: torch.Tensor,
    offset: int,
    num_negatives: int = 0,
    gather_distributed: bool = False,
) -> torch.Tensor:
    """CPC's InfoNCE for one prediction offset k, averaged over every prediction.

    Args:
        predictions: ẑ = W_k c for the rows that have a target k rows below, shape (B, H − k, W, D):
            ``predictions[b, i, j]`` predicts ``codes[b, i + k, j]``.
        codes: the patch codes z of the grid, shape (B, H, W, D). Every code of the (global) batch is a
            candidate; the one at (b, i + k, j) is the positive.
        offset: k >= 1.
        num_negatives: 0 uses every other code of the (global) batch as a negative; K > 0 a uniform
            sample of K codes shared by all predictions.
        gather_distributed: take the candidates from every rank (with gradients).
    """
    if codes.ndim != 4 or predictions.ndim != 4:
        raise ValueError(
            f"predictions and codes must be (B, rows, cols, D); got {tuple(predictions.shape)} and {tuple(codes.shape)}"
        )
    b, h, w, d = codes.shape
    if predictions.shape != (b, h - offset, w, d):
        raise ValueError(
            f"for offset {offset} the predictions must be {(b, h - offset, w, d)}, got {tuple(predictions.shape)}"
        )
    return _cpc_infonce(
        predictions.reshape(-1, d), codes.reshape(-1, d), b, h, w, offset, num_negatives, gather_distributed
    )


def _cpc_infonce(
    pred: torch.Tensor,
    local: torch.Tensor,
    b: int,
    h: int,
    w: int,
    offset: int,
    num_negatives: int,
    gather_distributed: bool,
) -> torch.Tensor:
    rank_offset = 0
    candidates = local
    if gather_distributed and dist.world_size() > 1:
        candidates = dist.gather(local)
        rank_offset = dist.rank() * local.shape[0]
    device = pred.device
    rows = torch.arange(h - offset, device=device)
    cols = torch.arange(w, device=device)
    images = torch.arange(b, device=device)
    positive = images[:, None, None] * h * w + (rows[None, :, None] + offset) * w + cols[None, None, :]
    positive = positive.reshape(-1) + rank_offset
    total = candidates.shape[0]
    if num_negatives <= 0 or num_negatives >= total - 1:
        return F.cross_entropy(pred @ candidates.T, positive)
    sample = torch.randperm(total)[:num_negatives].to(device)
    positive_logit = (pred * candidates[positive]).sum(dim=1, keepdim=True)
    negative_logits = pred @ candidates[sample].T
    negative_logits = negative_logits.masked_fill(sample[None, :] == positive[:, None], float("-inf"))
    logits = torch.cat([positive_logit, negative_logits], dim=1)
    return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=device))
