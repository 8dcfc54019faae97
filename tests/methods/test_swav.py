"""SwAV: prototypes, their freezing and normalisation, the queue, multi-crop."""

from __future__ import annotations

import math

import pytest
import torch

import selfsup.methods.swav as swav_module
from selfsup.losses import (
    swav,
)
from tests.helpers import (
    images,
    make_method,
    progress,
)

SWAV_TINY = {"hidden_dim": 32, "latent_dim": 8, "nmb_prototypes": 6}


class TestSwAVMethod:
    def test_prototypes_are_normalised_each_step_and_frozen_for_the_first_epochs(self):
        method = make_method("swav", **SWAV_TINY, freeze_prototypes_epochs=1.5)
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
        method = make_method("swav", **SWAV_TINY)
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
            make_method("swav", **SWAV_TINY, crops_for_assign=(0, 2))([images(), images()], progress())

    def test_queue_fills_newest_first_and_is_used_once_full(self):
        method = make_method("swav", **SWAV_TINY, queue_length=20, queue_start_epoch=1)
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
        with_queue = make_method("swav", **soft, queue_length=8, queue_start_epoch=0)
        without = make_method("swav", **soft)
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
        method = make_method("swav", **SWAV_TINY, queue_length=4, queue_start_epoch=0)
        with pytest.raises(ValueError, match="queue_length=4"):
            method([images(), images(seed=1)], progress())


class TestSwAVPrototypeScores:
    def test_scores_fed_to_the_loss_are_float32_under_bf16_autocast(self, monkeypatch):
        """Under CPU bf16 autocast, the scores the step hands to the loss are float32 and equal z Cᵀ computed
        without autocast; the prototype layer run under autocast (the negative control) gives bf16 scores
        that are visibly off."""
        method = make_method("swav", **SWAV_TINY)
        views = [images(8, 8, 0), images(8, 8, 1)]
        g = torch.Generator().manual_seed(5)
        z = torch.nn.functional.normalize(torch.randn(16, 8, generator=g), dim=1)  # float32 unit embeddings
        monkeypatch.setattr(method, "embed_crops", lambda crops: z)
        seen: list[torch.Tensor] = []

        def capture(scores, *args, **kwargs):
            seen.extend(s.detach() for s in scores)
            return swav(scores, *args, **kwargs)

        monkeypatch.setattr(swav_module, "swav", capture)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            method(views, progress())
            in_layer = method.prototypes(z)  # what the step computed before: the layer under autocast
        expected = z @ method.prototypes.weight.detach().T  # no autocast: float32
        assert [s.dtype for s in seen] == [torch.float32, torch.float32]
        assert torch.allclose(torch.cat(seen), expected, rtol=0, atol=1e-6)
        assert in_layer.dtype == torch.bfloat16
        assert (in_layer.float() - expected).abs().max() > 1e-4  # bf16 rounding, which the float32 path avoids

    def test_queue_scores_are_float32_under_bf16_autocast(self):
        method = make_method("swav", **SWAV_TINY, queue_length=8, queue_start_epoch=0)
        with torch.no_grad():
            method.queue.copy_(torch.nn.functional.normalize(torch.randn(2, 8, 8), dim=2))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            scores = method.queue_scores(8)
        assert scores is not None
        for i, s in enumerate(scores):
            assert s is not None and s.dtype == torch.float32
            assert torch.allclose(s, method.queue[i] @ method.prototypes.weight.T, rtol=0, atol=1e-6)
