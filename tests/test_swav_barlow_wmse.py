"""SwAV, Barlow Twins and W-MSE: losses against hand values and explicit references, the methods' hooks,
one end-to-end training step each, and their presets."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from selfsup.cli.main import main
from selfsup.config import TrainConfig
from selfsup.losses import (
    barlow_twins,
    barlow_twins_terms,
    cross_correlation,
    normalized_mse,
    sinkhorn_knopp,
    swapped_prediction,
    swav,
    whiten,
    wmse,
)
from selfsup.methods import METHODS, Progress
from selfsup.models import build_backbone
from selfsup.optim import apply_lr, build_optimizer
from selfsup.presets import recipe_row, resolve_config
from selfsup.run_folder import RunFolder
from tests.conftest import needs_fashion_mnist


def make(method: str, **args):
    torch.manual_seed(0)
    cls = METHODS.get(method)
    return cls(build_backbone("resnet10", "cifar", 3), cls.make_args(args))


def images(n: int = 8, size: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def progress(step: int = 0, epoch: int = 0, steps_per_epoch: int = 10) -> Progress:
    return Progress(step, 1000, epoch, steps_per_epoch)


def unit(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=-1)


# ----------------------------------------------------------------------------- SwAV


def sinkhorn_reference(scores: torch.Tensor, eps: float, iterations: int) -> torch.Tensor:
    """SwAV's Sinkhorn written out with explicit loops, in float64 (K x B as in the paper)."""
    Q = torch.exp(scores.double() / eps).T.clone()
    K, B = Q.shape
    Q /= Q.sum()
    for _ in range(iterations):
        for k in range(K):
            Q[k] = Q[k] / Q[k].sum() / K
        for b in range(B):
            Q[:, b] = Q[:, b] / Q[:, b].sum() / B
    return (Q * B).T


class TestSinkhorn:
    def scores(self, b: int = 12, k: int = 5, seed: int = 0) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return unit(torch.randn(b, 16, generator=g)) @ unit(torch.randn(k, 16, generator=g)).T

    def test_samples_sum_to_one_and_prototypes_to_b_over_k(self):
        s = self.scores()
        B, K = s.shape
        q = sinkhorn_knopp(s, epsilon=0.05, iterations=3)
        assert (q >= 0).all()
        assert torch.allclose(q.sum(dim=1), torch.ones(B), atol=1e-5)  # exact after the final x B
        # after 3 alternations the prototype marginals are close to B/K; they converge with more
        assert torch.allclose(q.sum(dim=0), torch.full((K,), B / K), rtol=0.3)
        q = sinkhorn_knopp(s, epsilon=0.05, iterations=100)
        assert torch.allclose(q.sum(dim=0), torch.full((K,), B / K), rtol=1e-3)

    def test_matches_the_explicit_loop(self):
        s = self.scores(9, 4, seed=1)
        for iterations in (1, 3):
            expected = sinkhorn_reference(s, 0.05, iterations).float()
            assert torch.allclose(sinkhorn_knopp(s, 0.05, iterations), expected, atol=1e-5)

    def test_hand_computed_symmetric_case(self):
        # scores [[a, 0], [0, a]]: every normalisation keeps the symmetry, so q = softmax(row / eps)
        a, eps = 0.1, 0.05
        q = sinkhorn_knopp(torch.tensor([[a, 0.0], [0.0, a]]), eps, 3)
        p = math.exp(a / eps) / (math.exp(a / eps) + 1)
        assert torch.allclose(q, torch.tensor([[p, 1 - p], [1 - p, p]]), atol=1e-6)
        # equal scores: every prototype gets an equal share
        assert torch.allclose(sinkhorn_knopp(torch.zeros(4, 8)), torch.full((4, 8), 1 / 8))

    def test_equipartition_spreads_a_collapsed_batch(self):
        # every sample prefers prototype 0; the codes still use all prototypes equally
        s = torch.tensor([[0.9, 0.1, 0.0]] * 6) + 0.01 * self.scores(6, 3)
        q = sinkhorn_knopp(s, 0.05, 100)
        assert torch.allclose(q.sum(dim=0), torch.full((3,), 2.0), rtol=1e-3)

    def test_no_gradient_and_float32(self):
        s = self.scores().half().requires_grad_(True)
        q = sinkhorn_knopp(s)
        assert q.dtype == torch.float32 and not q.requires_grad

    def test_global_batch_differs_from_a_shard(self):
        """Why the sums are all-reduced: the codes of half a batch are not the global codes' rows."""
        s = self.scores(8, 4, seed=2)
        assert not torch.allclose(sinkhorn_knopp(s[:4]), sinkhorn_knopp(s)[:4], atol=1e-3)


class TestSwappedPrediction:
    def test_hand_computed_two_crops(self):
        s0, s1 = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
        q0, q1 = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
        # crop 1 predicts q0: -log softmax([0, 1])[0] = log(1 + e); crop 0 predicts q1: the same by symmetry
        loss = swapped_prediction([s0, s1], [q0, q1], (0, 1), temperature=1.0)
        assert loss.item() == pytest.approx(math.log(1 + math.e), rel=1e-6)

    def test_averaging_over_crops_matches_the_explicit_loop(self):
        g = torch.Generator().manual_seed(3)
        scores = [torch.randn(5, 7, generator=g) for _ in range(4)]  # 2 large + 2 small crops
        codes = [torch.softmax(torch.randn(5, 7, generator=g), dim=1) for _ in range(2)]
        tau = 0.1
        total = 0.0
        for q, a in zip(codes, (0, 1)):
            sub = 0.0
            for v in range(4):
                if v == a:
                    continue
                for b in range(5):
                    logp = torch.log_softmax(scores[v][b].double() / tau, dim=0)
                    sub += -(q[b].double() * logp).sum().item() / 5
            total += sub / 3
        expected = total / 2
        assert swapped_prediction(scores, codes, (0, 1), tau).item() == pytest.approx(expected, rel=1e-5)

    def test_codes_come_from_the_assignment_crops_only(self):
        g = torch.Generator().manual_seed(4)
        scores = [unit(torch.randn(6, 5, generator=g)) for _ in range(4)]
        _, codes = swav(scores)
        assert torch.allclose(codes[0], sinkhorn_knopp(scores[0]))
        assert torch.allclose(codes[1], sinkhorn_knopp(scores[1]))
        changed = scores[:2] + [unit(torch.randn(6, 5, generator=g)) for _ in range(2)]
        _, codes_changed = swav(changed)
        assert all(torch.equal(a, b) for a, b in zip(codes, codes_changed))

    def test_queue_scores_are_prepended_and_only_the_batch_rows_kept(self):
        g = torch.Generator().manual_seed(5)
        scores = [unit(torch.randn(4, 6, generator=g)) for _ in range(2)]
        queue = [unit(torch.randn(8, 6, generator=g)) for _ in range(2)]
        loss, codes = swav(scores, extra_scores=queue)
        for i in range(2):
            assert torch.allclose(codes[i], sinkhorn_knopp(torch.cat([queue[i], scores[i]]))[-4:])
        assert loss.item() == pytest.approx(swapped_prediction(scores, codes, (0, 1), 0.1).item(), rel=1e-6)
        assert not torch.allclose(codes[0], swav(scores)[1][0])

    def test_gradient_flows_to_the_predictions_not_the_codes(self):
        s0 = unit(torch.randn(4, 3)).requires_grad_(True)
        s1 = unit(torch.randn(4, 3)).requires_grad_(True)
        loss, codes = swav([s0, s1])
        loss.backward()
        assert not codes[0].requires_grad
        # d/ds1 of -sum q0 log softmax(s1/tau) / B (crop 1 predicts crop 0's code): (softmax - q0) / (tau B) / 2
        expected = (torch.softmax(s1.detach() / 0.1, dim=1) - codes[0]) / (0.1 * 4) / 2
        assert torch.allclose(s1.grad, expected, atol=1e-5)


SWAV_TINY = {"hidden_dim": 32, "latent_dim": 8, "nmb_prototypes": 6}


class TestSwAVMethod:
    def test_prototypes_are_normalised_each_step_and_frozen_for_the_first_epochs(self):
        method = make("swav", **SWAV_TINY, freeze_prototypes_epochs=1.5)
        with torch.no_grad():
            method.prototypes.weight.mul_(3.0)
        views = [images(8, 8, 0), images(8, 8, 1)]
        out = method(views, progress(step=14))  # epoch 1.4 of 1.5: frozen
        norms = method.prototypes.weight.norm(dim=1)
        assert torch.allclose(norms, torch.ones_like(norms), atol=1e-6)
        out.loss.backward()
        assert method.prototypes.weight.grad is not None  # backward reaches them ...
        method.before_optimizer_step(progress(step=14))
        assert method.prototypes.weight.grad is None  # ... and the hook drops it while frozen
        assert method.projector[0].weight.grad is not None
        method.zero_grad()
        out = method(views, progress(step=15))  # epoch 1.5: free
        out.loss.backward()
        method.before_optimizer_step(progress(step=15))
        assert method.prototypes.weight.grad is not None and method.prototypes.weight.grad.abs().sum() > 0
        assert out.logs["prototypes_frozen"] == 0.0

    def test_multi_crop_step_end_to_end(self):
        method = make("swav", **SWAV_TINY)
        views = [images(8, 8, 0), images(8, 8, 1), images(8, 4, 2), images(8, 4, 3)]
        out = method(views, progress())
        # a cross-entropy with logits s/tau in [-10, 10]: between 0 and 20 + log K
        assert torch.isfinite(out.loss) and 0 < out.loss.item() < 20 + math.log(6)
        assert out.embedding.shape == (8, 8)
        assert torch.allclose(out.embedding.norm(dim=1), torch.ones(8), atol=1e-5)
        out.loss.backward()
        assert all(p.grad is not None for p in method.backbone.parameters())
        assert {"queue_used", "prototypes_frozen"} <= out.logs.keys()

    def test_rejects_missing_assignment_crops(self):
        with pytest.raises(ValueError, match="crops_for_assign"):
            make("swav", **SWAV_TINY, crops_for_assign=(0, 2))([images(), images()], progress())

    def test_queue_fills_newest_first_and_is_used_once_full(self):
        method = make("swav", **SWAV_TINY, queue_length=20, queue_start_epoch=1)
        assert method.queue.shape == (2, 20, 8)
        batches = [[images(8, 8, 2 * i), images(8, 8, 2 * i + 1)] for i in range(4)]
        out = method(batches[0], progress(epoch=0))  # before queue_start_epoch: untouched
        assert method.queue.abs().sum() == 0 and out.logs["queue_used"] == 0.0
        out = method(batches[1], progress(epoch=1))
        assert out.logs["queue_used"] == 0.0  # empty queue: not used
        first = method.queue[:, :8].clone()
        assert torch.allclose(first.norm(dim=2), torch.ones(2, 8), atol=1e-5)  # unit embeddings
        assert method.queue[:, 8:].abs().sum() == 0
        out = method(batches[2], progress(epoch=1))
        assert out.logs["queue_used"] == 0.0  # half full before this step's push
        assert torch.equal(method.queue[:, 8:16], first)  # shifted back by one batch
        # length 20 is rounded down to 16 = 2 batches of 8: the last 4 rows are never written
        assert method.queue[:, 16:].abs().sum() == 0
        out = method(batches[3], progress(epoch=1))
        assert out.logs["queue_used"] == 1.0

    def test_full_queue_enters_the_loss(self):
        views = [images(8, 8, 0), images(8, 8, 1)]
        soft = {**SWAV_TINY, "epsilon": 1.0}  # soft codes, so that the queue visibly moves them
        with_queue = make("swav", **soft, queue_length=8, queue_start_epoch=0)
        without = make("swav", **soft)
        with_queue([images(8, 8, 2), images(8, 8, 3)], progress())  # fills the queue with other images
        queued = with_queue.queue.clone()
        a = with_queue(views, progress()).loss
        b = without(views, progress()).loss
        # the expected loss: Sinkhorn over [queue; batch] of each assignment crop, the batch rows kept
        z = without.embed_crops(views).chunk(2)
        scores = [without.prototypes(zc) for zc in z]
        queue_scores = [queued[i] @ without.prototypes.weight.T for i in range(2)]
        expected, _ = swav(scores, epsilon=1.0, extra_scores=queue_scores)
        assert a.item() == pytest.approx(expected.item(), rel=1e-5)
        assert abs(a.item() - b.item()) > 1e-4

    def test_queue_shorter_than_the_batch_is_an_error(self):
        method = make("swav", **SWAV_TINY, queue_length=4, queue_start_epoch=0)
        with pytest.raises(ValueError, match="queue_length=4"):
            method([images(), images(seed=1)], progress())


# ----------------------------------------------------------------------------- Barlow Twins


def barlow_reference(z1: torch.Tensor, z2: torch.Tensor, lambd: float, eps: float = 1e-5) -> float:
    """Eqs. 1-2 with explicit loops in float64."""
    z1, z2 = z1.double(), z2.double()
    n, d = z1.shape

    def standardize(z):
        mean = z.sum(0) / n
        var = ((z - mean) ** 2).sum(0) / n
        return (z - mean) / torch.sqrt(var + eps)

    a, b = standardize(z1), standardize(z2)
    loss = 0.0
    for i in range(d):
        for j in range(d):
            c = sum(float(a[k, i] * b[k, j]) for k in range(n)) / n
            loss += (1 - c) ** 2 if i == j else lambd * c**2
    return loss


class TestBarlowTwinsLoss:
    def test_zero_for_correlated_and_decorrelated_embeddings(self):
        # standardised orthogonal columns (biased variance 1), duplicated across the views
        z = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
        assert barlow_twins(z, z, eps=0.0).item() == 0.0
        # standardisation makes it invariant to per-dimension scale and shift
        assert barlow_twins(3 * z + 5, z * torch.tensor([0.5, 2.0]) - 1, eps=0.0).item() == pytest.approx(0, abs=1e-12)
        assert torch.allclose(cross_correlation(z, z, eps=0.0), torch.eye(2))

    def test_hand_computed_value(self):
        z1 = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])
        z2 = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])
        # C = [[1, -1], [1, -1]]: on-diagonal (1-1)^2 + (1+1)^2 = 4, off-diagonal 1 + 1 = 2
        terms = barlow_twins_terms(z1, z2, eps=0.0)
        assert terms.on_diagonal.item() == pytest.approx(4.0)
        assert terms.off_diagonal.item() == pytest.approx(2.0)
        assert barlow_twins(z1, z2, lambd=0.0051, eps=0.0).item() == pytest.approx(4 + 0.0051 * 2, rel=1e-6)

    def test_matches_the_explicit_loop(self):
        g = torch.Generator().manual_seed(6)
        z1, z2 = torch.randn(7, 4, generator=g), torch.randn(7, 4, generator=g) + torch.randn(7, 4, generator=g)
        for lambd in (0.0051, 0.5):
            assert barlow_twins(z1, z2, lambd).item() == pytest.approx(barlow_reference(z1, z2, lambd), rel=1e-5)

    def test_uses_biased_batch_statistics_like_batchnorm(self):
        g = torch.Generator().manual_seed(7)
        z1, z2 = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
        bn = torch.nn.BatchNorm1d(3, affine=False).train()
        expected = bn(z1).T @ bn(z2) / 6
        assert torch.allclose(cross_correlation(z1, z2), expected, atol=1e-6)

    def test_computes_in_float32_even_under_autocast(self):
        z = torch.randn(8, 4).bfloat16()
        assert cross_correlation(z, z).dtype == torch.float32
        g = torch.Generator().manual_seed(8)
        z1, z2 = torch.randn(64, 16, generator=g), torch.randn(64, 16, generator=g)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 matmuls would be off by ~1e-2
            inside = barlow_twins(z1, z2)
        assert inside.dtype == torch.float32
        assert inside.item() == pytest.approx(barlow_twins(z1, z2).item(), rel=1e-6)


class TestBarlowTwinsMethod:
    def test_step_end_to_end(self):
        method = make("barlowtwins", projector=(32, 32, 16))
        out = method([images(8, 8, 0), images(8, 8, 1)], progress())
        assert torch.isfinite(out.loss) and out.embedding.shape == (8, 16)
        expected = out.logs["on_diagonal"] + 0.0051 * out.logs["off_diagonal"]
        assert float(out.loss.detach()) == pytest.approx(float(expected), rel=1e-6)
        out.loss.backward()
        assert all(p.grad is not None for p in method.parameters())
        assert all(m.bias is None for m in method.projector if isinstance(m, torch.nn.Linear))

    def test_two_learning_rates_weights_and_biases(self):
        cfg = resolve_config("barlowtwins", "imagenet")
        method = make("barlowtwins", projector=(32, 32, 16), bias_lr_mult=cfg.method_args["bias_lr_mult"])
        optimizer = build_optimizer(method.parameter_groups(), cfg)
        groups = {g["lars_exclude"]: g for g in optimizer.param_groups}
        assert len(optimizer.param_groups) == 2
        assert groups[False]["lr"] == pytest.approx(0.2 * 2048 / 256)  # 1.6
        assert groups[True]["lr"] == pytest.approx(0.0048 * 2048 / 256)  # 0.0384
        assert groups[False]["weight_decay"] == 1e-6 and groups[True]["weight_decay"] == 0.0
        assert all(p.ndim == 1 for p in groups[True]["params"])
        assert all(p.ndim > 1 for p in groups[False]["params"])
        apply_lr(optimizer, cfg.lr, 0.5)  # the schedule scales both groups alike
        assert groups[False]["lr"] == pytest.approx(0.8) and groups[True]["lr"] == pytest.approx(0.0192)


# ----------------------------------------------------------------------------- W-MSE


def correlated(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) @ torch.randn(d, d, generator=g) + torch.randn(d, generator=g)


def wmse_reference(views: list[torch.Tensor], perm: torch.Tensor, w_size: int) -> float:
    """One W-MSE iteration written out: sub-batch loops, explicit inverse of the Cholesky factor, float64."""
    n = len(views[0])
    whitened = [torch.empty(n, views[0].shape[1], dtype=torch.float64) for _ in views]
    for idx in perm.view(-1, w_size):
        for v, z in enumerate(views):
            x = z[idx].double()
            centred = x - x.mean(0)
            cov = centred.T @ centred / (len(idx) - 1)
            W = torch.linalg.inv(torch.linalg.cholesky(cov))
            whitened[v][idx] = centred @ W.T
    pairs = [(i, j) for i in range(len(views)) for j in range(i + 1, len(views))]
    total = sum(float(2 - 2 * F.cosine_similarity(whitened[i], whitened[j], dim=1).mean()) for i, j in pairs)
    return total / len(pairs)


class TestWhitening:
    def test_whitened_sub_batch_has_zero_mean_and_identity_covariance(self):
        z = correlated(64, 5, seed=8)
        w = whiten(z)
        assert torch.allclose(w.mean(0), torch.zeros(5), atol=1e-5)
        assert torch.allclose(torch.cov(w.T), torch.eye(5), atol=1e-4)  # unbiased covariance

    def test_cholesky_whitening_is_lower_triangular(self):
        # W = L^-1 is lower triangular: the first coordinate is only standardised (unbiased std)
        z = correlated(32, 3, seed=9)
        first = (z[:, 0] - z[:, 0].mean()) / z[:, 0].std()
        assert torch.allclose(whiten(z)[:, 0], first, atol=1e-5)

    def test_batched_sub_batches_equal_separate_calls(self):
        z = correlated(3 * 16, 4, seed=10).view(3, 16, 4)
        batched = whiten(z)
        for g in range(3):
            assert torch.allclose(batched[g], whiten(z[g]), atol=1e-5)

    def test_shrinkage(self):
        z = correlated(16, 3, seed=11)
        eps = 0.3
        w = whiten(z, eps)
        cov = torch.cov(z.T)
        W = torch.linalg.inv(torch.linalg.cholesky((1 - eps) * cov + eps * torch.eye(3)))
        assert torch.allclose(w, (z - z.mean(0)) @ W.T, atol=1e-4)
        assert not torch.allclose(torch.cov(w.T), torch.eye(3), atol=1e-2)  # shrinkage: no longer white

    def test_float32_under_autocast(self):
        views = [correlated(32, 4, seed=s) for s in (23, 24)]
        expected = wmse(views, 16, generator=torch.Generator().manual_seed(0))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            inside = wmse(views, 16, generator=torch.Generator().manual_seed(0))
        assert inside.dtype == torch.float32 and inside.item() == pytest.approx(expected.item(), rel=1e-6)

    def test_collapsed_embeddings_give_a_clear_error(self):
        with pytest.raises(ValueError, match="not positive definite"):
            whiten(torch.ones(16, 3))


class TestWMSELoss:
    def test_hand_computed_one_dimensional_cases(self):
        # D = 1: whitening standardises, normalising keeps the sign, loss = 2 - 2 mean(sign a * sign b)
        a = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
        assert wmse([a, torch.tensor([[1.0], [2.0], [3.0], [5.0]])], w_size=4).item() == pytest.approx(0.0, abs=1e-6)
        assert wmse([a, torch.tensor([[4.0], [3.0], [2.0], [1.0]])], w_size=4).item() == pytest.approx(4.0)
        assert wmse([a, torch.tensor([[1.0], [4.0], [2.0], [3.0]])], w_size=4).item() == pytest.approx(2.0)

    def test_matches_the_explicit_reference_with_the_same_permutation(self):
        views = [correlated(24, 3, seed=s) for s in (12, 13, 14)]  # 3 views: 3 pairs
        loss = wmse(views, w_size=8, generator=torch.Generator().manual_seed(0))
        perm = torch.randperm(24, generator=torch.Generator().manual_seed(0))
        assert loss.item() == pytest.approx(wmse_reference(views, perm, 8), rel=1e-5)

    def test_iterations_average_over_permutations(self):
        views = [correlated(24, 3, seed=s) for s in (15, 16)]
        g = torch.Generator().manual_seed(1)
        perms = [torch.randperm(24, generator=g) for _ in range(3)]
        expected = sum(wmse_reference(views, p, 8) for p in perms) / 3
        loss = wmse(views, w_size=8, w_iter=3, generator=torch.Generator().manual_seed(1))
        assert loss.item() == pytest.approx(expected, rel=1e-5)

    def test_invariant_to_a_shift_of_each_view(self):
        # whitening removes the sub-batch mean: why the head's last layer needs no bias
        views = [correlated(16, 3, seed=s) for s in (21, 22)]
        shifted = [views[0] + torch.tensor([1.0, -2.0, 3.0]), views[1] - 5.0]
        assert wmse(shifted, 8, generator=torch.Generator().manual_seed(2)).item() == pytest.approx(
            wmse(views, 8, generator=torch.Generator().manual_seed(2)).item(), rel=1e-4
        )

    def test_plain_mse_variant(self):
        views = [correlated(16, 2, seed=s) for s in (17, 18)]
        loss = wmse(views, w_size=16, normalize=False)
        assert loss.item() == pytest.approx(F.mse_loss(whiten(views[0]), whiten(views[1])).item(), rel=1e-5)
        assert normalized_mse(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 3.0]])).item() == pytest.approx(2.0)

    def test_gradient_flows_through_the_whitening(self):
        z1 = correlated(8, 2, seed=19).double().requires_grad_(True)
        z2 = correlated(8, 2, seed=20).double().requires_grad_(True)
        g = torch.Generator()
        assert torch.autograd.gradcheck(lambda a, b: wmse([a, b], 8, generator=g.manual_seed(0)), (z1, z2))
        # and it differs from treating the whitening matrix as a constant
        wmse([z1, z2], 8).backward()
        x = z1.detach() - z1.detach().mean(0)
        W = torch.linalg.inv(torch.linalg.cholesky(x.T @ x / 7)).detach()
        z1c = z1.detach().clone().requires_grad_(True)
        b = whiten(z2.detach())
        (2 - 2 * F.cosine_similarity((z1c - z1c.mean(0)) @ W.T, b, dim=1).mean()).backward()
        assert not torch.allclose(z1.grad, z1c.grad, atol=1e-4)

    def test_clear_errors(self):
        z = torch.randn(16, 8)
        with pytest.raises(ValueError, match="larger than the embedding dimension 8"):
            wmse([z, z], w_size=8)
        with pytest.raises(ValueError, match="fewer than w_size=32"):
            wmse([z, z], w_size=32)
        with pytest.raises(ValueError, match="multiple of w_size=12"):
            wmse([z, z], w_size=12)
        with pytest.raises(ValueError, match="pairs of views"):
            wmse([z], w_size=12)


class TestWMSEMethod:
    @pytest.mark.parametrize("views", [2, 4])
    def test_step_end_to_end(self, views):
        method = make("wmse", hidden_dim=32, latent_dim=2, w_size=4, num_samples=views)
        assert METHODS.get("wmse").num_views(method.args) == views
        out = method([images(8, 8, s) for s in range(views)], progress())
        assert torch.isfinite(out.loss) and 0 <= out.loss.item() <= 4
        assert out.embedding.shape == (8, 2)
        out.loss.backward()
        assert all(p.grad is not None for p in method.parameters())

    def test_clear_errors(self):
        with pytest.raises(ValueError, match="w_size=64 must be larger than latent_dim=64"):
            make("wmse", hidden_dim=32, latent_dim=64, w_size=64)
        with pytest.raises(ValueError, match="num_samples must be 2"):
            make("wmse", num_samples=3)
        method = make("wmse", hidden_dim=32, latent_dim=4, w_size=8, num_samples=4)
        with pytest.raises(ValueError, match="aug.num_views=4"):
            method([images(16), images(16, seed=1)], progress())
        method = make("wmse", hidden_dim=32, latent_dim=4, w_size=32)
        with pytest.raises(ValueError, match="fewer than w_size=32"):
            method([images(16), images(16, seed=1)], progress())

    def test_permutation_uses_the_global_rng(self):
        method = make("wmse", hidden_dim=32, latent_dim=4, w_size=8).eval()  # eval: BN without batch stats
        views = [images(16, 8, 0), images(16, 8, 1)]
        torch.manual_seed(123)
        a = method(views, progress()).loss
        torch.manual_seed(123)
        b = method(views, progress()).loss
        c = method(views, progress()).loss
        assert a.item() == b.item() and a.item() != c.item()


# ----------------------------------------------------------------------------- resume through the engine

RESUME_TINY = [
    "--backbone",
    "resnet10",
    "--batch-size",
    "16",
    "--epochs",
    "2",
    "--no-progress",
    "--set",
    "train_subset=64",
    "--set",
    "aug.image_size=16",
    "--set",
    "knn_every=0",
    "--set",
    "hidden_dim=32",
    "--set",
    "log_every=1",
    # two runs compared bitwise: the runtime choices are pinned (auto is measured afresh by each run)
    "--set",
    "precision=fp32",
    "--set",
    "channels_last=false",
]


@needs_fashion_mnist
@pytest.mark.parametrize(
    "method, sets",
    [
        # the queue (a buffer) fills at step 2 and is used from step 3; small crops through the real pipeline
        (
            "swav",
            [
                "latent_dim=8",
                "nmb_prototypes=10",
                "queue_length=32",
                "queue_start_epoch=0",
                "aug.small_crops=2",
                "aug.small_size=8",
            ],
        ),
        # the sub-batch permutations come from the global RNG, which the checkpoint carries
        ("wmse", ["latent_dim=4", "w_size=8"]),
    ],
)
def test_resume_equals_an_uninterrupted_run(tmp_path, method, sets):
    args = ["pretrain", "--method", method, *RESUME_TINY, *[x for kv in sets for x in ("--set", kv)]]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main([*args, "--out", str(straight)]) == 0
    assert main([*args, "--out", str(resumed), "--max-steps", "5"]) == 0
    assert main(["pretrain", "--out", str(resumed), "--resume", "--no-progress"]) == 0
    a, b = (RunFolder(run).read_checkpoint()["method"] for run in (straight, resumed))
    for key, tensor in a.items():
        assert torch.equal(tensor, b[key]), key
    losses = [
        [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
        for run in (straight, resumed)
    ]
    assert len(losses[0]) == 8 and losses[0] == pytest.approx(losses[1], rel=1e-6)


# ----------------------------------------------------------------------------- presets and the recipe table


@pytest.mark.parametrize("method", ["swav", "barlowtwins", "wmse"])
@pytest.mark.parametrize("preset", ["imagenet", "small", "cpu"])
def test_presets_resolve(method, preset):
    cfg = resolve_config(method, preset)
    assert isinstance(cfg, TrainConfig) and cfg.method == method
    cls = METHODS.get(method)
    args = cls.make_args(cfg.method_args)
    assert cfg.augment.num_views == cls.num_views(args)
    if method == "wmse":
        assert cfg.batch_size % args.w_size == 0 and args.w_size >= 2 * args.latent_dim


def test_recipe_rows_are_the_papers():
    swav_row = recipe_row("swav", "imagenet")
    row = (swav_row["batch_size"], swav_row["lr"], swav_row["weight_decay"], swav_row["epochs"])
    assert row == (4096, 4.8, 1e-6, 800)
    cfg = resolve_config("swav", "imagenet")
    assert not cfg.lars_exclude_1d and cfg.final_lr_ratio == 0.001
    assert cfg.lr * cfg.warmup_start_ratio == pytest.approx(0.3)
    assert (cfg.augment.small_crops, cfg.augment.small_size, cfg.augment.large_crop_scale) == (6, 96, (0.14, 1.0))
    barlow = recipe_row("barlowtwins", "imagenet")
    assert (barlow["latent_dim"], barlow["batch_size"], barlow["lr"], barlow["epochs"]) == (8192, 2048, 1.6, 1000)
    wmse_row = recipe_row("wmse", "imagenet")
    row = (wmse_row["latent_dim"], wmse_row["optimizer"], wmse_row["lr"], wmse_row["epochs"])
    assert row == (128, "Adam", 2e-3, 240)
    assert wmse_row["schedule"] == "step x0.2 at epochs 190, 215"
