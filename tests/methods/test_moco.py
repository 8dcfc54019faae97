"""MoCo: the queue."""

from __future__ import annotations

import pytest
import torch

from selfsup.methods.moco import enqueue
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
