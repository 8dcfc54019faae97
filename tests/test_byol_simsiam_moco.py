"""BYOL, SimSiam and MoCo v1/v2/v3: losses against hand-computed values, stop-gradients, the EMA and its
timing, SimSiam's fixed predictor LR, MoCo's queue, one end-to-end step each, and the presets."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm

from selfsup.cli.main import main
from selfsup.evaluation.collapse import embedding_std
from selfsup.losses import byol, byol_regression, moco_infonce, moco_v3_contrastive, negative_cosine, simsiam
from selfsup.methods import METHODS, Progress
from selfsup.methods.moco import enqueue
from selfsup.models import build_backbone
from selfsup.optim import apply_lr, build_optimizer
from selfsup.presets import recipe_row, resolve_config
from selfsup.run_folder import RunFolder
from tests.conftest import needs_fashion_mnist

TINY = {
    "byol": {"hidden_dim": 32, "pred_hidden_dim": 32, "latent_dim": 16},
    "simsiam": {"hidden_dim": 32, "pred_hidden_dim": 8, "latent_dim": 16},
    "moco-v1": {"version": "v1", "latent_dim": 16, "queue_size": 32, "temperature": 0.07},
    "moco-v2": {"version": "v2", "hidden_dim": 32, "latent_dim": 16, "queue_size": 32},
    "moco-v3": {"version": "v3", "hidden_dim": 32, "pred_hidden_dim": 32, "latent_dim": 16, "temperature": 1.0},
}


def build(name: str, eval_bn: bool = False, **extra) -> torch.nn.Module:
    torch.manual_seed(0)
    cls = METHODS.get(name.split("-")[0])
    method = cls(build_backbone("resnet10", "cifar", 3), cls.make_args({**TINY[name], **extra}))
    if eval_bn:  # per-sample forward passes, so that outputs can be recomputed exactly
        for module in method.modules():
            if isinstance(module, _BatchNorm):
                module.eval()
    return method


def views(batch: int = 8, seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 3, 16, 16, generator=g) for _ in range(2)]


def at(step: int, total: int = 100) -> Progress:
    return Progress(step, total, 0, total)


def perturb_online(method: torch.nn.Module) -> None:
    """Stand-in for an optimizer step: move every trainable parameter."""
    with torch.no_grad():
        for p in method.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn_like(p))


def target_pairs(method):
    for online_name in ("backbone", "projector"):
        online = getattr(method, online_name)
        target = getattr(method, f"momentum_{online_name}")
        yield from zip(online.parameters(), target.parameters())


# ----------------------------------------------------------------------------- BYOL and SimSiam losses


class TestBYOLLoss:
    def test_identical_inputs_give_the_minimum_zero(self):
        z = torch.randn(6, 5)
        assert byol(z, 2 * z, 3 * z, z).item() == pytest.approx(0.0, abs=1e-6)

    def test_hand_computed(self):
        # l = 2 - 2 cos: cos((1,0),(0,1)) = 0 -> 2; cos((1,0),(1,1)) = 1/sqrt2 -> 2 - sqrt2; opposite -> 4
        q = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
        z = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
        assert byol_regression(q, z).tolist() == pytest.approx([2.0, 2 - math.sqrt(2)], abs=1e-6)
        q1, q2 = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0]])
        z1, z2 = torch.tensor([[-3.0, 0.0]]), torch.tensor([[0.0, 2.0]])
        assert byol(q1, q2, z1, z2).item() == pytest.approx(2.0 + 4.0)  # l(q1, z2) + l(q2, z1), summed

    def test_batch_mean_of_the_symmetrised_sum(self):
        q1, q2, z1, z2 = (torch.randn(4, 3) for _ in range(4))
        per_sample = [byol(q1[i : i + 1], q2[i : i + 1], z1[i : i + 1], z2[i : i + 1]).item() for i in range(4)]
        assert byol(q1, q2, z1, z2).item() == pytest.approx(sum(per_sample) / 4, rel=1e-6)

    def test_no_gradient_reaches_the_target(self):
        q = torch.randn(4, 3, requires_grad=True)
        z = torch.randn(4, 3, requires_grad=True)
        byol(q, q, z, z).backward()
        assert z.grad is None and q.grad is not None and q.grad.abs().sum() > 0


class TestSimSiamLoss:
    def test_identical_inputs_give_the_minimum_minus_one(self):
        z = torch.randn(6, 5)
        assert simsiam(z, z, z, z).item() == pytest.approx(-1.0, abs=1e-6)

    def test_hand_computed(self):
        p1, z2 = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]])  # D = -1/sqrt2
        p2, z1 = torch.tensor([[0.0, 2.0]]), torch.tensor([[0.0, -1.0]])  # D = +1
        assert negative_cosine(p1, z2).item() == pytest.approx(-1 / math.sqrt(2), rel=1e-6)
        assert simsiam(p1, p2, z1, z2).item() == pytest.approx(0.5 * (-1 / math.sqrt(2)) + 0.5 * 1.0, rel=1e-6)

    def test_stop_gradient_on_z(self):
        p = torch.randn(4, 3, requires_grad=True)
        z = torch.randn(4, 3, requires_grad=True)
        simsiam(p, p, z, z).backward()
        assert z.grad is None and p.grad.abs().sum() > 0
        # the gradient on p is that of -cos(p, const): orthogonal to p (the cosine is scale invariant)
        assert (p.grad * p.detach()).sum(1).abs().max() < 1e-6


# ----------------------------------------------------------------------------- MoCo losses and queue


class TestMoCoLosses:
    def test_infonce_hand_computed(self):
        q, k = torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0, 0.0]])
        queue = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])  # logits [1, 0, -1] at T = 1
        expected = -math.log(math.e / (math.e + 1 + math.exp(-1)))
        assert moco_infonce(q, k, queue, temperature=1.0).item() == pytest.approx(expected, rel=1e-6)
        # T = 0.5 doubles the logits
        expected = -math.log(math.exp(2) / (math.exp(2) + 1 + math.exp(-2)))
        assert moco_infonce(q, k, queue, temperature=0.5).item() == pytest.approx(expected, rel=1e-6)

    def test_infonce_matches_a_reference_loop(self):
        g = torch.Generator().manual_seed(0)
        q, k = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
        queue = F.normalize(torch.randn(7, 4, generator=g), dim=1)
        qn, kn = F.normalize(q.double(), dim=1), F.normalize(k.double(), dim=1)
        losses = []
        for i in range(5):
            pos = math.exp(float(qn[i] @ kn[i]) / 0.2)
            neg = sum(math.exp(float(qn[i] @ queue[j].double()) / 0.2) for j in range(7))
            losses.append(-math.log(pos / (pos + neg)))
        assert moco_infonce(q, k, queue, 0.2).item() == pytest.approx(sum(losses) / 5, rel=1e-5)

    def test_infonce_keys_and_queue_get_no_gradient(self):
        q = torch.randn(3, 4, requires_grad=True)
        k = torch.randn(3, 4, requires_grad=True)
        queue = F.normalize(torch.randn(6, 4), dim=1).requires_grad_()
        moco_infonce(q, k, queue, 0.2).backward()
        assert k.grad is None and queue.grad is None and q.grad.abs().sum() > 0

    def test_v3_is_cross_entropy_scaled_by_two_tau(self):
        z = torch.eye(2)
        # logits [[1/T, 0], [0, 1/T]], label = own index
        for tau in (0.2, 0.5, 1.0):
            expected = 2 * tau * math.log(1 + math.exp(-1 / tau))
            assert moco_v3_contrastive(z, z, tau).item() == pytest.approx(expected, rel=1e-6)
        q, k = torch.randn(6, 5), torch.randn(6, 5)
        ce = F.cross_entropy(F.normalize(q, dim=1) @ F.normalize(k, dim=1).T / 0.2, torch.arange(6))
        assert moco_v3_contrastive(q, k, 0.2).item() == pytest.approx(0.4 * ce.item(), rel=1e-5)

    def test_v3_method_loss_is_the_symmetric_sum(self):
        method = build("moco-v3", eval_bn=True)
        x1, x2 = views()
        out = method(views(), at(0))
        q1 = method.predictor(method.project(method.backbone(x1)))
        q2 = method.predictor(method.project(method.backbone(x2)))
        k1, k2 = method.encode_keys(x1), method.encode_keys(x2)
        expected = moco_v3_contrastive(q1, k2, 1.0) + moco_v3_contrastive(q2, k1, 1.0)
        assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("loss", ["byol", "simsiam", "moco_infonce", "moco_v3"])
def test_losses_stay_in_float32_under_autocast(loss):
    g = torch.Generator().manual_seed(0)
    a, b, c, d = (torch.randn(16, 32, generator=g) for _ in range(4))
    queue = F.normalize(torch.randn(64, 32, generator=g), dim=1)
    fn = {
        "byol": lambda: byol(a, b, c, d),
        "simsiam": lambda: simsiam(a, b, c, d),
        "moco_infonce": lambda: moco_infonce(a, b, queue, 0.07),
        "moco_v3": lambda: moco_v3_contrastive(a, b, 0.2),
    }
    reference = fn[loss]()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = fn[loss]()
    assert value.dtype == torch.float32 and value.item() == pytest.approx(reference.item(), rel=1e-6)


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
        method = build("moco-v2", queue_size=12)
        with pytest.raises(ValueError, match=r"queue_size \(12\).*\(8: the global batch"):
            method(views(), at(0))

    def test_symmetric_enqueues_both_views(self):
        method = build("moco-v2", eval_bn=True, symmetric=True)
        x1, x2 = views()
        method(views(), at(0))
        assert int(method.queue_ptr) == 16
        expected = torch.cat([method.encode_keys(x2), method.encode_keys(x1)])
        torch.testing.assert_close(method.queue[:16], expected, rtol=1e-5, atol=1e-6)

    def test_queue_is_in_the_checkpoint(self):
        method = build("moco-v1")
        method(views(), at(0))
        state = method.state_dict()
        assert {"queue", "queue_ptr"} <= set(state) and int(state["queue_ptr"]) == 8
        fresh = build("moco-v1")
        assert not torch.equal(fresh.queue, method.queue)
        fresh.load_state_dict(state)
        assert torch.equal(fresh.queue, method.queue) and int(fresh.queue_ptr) == 8

    def test_initial_queue_is_unit_norm_and_v3_has_none(self):
        assert build("moco-v2").queue.norm(dim=1).sub(1).abs().max() < 1e-5
        assert not hasattr(build("moco-v3"), "queue")


# ----------------------------------------------------------------------------- EMA and its timing


class TestMomentum:
    def test_ema_formula(self):
        method = build("byol")
        perturb_online(method)
        before = [(p.clone(), t.clone()) for p, t in target_pairs(method)]
        method.momentum_update(0.9)
        for (p, t_old), (_, t_new) in zip(before, target_pairs(method)):
            torch.testing.assert_close(t_new, 0.9 * t_old + 0.1 * p)

    def test_cosine_schedule_start_middle_end(self):
        byol_method = build("byol", momentum_base=0.996)
        assert byol_method.momentum_at(at(0, 1000)) == pytest.approx(0.996)
        assert byol_method.momentum_at(at(500, 1000)) == pytest.approx(0.998)
        assert byol_method.momentum_at(at(1000, 1000)) == pytest.approx(1.0)
        v3 = build("moco-v3", momentum_base=0.99, momentum_cosine=True)
        assert [v3.momentum_at(at(s, 1000)) for s in (0, 500, 1000)] == pytest.approx([0.99, 0.995, 1.0])
        v1 = build("moco-v1", momentum_base=0.999, momentum_cosine=False)
        assert v1.momentum_at(at(500, 1000)) == v1.momentum_at(at(0, 1000)) == pytest.approx(0.999)

    def test_byol_updates_the_target_after_the_optimizer_step(self):
        method = build("byol", momentum_base=0.9)
        perturb_online(method)  # online != target
        targets = [t.clone() for _, t in target_pairs(method)]
        method(views(), at(0)).loss.backward()
        assert all(torch.equal(t, t_old) for (_, t), t_old in zip(target_pairs(method), targets))
        method.after_optimizer_step(at(0))
        for (p, t), t_old in zip(target_pairs(method), targets):
            torch.testing.assert_close(t, 0.9 * t_old + 0.1 * p)

    @pytest.mark.parametrize("name", ["moco-v1", "moco-v2"])
    def test_moco_updates_the_key_encoder_before_the_keys(self, name):
        method = build(name, eval_bn=True, momentum_base=0.5, momentum_cosine=False)
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
        method = build("byol")
        assert not hasattr(method, "momentum_predictor")
        assert all(not p.requires_grad for p in method.momentum_backbone.parameters())


# ----------------------------------------------------------------------------- SimSiam's fixed predictor LR


@pytest.mark.parametrize("fix", [True, False])
def test_simsiam_predictor_lr_stays_at_the_peak(fix):
    method = build("simsiam", fix_pred_lr=fix)
    cfg = resolve_config("simsiam", "imagenet")
    optimizer = build_optimizer(method.parameter_groups(), cfg)
    apply_lr(optimizer, cfg.lr, 0.25)
    predictor = {id(p) for p in method.predictor.parameters()}
    for group in optimizer.param_groups:
        is_predictor = all(id(p) in predictor for p in group["params"])
        expected = cfg.lr if (fix and is_predictor) else 0.25 * cfg.lr
        assert group["lr"] == pytest.approx(expected)
    assert cfg.lr == pytest.approx(0.1)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == sum(
        1 for p in method.parameters() if p.requires_grad
    )


# ----------------------------------------------------------------------------- end to end, heads, presets


@pytest.mark.parametrize("name", list(TINY))
def test_one_training_step_end_to_end(name):
    method = build(name)
    out = method(views(), at(3))
    assert torch.isfinite(out.loss) and out.embedding.shape == (8, 16)
    assert 0 < embedding_std(out.embedding) <= 1  # the engine logs it as z_std
    out.loss.backward()
    assert method.backbone.net.conv1.weight.grad.abs().sum() > 0
    targets = [m for n, m in method.named_children() if n.startswith("momentum_")]
    assert all(p.grad is None for m in targets for p in m.parameters())


def test_heads_follow_the_official_code():
    d = 512
    byol_m = build("byol")
    assert [type(m).__name__ for m in byol_m.projector] == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert byol_m.projector[0].bias is not None and byol_m.projector[3].bias is None
    simsiam_m = build("simsiam", projector_layers=3)
    linears = [m for m in simsiam_m.projector if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 3 and all(m.bias is None for m in linears)
    assert not simsiam_m.projector[-1].affine  # BN(affine=False) ends the projector
    assert simsiam_m.predictor[0].bias is None and simsiam_m.predictor[-1].bias is not None
    v1, v2, v3 = build("moco-v1"), build("moco-v2"), build("moco-v3")
    assert len(v1.projector) == 1 and v1.projector[0].in_features == d
    assert [type(m).__name__ for m in v2.projector] == ["Linear", "ReLU", "Linear"]
    assert all(m.bias is None for m in v3.modules() if isinstance(m, torch.nn.Linear))
    assert isinstance(v3.projector[-1], torch.nn.BatchNorm1d) and not v3.projector[-1].affine
    assert not isinstance(v3.predictor[-1], torch.nn.BatchNorm1d)


def test_presets_resolve_with_the_papers_recipes():
    v3 = resolve_config("moco-v3", "imagenet")
    assert (v3.method_args["version"], v3.method_args["temperature"], v3.optimizer, v3.batch_size) == (
        "v3",
        1.0,
        "lars",
        4096,
    )
    assert v3.lr == pytest.approx(9.6) and v3.weight_decay == 1e-6 and v3.warmup_epochs == 10
    assert v3.augment.crop_scale == (0.2, 1.0) and v3.augment.blur_prob == (1.0, 0.1)
    assert v3.augment.solarize_prob == (0.0, 0.2) and v3.method_args["momentum_cosine"]
    v1 = resolve_config("moco-v1", "imagenet")
    assert (v1.method_args["version"], v1.method_args["temperature"], v1.method_args["queue_size"]) == (
        "v1",
        0.07,
        65536,
    )
    assert (v1.schedule, v1.lr_milestones, v1.optimizer, v1.lr, v1.weight_decay) == (
        "step",
        (120, 160),
        "sgd",
        0.03,
        1e-4,
    )
    assert v1.augment.jitter_prob == (1.0,) and v1.augment.hue == 0.4 and v1.augment.blur_prob == (0.0,)
    v2 = resolve_config("moco-v2", "imagenet")
    assert resolve_config("moco", "imagenet") == v2  # `moco` alone is v2
    assert (v2.method_args["temperature"], v2.schedule, v2.warmup_epochs, v2.schedule_per_step) == (
        0.2,
        "warmup_cosine",
        0,
        False,
    )
    assert v2.augment.blur_prob == (0.5,) and v2.augment.jitter_prob == (0.8,) and v2.augment.hue == 0.1
    b = resolve_config("byol", "imagenet")
    assert (b.lr, b.weight_decay, b.batch_size, b.epochs, b.method_args["momentum_base"]) == (
        pytest.approx(3.2),
        1.5e-6,
        4096,
        1000,
        0.996,
    )
    assert b.augment.blur_prob == (1.0, 0.1) and b.augment.solarize_prob == (0.0, 0.2)
    s = resolve_config("simsiam", "imagenet")
    assert (s.optimizer, s.lr, s.weight_decay, s.warmup_epochs, s.schedule_per_step, s.epochs) == (
        "sgd",
        pytest.approx(0.1),
        1e-4,
        0,
        False,
        100,
    )
    assert s.zero_init_residual and s.method_args["fix_pred_lr"]


@pytest.mark.parametrize("preset", ["imagenet", "small", "cpu"])
def test_every_preset_resolves_and_moco_queues_fit_the_batch(preset):
    for name in ("byol", "simsiam", "moco", "moco-v1", "moco-v2", "moco-v3"):
        cfg = resolve_config(name, preset)
        recipe_row(name, preset)
        args = cfg.method_args
        if name.startswith("moco") and args["version"] != "v3":
            per_step = cfg.batch_size * (2 if args["symmetric"] else 1)
            assert args["queue_size"] % per_step == 0, (name, preset)


def test_methods_table_lists_the_five_recipes(capsys):
    assert main(["methods", "--preset", "imagenet"]) == 0
    rows = {
        line.split("|")[0].strip(): [c.strip() for c in line.split("|")]
        for line in capsys.readouterr().out.splitlines()[3:]
    }
    assert rows["moco-v1"][1:] == ["128", "256", "SGD", "0.03", "0.0001", "step x0.1 at epochs 120, 160", "200"]
    assert rows["moco-v2"][1:] == ["128", "256", "SGD", "0.03", "0.0001", "cosine decay", "200"]
    assert rows["moco-v3"][1:] == ["256", "4096", "LARS", "9.6", "1e-06", "linear warmup, cosine decay", "100"]
    assert rows["byol"][1:] == ["256", "4096", "LARS", "3.2", "1.5e-06", "linear warmup, cosine decay", "1000"]
    assert rows["simsiam"][1:] == ["2048", "512", "SGD", "0.1", "0.0001", "cosine decay", "100"]
    assert "moco" not in rows  # the variants replace the bare name in the table


@needs_fashion_mnist
def test_moco_resume_carries_the_queue_and_the_key_encoder(tmp_path):
    """Stopping after 6 of 8 steps (mid second epoch) and resuming gives the same weights, key encoder and queue."""
    flags = [
        "pretrain",
        "--method",
        "moco-v2",
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
        "latent_dim=16",
        "--set",
        "queue_size=32",
        "--set",
        "log_every=1",
        # two runs compared bitwise: the runtime choices are pinned (auto is measured afresh by each run)
        "--set",
        "precision=fp32",
        "--set",
        "channels_last=false",
    ]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main([*flags, "--out", str(straight)]) == 0
    assert main([*flags, "--out", str(resumed), "--max-steps", "6"]) == 0
    assert main(["pretrain", "--out", str(resumed), "--resume", "--no-progress"]) == 0
    a = RunFolder(straight).read_checkpoint()["method"]
    b = RunFolder(resumed).read_checkpoint()["method"]
    assert int(a["queue_ptr"]) == (8 * 16) % 32
    for key in a:
        assert torch.equal(a[key], b[key]), key
