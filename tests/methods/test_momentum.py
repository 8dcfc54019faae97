"""The EMA targets of the momentum methods: the update, its timing and the cosine schedule of tau."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import (
    at,
    perturb_online,
    target_pairs,
    tiny_method,
    views,
)


class TestMomentum:
    def test_ema_formula(self):
        method = tiny_method("byol")
        perturb_online(method)
        before = [(p.clone(), t.clone()) for p, t in target_pairs(method)]
        method.momentum_update(0.9)
        for (p, t_old), (_, t_new) in zip(before, target_pairs(method)):
            torch.testing.assert_close(t_new, 0.9 * t_old + 0.1 * p)

    def test_cosine_schedule_start_middle_end(self):
        byol_method = tiny_method("byol", momentum_base=0.996)
        assert byol_method.momentum_at(at(0, 1000)) == pytest.approx(0.996)
        assert byol_method.momentum_at(at(500, 1000)) == pytest.approx(0.998)
        assert byol_method.momentum_at(at(1000, 1000)) == pytest.approx(1.0)
        v3 = tiny_method("moco-v3", momentum_base=0.99, momentum_cosine=True)
        assert [v3.momentum_at(at(s, 1000)) for s in (0, 500, 1000)] == pytest.approx([0.99, 0.995, 1.0])
        v1 = tiny_method("moco-v1", momentum_base=0.999, momentum_cosine=False)
        assert v1.momentum_at(at(500, 1000)) == v1.momentum_at(at(0, 1000)) == pytest.approx(0.999)

    def test_byol_updates_the_target_after_the_optimizer_step(self):
        method = tiny_method("byol", momentum_base=0.9)
        perturb_online(method)  # online != target
        targets = [t.clone() for _, t in target_pairs(method)]
        method(views(), at(0)).loss.backward()
        assert all(torch.equal(t, t_old) for (_, t), t_old in zip(target_pairs(method), targets))
        method.after_optimizer_step(at(0))
        for (p, t), t_old in zip(target_pairs(method), targets):
            torch.testing.assert_close(t, 0.9 * t_old + 0.1 * p)

    @pytest.mark.parametrize("name", ["moco-v1", "moco-v2"])
    def test_moco_updates_the_key_encoder_before_the_keys(self, name):
        method = tiny_method(name, eval_bn=True, momentum_base=0.5, momentum_cosine=False)
        perturb_online(method)
        targets = [t.clone() for _, t in target_pairs(method)]
        x1, x2 = views()
        method(views(), at(0))
        updated = [t.clone() for _, t in target_pairs(method)]
        for (p, t), t_old in zip(target_pairs(method), targets):
            torch.testing.assert_close(t, 0.5 * t_old + 0.5 * p)
        # the enqueued keys come from the *updated* key encoder
        torch.testing.assert_close(method.queue[:8], method.encode_keys(x2), rtol=1e-5, atol=1e-6)
        method.after_optimizer_step(at(0))  # the engine's hook must not update a second time
        assert all(torch.equal(t, u) for (_, t), u in zip(target_pairs(method), updated))

    def test_predictor_is_not_in_the_target(self):
        method = tiny_method("byol")
        assert not hasattr(method, "momentum_predictor")
        assert all(not p.requires_grad for p in method.momentum_backbone.parameters())
