"""SwAV's swapped prediction with Sinkhorn-Knopp codes (Caron et al., NeurIPS 2020, §3.1).

Each crop t of an image gives a unit embedding z_t and prototype scores s_t = C z_t (cosine similarities
against the unit prototypes c_1..c_K). For every *assignment* crop (the two large crops,
``crops_for_assign``) a soft code q is computed without gradient by Sinkhorn-Knopp, the solution of the
entropy-regularised equipartition problem max_Q Tr(QᵀCᵀZ) + εH(Q) of §3.1 ("Online clustering"):

    Q* = Diag(u) exp(Cᵀ Z / ε) Diag(v)   with rows summing to 1/K and columns to 1/B,

in the official ``distributed_sinkhorn`` form (facebookresearch/swav ``main_swav.py``, ε = 0.05,
3 iterations): Q = exp(S/ε)ᵀ (K × B); Q /= ΣQ; then repeat {Q /= row sums; Q /= K; Q /= column sums;
Q /= B}; finally Q *= B, so that every column (sample) sums to 1 and every row (prototype) to B/K.

Every other crop v predicts q through p_v = softmax(s_v/τ), τ = 0.1 (the swapped loss of Eqs. 1-2):

    ℓ(z_v, q) = −Σ_k q_k log p_{v,k}
    L = mean over assignment crops a of [ Σ_{v≠a} mean_batch ℓ(z_v, q_a) / (V − 1) ]

which is the official code's averaging (V = all crops, large and small).

**Distributed.** With ``gather_distributed`` the global sum of Q and the row sums are all-reduced
(:func:`selfsup.distributed.all_reduce_sum`) and B is the global number of columns, so the codes equal
those of one process over the global batch; the features are not gathered and the loss of each rank is
the mean over its own samples (DDP's gradient averaging gives the global mean).

**Queue.** ``extra_scores`` (the prototype scores of queued embeddings, one tensor per assignment
crop) are prepended before Sinkhorn and only the last B rows are kept, as in the official code.
Sinkhorn runs under ``no_grad`` in float32: exp(s/0.05) overflows in fp16 for s ≈ 1. The scores must
be bounded (cosine similarities are in [-1, 1], so exp(±20) is safe in float32).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from selfsup import distributed as dist
from selfsup.losses.float32 import float32_loss

__all__ = ["sinkhorn_knopp", "swapped_prediction", "swav"]


@torch.no_grad()
@float32_loss
def sinkhorn_knopp(
    scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3, gather_distributed: bool = False
) -> torch.Tensor:
    """Soft codes Q (B, K) for prototype scores (B, K) by Sinkhorn-Knopp (SwAV §3.1, ``distributed_sinkhorn``).

    Each row of the result (a sample) sums to exactly 1 (the last step normalises the samples); each
    column (a prototype) sums to B/K up to the error left after ``iterations`` alternations (small after
    the 3 the paper uses; exact in the limit). ``gather_distributed`` all-reduces the global sum and the
    prototype sums across ranks, and B counts the columns of every rank (each rank must pass the same
    number of rows). No gradient flows through the codes.
    """
    if scores.ndim != 2:
        raise ValueError(f"scores must be (B, K), got {tuple(scores.shape)}")
    if epsilon <= 0 or iterations < 1:
        raise ValueError(f"Sinkhorn needs epsilon > 0 and iterations >= 1, got {epsilon} and {iterations}")
    distributed = gather_distributed and dist.world_size() > 1
    Q = torch.exp(scores.detach() / epsilon).T  # K x B, as in the paper's notation
    K, local_b = Q.shape
    B = local_b * (dist.world_size() if distributed else 1)
    total = Q.sum()
    if distributed:
        dist.all_reduce_sum(total)
    Q /= total
    for _ in range(iterations):
        row_sums = Q.sum(dim=1, keepdim=True)  # each prototype must get a total weight of 1/K
        if distributed:
            dist.all_reduce_sum(row_sums)
        Q /= row_sums
        Q /= K
        Q /= Q.sum(dim=0, keepdim=True)  # each sample must get a total weight of 1/B
        Q /= B
    Q *= B  # columns sum to 1: each column is a soft assignment
    return Q.T


@float32_loss
def swapped_prediction(
    scores: Sequence[torch.Tensor],
    codes: Sequence[torch.Tensor],
    crops_for_assign: Sequence[int],
    temperature: float = 0.1,
) -> torch.Tensor:
    """The swapped-prediction loss (SwAV Eqs. 1-2) for given codes, averaged as in the official code.

    Args:
        scores: prototype scores of every crop, each (B, K), large crops first.
        codes: the codes q of the assignment crops, each (B, K), in the order of ``crops_for_assign``.
        crops_for_assign: indices (into ``scores``) of the crops that produce codes.
        temperature: τ of the softmax (0.1).
    """
    if len(codes) != len(crops_for_assign):
        raise ValueError(f"{len(codes)} codes for {len(crops_for_assign)} assignment crops")
    crops = len(scores)
    if crops < 2:
        raise ValueError("swapped prediction needs at least 2 crops")
    log_probs = [F.log_softmax(s / temperature, dim=1) for s in scores]
    loss = scores[0].new_zeros((), dtype=torch.float32)
    for q, crop in zip(codes, crops_for_assign):
        subloss = sum(-(q * log_probs[v]).sum(dim=1).mean() for v in range(crops) if v != crop)
        loss = loss + subloss / (crops - 1)
    return loss / len(crops_for_assign)


@float32_loss
def swav(
    scores: Sequence[torch.Tensor],
    temperature: float = 0.1,
    epsilon: float = 0.05,
    sinkhorn_iterations: int = 3,
    crops_for_assign: Sequence[int] = (0, 1),
    gather_distributed: bool = False,
    extra_scores: Sequence[torch.Tensor | None] | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """SwAV's loss: Sinkhorn codes of the assignment crops, predicted by every other crop.

    Args:
        scores: prototype scores z_tᵀc_k of every crop, each (B, K); the crops listed in
            ``crops_for_assign`` (the large ones) produce the codes, every crop predicts.
        temperature: τ (0.1). epsilon: ε of Sinkhorn (0.05). sinkhorn_iterations: 3.
        crops_for_assign: which crops produce codes ((0, 1): the two large crops).
        gather_distributed: Sinkhorn's sums over every rank (see the module docstring).
        extra_scores: optional queue scores per assignment crop, prepended before Sinkhorn.

    Returns ``(loss, codes)``; ``codes`` are the (B, K) codes of the assignment crops (no gradient).
    """
    if any(not 0 <= c < len(scores) for c in crops_for_assign):
        raise ValueError(f"crops_for_assign {tuple(crops_for_assign)} must index the {len(scores)} crops")
    b = scores[0].shape[0]
    codes = []
    for i, crop in enumerate(crops_for_assign):
        with torch.no_grad():
            out = scores[crop].detach()
            extra = extra_scores[i] if extra_scores is not None else None
            if extra is not None:
                out = torch.cat([extra.detach(), out])
            codes.append(sinkhorn_knopp(out, epsilon, sinkhorn_iterations, gather_distributed)[-b:])
    return swapped_prediction(scores, codes, crops_for_assign, temperature), codes
