"""Deep InfoMax's mutual-information estimators between local features and a global vector
(Hjelm et al., ICLR 2019, §3.1-3.2, Eq. 2-5; rdevon/DIM ``cortex_DIM/functions/dim_losses.py``).

Both inputs are already encoded by the score networks ("encode-and-dot-product", DIM Appendix A.2):
``local`` is (N, L, D), the D-dim encodings of the L = M·M positions of N images, and ``global_`` is
(N, D). The score of a (global, local) pair is the dot product

    T[i, j, l] = g_i · l_{j,l}

a positive pair when i = j (the same image) and a negative pair otherwise; positive pairs are always
excluded from the negatives. Each estimator returns a loss to minimise (minus the MI estimate):

* ``jsd`` (DIM Eq. 4, the default): the Jensen-Shannon lower bound
  Î = E_pos[−sp(−T)] − E_neg[sp(T)], sp = softplus. As in the code (``measure='JSD'``) the two
  expectations carry +log 2 and −log 2, so the loss is E_neg[sp(T)] + E_pos[sp(−T)] − 2·log 2
  (0 at the optimum; the shift does not change the gradient). E_pos averages the N·L positive
  scores, E_neg the N·(N−1)·L negative ones.
* ``nce`` (DIM Eq. 5, InfoNCE): for each image i and position l, a softmax over the positive T[i, i, l]
  and every negative T[i, j, l'] (j ≠ i, all l'); the loss is the mean negative log-probability of the
  positive, so log(1 + (N−1)·L) − loss bounds the MI. The code masks same-image negatives by subtracting
  10 from their logits; here they are removed exactly.
* ``dv`` (DIM Eq. 2, Donsker-Varadhan): E_pos[T] − log E_neg[exp T], the log-mean-exp taken over every
  negative pair of the batch at once (with max-subtraction).

With ``gather_distributed=True`` the negatives come from the global batch. JSD and NCE average over
the local globals' rows, so each rank scores its own globals against the gathered locals (DDP's mean
then equals the global mean). DV's log-mean-exp runs over the whole global matrix, which is not a mean
of per-rank terms: every rank gathers both inputs and computes the full global loss; the gather's
backward then gives each rank the gradient of its own inputs (times the world size, which DDP's
averaging divides out).

Prior matching (DIM §3.3): a discriminator D separates samples of the prior (uniform on [0, 1]^d) from
the encoder's sigmoid(Y). :func:`prior_discriminator_loss` is its GAN loss (prior = "real") and
:func:`prior_generator_loss` the encoder's non-saturating loss −log σ(D(sigmoid(Y)))
(``cortex_DIM/models/prior_matching.py``, ``measure='GAN'``, ``'non-saturating'``).
:func:`gradient_penalty` is the zero-centred penalty E_x ||∇_x D(x)||² the code adds to D's loss
(``cortex_DIM/models/discriminator.py::Discriminator.routine``, ``functions/gradient_penalty.py``;
Mescheder et al., "Which training methods for GANs do actually converge?", ICML 2018).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from selfsup import distributed as dist
from selfsup.losses.float32 import at_least_float32, float32_loss

__all__ = [
    "MI_ESTIMATORS",
    "dim_scores",
    "dv_mi_loss",
    "gradient_penalty",
    "jsd_mi_loss",
    "local_global_mi_loss",
    "nce_mi_loss",
    "prior_discriminator_loss",
    "prior_generator_loss",
]

MI_ESTIMATORS = ("jsd", "nce", "dv")
LOG2 = math.log(2.0)


def _check(local: torch.Tensor, global_: torch.Tensor) -> None:
    if local.ndim != 3 or global_.ndim != 2 or local.shape[0] != global_.shape[0] or local.shape[2] != global_.shape[1]:
        raise ValueError(
            f"local must be (N, L, D) and global (N, D); got {tuple(local.shape)} and {tuple(global_.shape)}"
        )
    if local.shape[0] < 2:
        raise ValueError("DIM's estimators need at least 2 images per batch (the other images are the negatives)")


@float32_loss
def dim_scores(
    local: torch.Tensor, global_: torch.Tensor, gather_distributed: bool = False, gather_globals: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores T[i, j, l] = g_i · l_{j,l} of the (local) globals against the locals of the (global) batch.

    Returns ``(scores, positive)``: ``scores`` is (n, N, L) in float32 and ``positive`` a boolean (n, N)
    mask, true where j is image i. ``gather_globals`` also gathers the globals (n = N then).
    """
    _check(local, global_)
    return _dim_scores(local, global_, gather_distributed, gather_globals)


def _dim_scores(
    local: torch.Tensor, global_: torch.Tensor, gather_distributed: bool, gather_globals: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    offset = 0
    if gather_distributed and dist.world_size() > 1:
        local = dist.gather(local)
        if gather_globals:
            global_ = dist.gather(global_)
        else:
            offset = dist.rank() * global_.shape[0]
    scores = torch.einsum("id,jld->ijl", global_, local)
    rows = torch.arange(global_.shape[0], device=scores.device) + offset
    positive = rows[:, None] == torch.arange(local.shape[0], device=scores.device)[None, :]
    return scores, positive


def jsd_mi_loss(local: torch.Tensor, global_: torch.Tensor, gather_distributed: bool = False) -> torch.Tensor:
    """−(Jensen-Shannon MI estimate): E_neg[sp(T)] + E_pos[sp(−T)] − 2·log 2 (DIM Eq. 4)."""
    scores, positive = dim_scores(local, global_, gather_distributed)
    mask = positive[:, :, None].expand_as(scores)
    e_pos = (LOG2 - F.softplus(-scores[mask])).mean()
    e_neg = (F.softplus(scores[~mask]) - LOG2).mean()
    return e_neg - e_pos


def nce_mi_loss(local: torch.Tensor, global_: torch.Tensor, gather_distributed: bool = False) -> torch.Tensor:
    """InfoNCE (DIM Eq. 5): −mean log softmax of each positive against all other images' positions."""
    scores, positive = dim_scores(local, global_, gather_distributed)
    n, _, positions = scores.shape
    pos = scores[positive].reshape(n, positions)
    negatives = scores.masked_fill(positive[:, :, None], float("-inf")).reshape(n, -1)
    log_negatives = torch.logsumexp(negatives, dim=1, keepdim=True)
    log_prob = pos - torch.logaddexp(pos, log_negatives)
    return -log_prob.mean()


def dv_mi_loss(local: torch.Tensor, global_: torch.Tensor, gather_distributed: bool = False) -> torch.Tensor:
    """−(Donsker-Varadhan MI estimate): log-mean-exp over all negatives − mean positive (DIM Eq. 2)."""
    scores, positive = dim_scores(local, global_, gather_distributed, gather_globals=True)
    mask = positive[:, :, None].expand_as(scores)
    e_pos = scores[mask].mean()
    negatives = scores[~mask]
    e_neg = torch.logsumexp(negatives, dim=0) - math.log(negatives.numel())
    return e_neg - e_pos


def local_global_mi_loss(
    local: torch.Tensor, global_: torch.Tensor, estimator: str = "jsd", gather_distributed: bool = False
) -> torch.Tensor:
    """The DIM loss with the estimator named ``jsd``, ``nce`` or ``dv`` (see the module docstring)."""
    losses = {"jsd": jsd_mi_loss, "nce": nce_mi_loss, "dv": dv_mi_loss}
    if estimator in losses:
        return losses[estimator](local, global_, gather_distributed)
    raise ValueError(f"unknown MI estimator {estimator!r}. Valid: {', '.join(MI_ESTIMATORS)}")


@float32_loss
def prior_discriminator_loss(prior_scores: torch.Tensor, encoder_scores: torch.Tensor) -> torch.Tensor:
    """The discriminator's GAN loss: sp(−D(prior)) + sp(D(sigmoid(Y))), averaged (DIM §3.3)."""
    return F.softplus(-prior_scores).mean() + F.softplus(encoder_scores).mean()


@float32_loss
def prior_generator_loss(encoder_scores: torch.Tensor) -> torch.Tensor:
    """The encoder's non-saturating prior-matching loss −log σ(D(sigmoid(Y))) = sp(−D(·)), averaged."""
    return F.softplus(-encoder_scores).mean()


def gradient_penalty(scores: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """The zero-centred gradient penalty mean_i ||∂D(x_i)/∂x_i||² of a discriminator's ``scores`` (N, 1)
    at its ``inputs`` (N, ...), a leaf that requires grad (Mescheder et al., ICML 2018; rdevon/DIM
    ``cortex_DIM/functions/gradient_penalty.py::contrastive_gradient_penalty``, squared norm summed over the
    features and averaged over the batch, not WGAN-GP's (||g|| - 1)²).

    The gradient of ``scores.sum()`` is taken, which is each sample's own gradient as long as D treats the
    samples independently (no BatchNorm, as DIM's prior discriminator). The code differentiates
    ``network(x)[-1]``, the last sample's score only; here every sample counts. The graph is kept
    (``create_graph``), so the penalty trains D's parameters; the square is computed in at least float32.
    """
    if not inputs.requires_grad or not scores.requires_grad:
        raise ValueError("gradient_penalty needs inputs that require grad and scores computed from them")
    (grad,) = torch.autograd.grad(scores.sum(), inputs, create_graph=True, allow_unused=True)
    if grad is None:  # D does not depend on its input
        return scores.new_zeros((), dtype=torch.float32)
    return at_least_float32(grad).flatten(1).pow(2).sum(1).mean()
