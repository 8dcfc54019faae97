"""Collapse diagnostics of an embedding matrix: the spread of its normalised rows and its singular-value spectrum.

The one place these statistics are computed: the engine logs :func:`embedding_std` of each logged step's
embedding (``z_std`` in ``metrics.jsonl``), the kNN monitor and the evaluation report it and
:func:`effective_rank` on held-out images, and ``selfsup compare`` plots :func:`singular_values`.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def singular_values(embeddings: torch.Tensor) -> torch.Tensor:
    """Singular values of the centred embedding matrix (N, D), largest first."""
    z = embeddings.float()
    return torch.linalg.svdvals(z - z.mean(0))


@torch.no_grad()
def effective_rank(embeddings: torch.Tensor) -> float:
    """exp(entropy of the normalised singular values) (Roy & Vetterli 2007), in [1, min(N, D)].

    Near 1 under complete (dimensional) collapse; close to D for a spread-out embedding.
    """
    s = singular_values(embeddings)
    p = s / s.sum().clamp_min(1e-12)
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


@torch.no_grad()
def embedding_std(embeddings: torch.Tensor) -> float:
    """Std over the batch of the L2-normalised embeddings, averaged over dimensions (SimSiam §4.1, Fig. 2).

    About 1/√d for a healthy (spread-out) d-dimensional embedding, near 0 under collapse."""
    z = torch.nn.functional.normalize(embeddings.detach().float(), dim=1)
    return float(z.std(dim=0).mean())
