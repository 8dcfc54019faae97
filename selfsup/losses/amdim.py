"""AMDIM's multi-scale InfoNCE (Bachman, Hjelm, Buchwalter, NeurIPS 2019, §3.2-3.4; Philip-Bachman/
amdim-public ``costs.py``, ``NCE_MI_MULTI``).

For a source vector s of view A and the target map t of view B (L locations per image), every
(source image i, target image j, location l) gets the raw score

    raw[i, j, l] = ⟨s_i, t_{j,l}⟩ / √d                       (d = n_rkhs)

then a penalty 0.05 · mean(raw²) is added to the loss and the scores are soft-clipped,
score = c · tanh(raw / c) with c = ``tclip`` = 20 (§3.4, "regularise and clip"). All L locations of the
same image are positives; the negatives, shared by all of them, are every location of every other
image. Each positive's log-softmax is taken against the shared negatives (positives excluded):

    ℓ(i, l) = score[i, i, l] − log( exp(score[i, i, l]) + Σ_{j≠i, l'} exp(score[i, j, l']) )

and the task's loss is −mean ℓ. The three tasks are 1→5 (global of A against the 5x5 map of B), 1→7
(global against 7x7) and 5→5 (one random 5x5 location of A against the 5x5 map of B), each averaged
over both directions (A→B, B→A); the total is L_1t5 + L_1t7 + L_5t5 + the penalties (summed over the
tasks, averaged over the directions), as in ``task_self_supervised.py``.

With ``gather_distributed=True`` the targets (and so the negatives) come from the global batch, gathered
with gradients; the sources stay local. The code's DataParallel trick that skips ``cuda:0`` (and
rescales by n_gpus/(n_gpus − 1)) has no counterpart under DDP.
"""

from __future__ import annotations

from typing import NamedTuple, cast

import torch

from selfsup import distributed as dist
from selfsup.losses.float32 import float32_loss

__all__ = ["AMDIMTerms", "amdim_nce", "amdim_terms", "tanh_clip"]


def tanh_clip(x: torch.Tensor, clip: float | None = 20.0) -> torch.Tensor:
    """Soft clipping to (−clip, clip): clip · tanh(x / clip). ``None`` or 0 leaves x unchanged."""
    if not clip:
        return x
    return clip * torch.tanh(x / clip)


@float32_loss
def amdim_nce(
    source: torch.Tensor,
    target: torch.Tensor,
    tclip: float = 20.0,
    penalty: float = 0.05,
    gather_distributed: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One AMDIM prediction task in one direction. Returns ``(nce_loss, score_penalty)``.

    Args:
        source: (n, d) source vectors of view A (a global, or one sampled local feature per image).
        target: (n, L, d) target features of view B, L locations per image; row i is the same image
            as ``source[i]``.
        tclip: c of the soft clipping (20 in the paper and the code).
        penalty: weight of mean(raw²), computed on the raw scores before clipping (0.05).
        gather_distributed: targets (positives and negatives) from every rank, with gradients.
    """
    if source.ndim != 2 or target.ndim != 3 or source.shape[0] != target.shape[0] or source.shape[1] != target.shape[2]:
        raise ValueError(
            f"source must be (n, d) and target (n, L, d); got {tuple(source.shape)} and {tuple(target.shape)}"
        )
    if source.shape[0] < 2:
        raise ValueError("AMDIM's NCE needs at least 2 images per batch (the other images are the negatives)")
    return _amdim_nce(source, target, tclip, penalty, gather_distributed)


def _amdim_nce(
    source: torch.Tensor, target: torch.Tensor, tclip: float, penalty: float, gather_distributed: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    offset = 0
    if gather_distributed and dist.world_size() > 1:
        offset = dist.rank() * target.shape[0]
        target = dist.gather(target)
    n, d = source.shape
    locations = target.shape[1]
    raw = torch.einsum("id,jld->ijl", source, target) / d**0.5
    score_penalty = penalty * raw.pow(2).mean()
    scores = tanh_clip(raw, tclip)
    rows = torch.arange(n, device=scores.device) + offset
    positive = rows[:, None] == torch.arange(target.shape[0], device=scores.device)[None, :]
    pos = scores[positive].reshape(n, locations)
    negatives = scores.masked_fill(positive[:, :, None], float("-inf")).reshape(n, -1)
    log_negatives = torch.logsumexp(negatives, dim=1, keepdim=True)
    log_prob = pos - torch.logaddexp(pos, log_negatives)
    return -log_prob.mean(), score_penalty


class AMDIMTerms(NamedTuple):
    """The three task losses (each averaged over both directions) and the summed score penalty."""

    global_to_5: torch.Tensor
    global_to_7: torch.Tensor
    local_5_to_5: torch.Tensor
    penalty: torch.Tensor

    def total(self) -> torch.Tensor:
        return self.global_to_5 + self.global_to_7 + self.local_5_to_5 + self.penalty


def amdim_terms(
    r1: tuple[torch.Tensor, torch.Tensor],
    r5: tuple[torch.Tensor, torch.Tensor],
    r7: tuple[torch.Tensor, torch.Tensor],
    locations: tuple[torch.Tensor, torch.Tensor],
    tclip: float = 20.0,
    penalty: float = 0.05,
    gather_distributed: bool = False,
) -> AMDIMTerms:
    """AMDIM's loss terms for two views A and B.

    Args:
        r1: (global_A, global_B), each (n, d).
        r5: (map5_A, map5_B), each (n, 25, d) (5x5 locations, row-major).
        r7: (map7_A, map7_B), each (n, 49, d).
        locations: for each view, the (n,) index of the 5x5 location used as the 5→5 source.
    """
    terms: dict[str, list[torch.Tensor]] = {"1t5": [], "1t7": [], "5t5": []}
    penalties: list[torch.Tensor] = []
    for a, b in ((0, 1), (1, 0)):
        rows = torch.arange(r5[a].shape[0], device=r5[a].device)
        local_source = r5[a][rows, locations[a]]
        for task, src, trg in (("1t5", r1[a], r5[b]), ("1t7", r1[a], r7[b]), ("5t5", local_source, r5[b])):
            loss, reg = amdim_nce(src, trg, tclip, penalty, gather_distributed)
            terms[task].append(loss)
            penalties.append(reg)
    half = 0.5

    def halved_sum(losses: list[torch.Tensor]) -> torch.Tensor:
        return cast(torch.Tensor, half * sum(losses))  # a sum of tensors (typeshed: Tensor | Literal[0])

    return AMDIMTerms(
        halved_sum(terms["1t5"]), halved_sum(terms["1t7"]), halved_sum(terms["5t5"]), halved_sum(penalties)
    )
