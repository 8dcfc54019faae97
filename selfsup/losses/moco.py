"""MoCo's contrastive losses: InfoNCE against a queue (v1/v2) and in-batch InfoNCE scaled by 2τ (v3).

**MoCo v1/v2** (He et al., CVPR 2020, Eq. 1; ``moco/builder.py``). For a query q, its positive key k⁺
(the other view through the momentum encoder) and the K keys of the queue, all L2-normalised:

    L_q = −log [ exp(q·k⁺/τ) / ( exp(q·k⁺/τ) + Σ_{i=1..K} exp(q·k_i/τ) ) ]           (Eq. 1)

i.e. cross-entropy over the logits [q·k⁺, q·queueᵀ]/τ with label 0, averaged over the batch. The
keys and the queue carry no gradient: only the query path back-propagates.

**MoCo v3** (Chen, Xie, He, ICCV 2021, Alg. 1; ``moco-v3/moco/builder.py``). The keys of the local
batch are gathered from every rank **without gradient** and serve as each other's negatives; the
query of sample i must pick its own key, whose global index is i + N_local·rank:

    ctr(q, k) = 2τ · CE( q·k_allᵀ / τ, arange(N_local) + N_local·rank )

The 2τ factor is the official code's (``nn.CrossEntropyLoss()(logits, labels) * (2 * self.T)``); it
keeps the gradient magnitude independent of τ. The method symmetrises: ctr(q1, k2) + ctr(q2, k1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from selfsup import distributed as dist
from selfsup.losses.float32 import float32_loss

__all__ = ["moco_infonce", "moco_v3_contrastive"]


@float32_loss
def moco_infonce(
    q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor | None, temperature: float = 0.2
) -> torch.Tensor:
    """MoCo v1/v2's InfoNCE (Eq. 1): positives ``k`` against the negatives in ``queue``.

    Args:
        q: queries (N, D), with gradient; L2-normalised here.
        k: positive keys (N, D) from the momentum encoder; normalised and detached here.
        queue: negative keys (K, D), unit rows (the queue stores normalised keys); ``None`` or an
            empty tensor gives the degenerate loss with the positive only (0).
        temperature: τ; 0.07 for v1, 0.2 for v2, 0.1 in the CIFAR demo.
    """
    if q.shape != k.shape or q.ndim != 2:
        raise ValueError(f"q and k must both be (N, D); got {tuple(q.shape)} and {tuple(k.shape)}")
    q = F.normalize(q, dim=1)
    k = F.normalize(k.detach(), dim=1)
    positive = (q * k).sum(dim=1, keepdim=True)
    if queue is not None and queue.numel():
        if queue.ndim != 2 or queue.shape[1] != q.shape[1]:
            raise ValueError(f"queue must be (K, {q.shape[1]}), got {tuple(queue.shape)}")
        logits = torch.cat([positive, q @ queue.detach().T], dim=1)
    else:
        logits = positive
    labels = torch.zeros(len(q), dtype=torch.long, device=q.device)
    return F.cross_entropy(logits / temperature, labels)


@float32_loss
def moco_v3_contrastive(
    q: torch.Tensor, k: torch.Tensor, temperature: float = 1.0, gather_distributed: bool = False
) -> torch.Tensor:
    """MoCo v3's ctr(q, k) = 2τ · CE(q·k_allᵀ/τ, arange(N) + N·rank) (Alg. 1 and the code).

    Args:
        q: queries (N, D) of one view, with gradient; normalised here.
        k: keys (N, D) of the other view from the momentum encoder; normalised and detached here.
        temperature: τ; 1.0 for ResNets, 0.2 for ViTs and solo-learn's CIFAR recipe.
        gather_distributed: use the keys of every rank as negatives (gathered without gradient).
    """
    if q.shape != k.shape or q.ndim != 2:
        raise ValueError(f"q and k must both be (N, D); got {tuple(q.shape)} and {tuple(k.shape)}")
    q = F.normalize(q, dim=1)
    k = F.normalize(k.detach(), dim=1)
    n = q.shape[0]
    offset = 0
    if gather_distributed and dist.world_size() > 1:
        k = dist.gather(k, with_grad=False)
        offset = dist.rank() * n
    logits = q @ k.T / temperature
    labels = torch.arange(n, device=q.device) + offset
    return F.cross_entropy(logits, labels) * (2 * temperature)
