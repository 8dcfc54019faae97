"""Collapse diagnostics from the singular-value spectrum of an embedding matrix."""

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
