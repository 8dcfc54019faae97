"""W-MSE: whitening + normalised MSE (Ermolov, Siarohin, Sangineto, Sebe, ICML 2021, §3).

The paper's Eq. 1 asks for min E[dist(z_i, z_j)] over positive pairs subject to Cov(z) = I; W-MSE meets
the constraint by construction, whitening the embeddings before measuring the distance.

For a batch of N images with d views each (``num_samples`` 2 or 4) and embeddings z (N × D per view):

1. draw a random permutation of the N images and cut it into sub-batches of ``w_size`` images;
2. in every sub-batch, whiten **each view separately** with the sub-batch statistics:

       μ = mean(z),  Σ = (z − μ)ᵀ(z − μ)/(n − 1)          (unbiased, as the official ``Whitening2d``)
       Σ ← (1 − ε)Σ + εI                                   (optional shrinkage, ε = 0 by default)
       Σ = LLᵀ (Cholesky),  W = L⁻¹,  ẑ = W(z − μ)          (so that Cov(ẑ) = I)

   ẑ is computed by a triangular solve with L (``torch.linalg.solve_triangular``), never an explicit inverse;
3. the loss is the normalised MSE between the whitened views of every pair (i < j):

       ℓ(ẑ_i, ẑ_j) = mean over the N images of ‖ẑ_i/‖ẑ_i‖ − ẑ_j/‖ẑ_j‖‖² = 2 − 2·cos(ẑ_i, ẑ_j);

4. repeat ``w_iter`` times with new permutations; sum over iterations and pairs and divide by
   w_iter × (number of pairs).

This follows the official code (htdt/self-supervised ``methods/w_mse.py``): each pair's term is the mean
over all N images, i.e. the mean over the sub-batches of their per-sub-batch means (the sub-batches are
equal), and gradients flow through the whitening matrix (no stop-gradient). ``normalize=False`` gives the
code's plain ``F.mse_loss`` instead (``--no_norm``). The loss runs in float32 with autocast disabled (float64
inputs stay float64, for gradient checks).

The sub-batch must be larger than the embedding dimension (Σ is singular otherwise; the paper and the
TF2 code use about 2×), and the batch must be a multiple of ``w_size`` (the official ``perm.view``).

**Randomness.** The permutation comes from the global torch RNG (or ``generator``), which the engine
checkpoints, so that a resumed run draws the same permutations.

**Distributed.** The official code is single-GPU, so its sub-batches are drawn from the whole batch.
With ``gather_distributed`` the embeddings are gathered with gradients and every rank computes the
loss of the global batch, with rank 0's permutation (broadcast through an all-reduce): the loss and
the gradients equal those of one process (``tests/distributed/test_equivalence.py``). Without it, each
rank whitens sub-batches of its own shard.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from selfsup import distributed as dist
from selfsup.losses.float32 import float32_loss

__all__ = ["whiten", "normalized_mse", "wmse"]


@float32_loss
def whiten(z: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """W(z − μ) with W = L⁻¹ from the Cholesky factor of the (shrunk) unbiased covariance (W-MSE §3).

    ``z`` is (n, D), or (G, n, D) for G independent sub-batches whitened at once. Computed in float32
    (or float64 for float64 inputs).
    """
    if z.ndim not in (2, 3):
        raise ValueError(f"whiten expects (n, D) or (G, n, D), got {tuple(z.shape)}")
    n, d = z.shape[-2:]
    if n <= d:
        raise ValueError(f"whitening {d}-dimensional embeddings needs more than {d} samples per sub-batch, got {n}")
    centred = z - z.mean(dim=-2, keepdim=True)
    cov = centred.mT @ centred / (n - 1)
    eye = torch.eye(d, device=z.device, dtype=z.dtype)
    cov = (1 - eps) * cov + eps * eye
    factor, info = torch.linalg.cholesky_ex(cov)
    if bool((info != 0).any()):
        raise ValueError(
            "the sub-batch covariance is not positive definite (Cholesky failed): the embeddings "
            "are (nearly) collapsed or w_size is too small. Raise w_size or set w_eps > 0"
        )
    return torch.linalg.solve_triangular(factor, centred.mT, upper=False).mT


def normalized_mse(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """mean_b ‖x0_b/‖x0_b‖ − x1_b/‖x1_b‖‖² = 2 − 2·mean_b cos(x0_b, x1_b), W-MSE's distance."""
    return 2 - 2 * (F.normalize(x0, dim=-1) * F.normalize(x1, dim=-1)).sum(dim=-1).mean()


def _permutation(n: int, device: torch.device, generator: torch.Generator | None, synchronize: bool) -> torch.Tensor:
    """A random permutation of range(n) from the global CPU RNG (or ``generator``); rank 0's on every
    rank when ``synchronize``."""
    perm = torch.randperm(n, generator=generator).to(device)
    if synchronize:
        if dist.rank() != 0:
            perm = torch.zeros_like(perm)
        dist.all_reduce_sum(perm)
    return perm


@float32_loss
def wmse(
    views: Sequence[torch.Tensor],
    w_size: int,
    w_iter: int = 1,
    eps: float = 0.0,
    normalize: bool = True,
    gather_distributed: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The W-MSE loss over every pair of views (see the module docstring).

    Args:
        views: embeddings of the d views, each (N, D); row b of every view is the same image.
        w_size: images per whitening sub-batch (128 for D = 64 on CIFAR, 256 for D = 128).
        w_iter: repetitions with new permutations (1; 4 for STL-10 / Tiny-ImageNet W-MSE 2).
        eps: covariance shrinkage ε (0).
        normalize: normalised MSE (2 − 2 cos, the default) or the plain MSE.
        gather_distributed: whiten and compare the global batch on every rank.
        generator: CPU generator for the permutations (default: the global RNG).
    """
    if len(views) < 2:
        raise ValueError(f"W-MSE compares pairs of views; got {len(views)} view(s)")
    shape = views[0].shape
    if len(shape) != 2 or any(v.shape != shape for v in views):
        raise ValueError(f"every view must be (N, D) with the same shape; got {[tuple(v.shape) for v in views]}")
    if w_iter < 1:
        raise ValueError(f"w_iter must be at least 1, got {w_iter}")
    distributed = gather_distributed and dist.world_size() > 1
    zs = list(views)
    if distributed:
        zs = [dist.gather(z) for z in zs]
    n, d = zs[0].shape
    if w_size <= d:
        raise ValueError(
            f"w_size={w_size} must be larger than the embedding dimension {d}: the covariance of a "
            f"sub-batch of {w_size} is singular otherwise. Use w_size >= {2 * d} (2x, as the paper)"
        )
    if n < w_size:
        raise ValueError(
            f"the batch holds {n} images, fewer than w_size={w_size}: raise the batch size or "
            f"lower w_size (it must stay above the embedding dimension {d})"
        )
    if n % w_size:
        raise ValueError(f"the batch of {n} images must be a multiple of w_size={w_size} (sub-batches of equal size)")
    pair_loss = normalized_mse if normalize else F.mse_loss
    pairs = [(i, j) for i in range(len(zs)) for j in range(i + 1, len(zs))]
    loss = zs[0].new_zeros(())
    for _ in range(w_iter):
        groups = _permutation(n, zs[0].device, generator, distributed).view(-1, w_size)
        whitened = [whiten(z[groups], eps).reshape(n, d) for z in zs]
        for i, j in pairs:
            loss = loss + pair_loss(whitened[i], whitened[j])
    return loss / (w_iter * len(pairs))
