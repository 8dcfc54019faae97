"""MoCo: the queue, and Shuffle-BN in one process (split-batch BN over groups of the shuffled key batch)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from selfsup.config import ConfigError, TrainConfig
from selfsup.methods.moco import MoCo, _shared_permutation, enqueue
from tests.helpers import (
    at,
    tiny_method,
    views,
)


class TestQueue:
    def test_fifo_and_pointer_wrap_around(self):
        queue, ptr = torch.zeros(4, 2), torch.zeros(1, dtype=torch.long)
        a, b, c = torch.full((2, 2), 1.0), torch.full((2, 2), 2.0), torch.full((2, 2), 3.0)
        enqueue(queue, ptr, a)
        assert queue[:2].eq(1).all() and queue[2:].eq(0).all() and int(ptr) == 2
        enqueue(queue, ptr, b)
        assert queue[2:].eq(2).all() and int(ptr) == 0  # wrapped around
        enqueue(queue, ptr, c)  # overwrites the oldest entries (a), keeps b
        assert queue[:2].eq(3).all() and queue[2:].eq(2).all() and int(ptr) == 2

    def test_queue_size_must_be_divisible_by_the_keys_per_step(self):
        with pytest.raises(ValueError, match="multiple of the number of keys enqueued per step"):
            enqueue(torch.zeros(5, 2), torch.zeros(1, dtype=torch.long), torch.zeros(2, 2))
        method = tiny_method("moco-v2", queue_size=12)
        with pytest.raises(ValueError, match=r"queue_size \(12\).*\(8: the global batch"):
            method(views(), at(0))

    def test_symmetric_enqueues_both_views(self):
        method = tiny_method("moco-v2", eval_bn=True, symmetric=True)
        x1, x2 = views()
        method(views(), at(0))
        assert int(method.queue_ptr) == 16
        expected = torch.cat([method.encode_keys(x2), method.encode_keys(x1)])
        torch.testing.assert_close(method.queue[:16], expected, rtol=1e-5, atol=1e-6)

    def test_queue_is_in_the_checkpoint(self):
        method = tiny_method("moco-v1")
        method(views(), at(0))
        state = method.state_dict()
        assert {"queue", "queue_ptr"} <= set(state) and int(state["queue_ptr"]) == 8
        fresh = tiny_method("moco-v1")
        assert not torch.equal(fresh.queue, method.queue)
        fresh.load_state_dict(state)
        assert torch.equal(fresh.queue, method.queue) and int(fresh.queue_ptr) == 8

    def test_initial_queue_is_unit_norm_and_v3_has_none(self):
        assert tiny_method("moco-v2").queue.norm(dim=1).sub(1).abs().max() < 1e-5
        assert not hasattr(tiny_method("moco-v3"), "queue")


class TestShuffleBatchNormInOneProcess:
    """The official CIFAR-10 demo's emulation of 8 GPUs: queries normalised per contiguous group, keys per
    group of the shuffled batch (``shuffle_bn_groups=2`` in the tiny configuration)."""

    def test_keys_are_encoded_per_group_of_the_shuffled_batch(self):
        method = tiny_method("moco-v2")
        reference = copy.deepcopy(method)  # outside the split block its BatchNorms are ordinary ones
        x = views()[1]
        keys = method.encode_keys(x, seed=5)
        perm = _shared_permutation(8, 5, x.device)
        shuffled = x[perm]
        with torch.no_grad():
            k = torch.cat([reference._key_encoder(shuffled[:4]), reference._key_encoder(shuffled[4:])])
        torch.testing.assert_close(keys, F.normalize(k[torch.argsort(perm)], dim=1), rtol=1e-5, atol=1e-6)
        whole = F.normalize(reference._key_encoder(x), dim=1)
        assert (keys - whole).abs().max() > 1e-3  # not the statistics of the whole batch

    def test_queries_are_normalised_per_contiguous_group(self):
        method = tiny_method("moco-v1")
        reference = copy.deepcopy(method)
        x = views()[0]
        halves = [reference.project(reference.backbone(half)) for half in (x[:4], x[4:])]
        expected = torch.cat(halves)
        torch.testing.assert_close(method._queries(x), expected, rtol=1e-5, atol=1e-6)

    def test_shuffle_bn_off_uses_the_whole_batch(self):
        method = tiny_method("moco-v2", shuffle_bn=False)
        reference = copy.deepcopy(method)
        x = views()[1]
        with torch.no_grad():
            expected = F.normalize(reference._key_encoder(x), dim=1)
        torch.testing.assert_close(method.encode_keys(x, seed=5), expected, rtol=1e-5, atol=1e-6)

    def test_a_batch_that_does_not_split_into_the_groups_is_refused_before_training(self):
        args = MoCo.make_args({"version": "v2", "shuffle_bn_groups": 8})
        MoCo.check_config(args, TrainConfig(batch_size=256))
        with pytest.raises(ConfigError, match="shuffle_bn_groups=8 groups: batch_size=12"):
            MoCo.check_config(args, TrainConfig(batch_size=12))
        MoCo.check_config(MoCo.make_args({"version": "v3", "shuffle_bn_groups": 8}), TrainConfig(batch_size=12))
