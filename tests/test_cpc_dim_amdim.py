"""CPC v2, Deep InfoMax and AMDIM: causality, patch independence, the MI estimators on hand-computed
cases, InfoNCE's log N bound, AMDIM's clipping and penalty, end-to-end steps, presets and resume."""

from __future__ import annotations

import json
import math

import pytest
import torch

from selfsup.augment import BatchedViewAugmenter
from selfsup.config import AugmentConfig
from selfsup.losses import (
    amdim_nce,
    amdim_terms,
    cpc_infonce,
    dv_mi_loss,
    infonce_lower_bound,
    jsd_mi_loss,
    local_global_mi_loss,
    nce_mi_loss,
    tanh_clip,
)
from selfsup.methods import METHODS, Progress
from selfsup.methods.cpc import extract_patches, orient
from selfsup.methods.dim import occlude
from selfsup.models import build_backbone
from selfsup.presets import recipe_table, resolve_config
from tests.conftest import needs_fashion_mnist

LOG2 = math.log(2.0)
PROGRESS = Progress(0, 10, 0, 10)


pytestmark = pytest.mark.usefixtures("one_thread")


def sp(x: float) -> float:
    return math.log1p(math.exp(x))


def make(method: str, backbone: str, args: dict | None = None, norm: str = "batch"):
    torch.manual_seed(0)
    cls = METHODS.get(method)
    return cls(build_backbone(backbone, "cifar", 3, norm=norm), cls.make_args(args or {}))


# ----------------------------------------------------------------------------- CPC: patches and causality


class TestCPCGrid:
    def test_patches_are_the_overlapping_crops_in_row_major_order(self):
        images = torch.randn(2, 3, 32, 32)
        patches, rows, cols = extract_patches(images, 8, 4)
        assert (rows, cols) == (7, 7) and patches.shape == (2 * 49, 3, 8, 8)
        assert extract_patches(torch.randn(1, 1, 28, 28), 8, 4)[1:] == (6, 6)
        assert extract_patches(torch.randn(1, 3, 256, 256), 64, 32)[1:] == (7, 7)
        grid = patches.reshape(2, 7, 7, 3, 8, 8)
        assert torch.equal(grid[1, 2, 5], images[1, :, 8:16, 20:28])
        assert torch.equal(grid[0, 6, 0], images[0, :, 24:32, 0:8])

    @pytest.mark.parametrize("direction", ["top_down", "bottom_up", "left_right", "right_left"])
    def test_context_is_causal_in_every_direction(self, direction):
        """d(prediction at oriented row i)/d(codes) is exactly zero on every row after i, and not zero on
        rows <= i: the context sees exactly the rows above and including its own."""
        cpc = make(
            "cpc",
            "patchnet-small",
            {"latent_dim": 8, "context_dim": 16, "max_offset": 3, "directions": (direction,)},
            norm="group",
        )
        codes = torch.randn(2, 5, 5, 8, requires_grad=True)
        _, predictions = cpc.context_predictions(codes, direction)
        for k_index, prediction in enumerate(predictions):
            for i in range(prediction.shape[1]):
                (grad,) = torch.autograd.grad(prediction[:, i].sum(), codes, retain_graph=True)
                oriented = orient(grad, direction)
                assert torch.count_nonzero(oriented[:, i + 1 :]) == 0, (direction, k_index, i)
                assert torch.count_nonzero(oriented[:, : i + 1]) > 0, (direction, k_index, i)

    def test_prediction_never_sees_the_pixels_of_its_target(self):
        """End to end from pixels: the prediction made at row i has zero gradient on every pixel row of the
        patches at rows >= i + 2 (the first predicted offset), but it does see pixels of the row-(i+1) patch,
        which overlaps its own by 50 % (why CPC starts at offset 2)."""
        cpc = make("cpc", "patchnet-small", {"latent_dim": 8, "context_dim": 16, "max_offset": 2}, norm="group")
        images = torch.randn(2, 3, 24, 24, requires_grad=True)  # 5x5 grid of 8 px patches, stride 4
        codes = cpc.code_head(cpc.patch_features(images, augment=False))
        _, (prediction,) = cpc.context_predictions(codes, "top_down")
        for i in range(prediction.shape[1]):
            (grad,) = torch.autograd.grad(prediction[:, i].sum(), images, retain_graph=True)
            target_top = 4 * (i + 2)
            assert torch.count_nonzero(grad[:, :, target_top:]) == 0, i
            assert torch.count_nonzero(grad[:, :, 4 * (i + 1) : target_top]) > 0, i

    @pytest.mark.parametrize("backbone", ["patchnet", "resnet10"])
    @pytest.mark.parametrize("norm", ["group", "layer"])
    def test_patches_are_encoded_independently_in_train_mode(self, backbone, norm):
        encoder = build_backbone(backbone, "cifar", 3, norm=norm).train()
        patches = torch.randn(12, 3, 8, 8)
        changed = patches.clone()
        changed[5] = torch.randn(3, 8, 8) * 5
        before, after = encoder(patches), encoder(changed)
        assert not torch.allclose(before[5], after[5])
        others = [i for i in range(12) if i != 5]
        assert torch.equal(before[others], after[others])

    def test_batchnorm_would_connect_patches_so_cpc_refuses_it(self):
        encoder = build_backbone("patchnet", "cifar", 3, norm="batch").train()
        patches = torch.randn(12, 3, 8, 8)
        changed = patches.clone()
        changed[5] += 5
        assert not torch.allclose(encoder(patches)[0], encoder(changed)[0])  # the negative control
        with pytest.raises(ValueError, match="norm=group"):
            make("cpc", "patchnet", norm="batch")

    def test_patch_augmentation_drops_two_colour_channels_and_flips(self):
        cpc = make("cpc", "patchnet-small", {"patch_flip_prob": 0.5}, norm="group")
        patches = torch.rand(400, 3, 8, 8) + 1  # strictly positive, so dropped channels are exactly 0
        torch.manual_seed(3)
        out = cpc.augment_patches(patches)
        kept = (out.abs().sum(dim=(2, 3)) > 0).sum(dim=1)
        assert torch.equal(kept, torch.ones(400, dtype=torch.long))
        channel = out.abs().sum(dim=(2, 3)).argmax(dim=1)
        rows = torch.arange(400)
        same = (out[rows, channel] == patches[rows, channel]).flatten(1).all(1)
        flipped = (out[rows, channel] == patches[rows, channel].flip(-1)).flatten(1).all(1)
        assert bool((same | flipped).all())
        assert 120 < int(flipped.sum()) < 280 and 80 < int((channel == 0).sum()) < 190
        grey = torch.rand(10, 1, 8, 8) + 1
        assert bool((cpc.augment_patches(grey).abs().sum(dim=(1, 2, 3)) > 0).all())  # nothing to drop


# ----------------------------------------------------------------------------- the estimators


class TestInfoNCE:
    def test_cpc_infonce_hand_computed(self):
        # one image, 3x1 grid, offset 2: the single prediction (row 0) has candidates z0, z1, z2, target z2
        codes = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]], [[1.0, 1.0]]]])
        prediction = torch.tensor([[[[2.0, 1.0]]]])
        scores = [2.0, 1.0, 3.0]
        expected = -(3.0 - math.log(sum(math.exp(s) for s in scores)))
        assert cpc_infonce(prediction, codes, 2).item() == pytest.approx(expected, rel=1e-6)

    def test_cpc_negatives_span_other_positions_and_other_images(self):
        g = torch.Generator().manual_seed(0)
        codes = torch.randn(3, 4, 2, 5, generator=g)
        predictions = torch.randn(3, 2, 2, 5, generator=g)
        flat = codes.reshape(-1, 5)
        losses = []
        for b in range(3):
            for i in range(2):
                for j in range(2):
                    logits = flat @ predictions[b, i, j]
                    target = b * 8 + (i + 2) * 2 + j
                    losses.append(-(logits[target] - torch.logsumexp(logits, 0)))
        assert cpc_infonce(predictions, codes, 2).item() == pytest.approx(torch.stack(losses).mean().item(), rel=1e-5)

    def test_sampled_negatives_mask_the_positive(self):
        codes = torch.eye(6).reshape(1, 6, 1, 6) * 4
        predictions = codes[:, 1:] * 1.0  # offset 1: each prediction equals its target code
        torch.manual_seed(0)
        loss = cpc_infonce(predictions, codes, 1, num_negatives=4)
        assert torch.isfinite(loss) and loss.item() < 0.1  # the positive (16) vs 4 negatives at 0 (or masked)

    def test_bound_never_exceeds_log_n_and_reaches_it_when_separable(self):
        g = torch.Generator().manual_seed(1)
        n_candidates = 2 * 4 * 3
        for scale in (0.1, 1.0, 10.0):
            codes = torch.randn(2, 4, 3, 6, generator=g) * scale
            predictions = torch.randn(2, 2, 3, 6, generator=g) * scale
            loss = cpc_infonce(predictions, codes, 2)
            assert loss.item() >= 0
            assert infonce_lower_bound(loss, n_candidates) <= math.log(n_candidates)
        codes = torch.eye(24).reshape(2, 4, 3, 24)  # orthonormal codes: perfectly separable
        loss = cpc_infonce(30 * codes[:, 2:], codes, 2)
        assert loss.item() < 1e-6
        assert infonce_lower_bound(loss, n_candidates) == pytest.approx(math.log(n_candidates), abs=1e-5)


class TestDIMEstimators:
    # T[i, j, l] = g_i * l_{j, l} with D = 1
    G = torch.tensor([[1.0], [2.0]])

    def test_jsd_hand_computed(self):
        local = torch.tensor([[[1.0]], [[-1.0]]])  # T = [[1, -1], [2, -2]]
        e_pos = ((LOG2 - sp(-1.0)) + (LOG2 - sp(2.0))) / 2  # T00 = 1, T11 = -2
        e_neg = ((sp(-1.0) - LOG2) + (sp(2.0) - LOG2)) / 2  # T01 = -1, T10 = 2
        assert jsd_mi_loss(local, self.G).item() == pytest.approx(e_neg - e_pos, rel=1e-6)

    def test_nce_hand_computed(self):
        local = torch.tensor([[[1.0], [0.5]], [[-1.0], [3.0]]])
        # image 0: positives (1, 0.5), negatives (-1, 3); image 1: positives (-2, 6), negatives (2, 1)
        terms = []
        for positives, negatives in (((1.0, 0.5), (-1.0, 3.0)), ((-2.0, 6.0), (2.0, 1.0))):
            for p in positives:
                terms.append(p - math.log(math.exp(p) + sum(math.exp(n) for n in negatives)))
        assert nce_mi_loss(local, self.G).item() == pytest.approx(-sum(terms) / 4, rel=1e-6)
        assert local_global_mi_loss(local, self.G, "nce").item() == pytest.approx(-sum(terms) / 4, rel=1e-6)

    def test_dv_hand_computed(self):
        local = torch.tensor([[[1.0], [0.5]], [[-1.0], [3.0]]])
        e_pos = (1.0 + 0.5 - 2.0 + 6.0) / 4
        e_neg = math.log(sum(math.exp(t) for t in (-1.0, 3.0, 2.0, 1.0)) / 4)
        assert dv_mi_loss(local, self.G).item() == pytest.approx(e_neg - e_pos, rel=1e-6)

    def test_raising_only_the_positive_scores_lowers_every_loss(self):
        g = torch.Generator().manual_seed(2)
        local, glob = torch.randn(4, 3, 5, generator=g), torch.eye(4, 5)  # orthonormal globals
        boosted = local + 0.5 * glob[:, None, :]  # g_i . l_j grows by 0.5 only when j = i
        for estimator in ("jsd", "nce", "dv"):
            assert local_global_mi_loss(boosted, glob, estimator) < local_global_mi_loss(local, glob, estimator)

    def test_nce_bound_is_at_most_log_n_and_reaches_it_when_separable(self):
        n, positions = 4, 3
        n_candidates = 1 + (n - 1) * positions
        g = torch.Generator().manual_seed(3)
        for _ in range(3):
            loss = nce_mi_loss(torch.randn(n, positions, 6, generator=g), torch.randn(n, 6, generator=g))
            assert loss.item() >= 0 and infonce_lower_bound(loss, n_candidates) <= math.log(n_candidates)
        glob = torch.eye(n) * 40
        local = torch.eye(n)[:, None, :].expand(n, positions, n)
        loss = nce_mi_loss(local, glob)
        assert infonce_lower_bound(loss, n_candidates) == pytest.approx(math.log(n_candidates), abs=1e-5)

    def test_rejects_bad_shapes_and_estimators(self):
        with pytest.raises(ValueError, match="at least 2"):
            jsd_mi_loss(torch.randn(1, 3, 4), torch.randn(1, 4))
        with pytest.raises(ValueError, match="Valid: jsd, nce, dv"):
            local_global_mi_loss(torch.randn(2, 3, 4), torch.randn(2, 4), "kl")


class TestAMDIMLoss:
    def test_tanh_clip(self):
        x = torch.tensor([-100.0, -1.0, 0.0, 0.5, 100.0])
        clipped = tanh_clip(x, 20.0)
        assert torch.allclose(clipped, 20 * torch.tanh(x / 20))
        assert clipped.abs().max() < 20 and clipped[2] == 0
        assert clipped[3].item() == pytest.approx(0.5, rel=1e-3)  # ~identity near 0
        assert torch.equal(tanh_clip(x, None), x)

    def test_clipping_and_penalty_hand_computed(self):
        # d = 4 (so raw = <s, t> / 2), 2 images, 2 locations each
        source = torch.tensor([[40.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0]])
        target = torch.tensor(
            [[[2.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]], [[0.0, 3.0, 0.0, 0.0], [-1.0, 0.0, 0.0, 0.0]]]
        )
        raw = [
            [[40.0, 20.0], [0.0, -20.0]],  # raw[i][j][l] = <s_i, t_jl> / 2
            [[0.0, 1.0], [3.0, 0.0]],
        ]
        c = 20.0
        clip = [[[c * math.tanh(r / c) for r in row] for row in image] for image in raw]
        terms = []
        for i in range(2):
            negatives = [s for j in range(2) if j != i for s in clip[i][j]]
            for p in clip[i][i]:
                terms.append(p - math.log(math.exp(p) + sum(math.exp(s) for s in negatives)))
        penalty = 0.05 * sum(r * r for image in raw for row in image for r in row) / 8
        loss, reg = amdim_nce(source, target, tclip=20.0, penalty=0.05)
        assert loss.item() == pytest.approx(-sum(terms) / 4, rel=1e-5)
        assert reg.item() == pytest.approx(penalty, rel=1e-6)
        unclipped, _ = amdim_nce(source, target, tclip=0.0, penalty=0.05)
        assert unclipped.item() != pytest.approx(loss.item(), rel=1e-3)  # the clip matters at raw = 40

    def test_terms_are_symmetric_in_the_two_views(self):
        g = torch.Generator().manual_seed(4)
        r1 = (torch.randn(3, 8, generator=g), torch.randn(3, 8, generator=g))
        r5 = (torch.randn(3, 25, 8, generator=g), torch.randn(3, 25, 8, generator=g))
        r7 = (torch.randn(3, 49, 8, generator=g), torch.randn(3, 49, 8, generator=g))
        locations = (torch.tensor([0, 7, 24]), torch.tensor([3, 3, 12]))
        ab = amdim_terms(r1, r5, r7, locations)
        ba = amdim_terms(r1[::-1], r5[::-1], r7[::-1], locations[::-1])
        for x, y in zip(ab, ba):
            assert x.item() == pytest.approx(y.item(), rel=1e-6)
        one_way, _ = amdim_nce(r5[0][torch.arange(3), locations[0]], r5[1])
        other_way, _ = amdim_nce(r5[1][torch.arange(3), locations[1]], r5[0])
        assert ab.local_5_to_5.item() == pytest.approx(0.5 * (one_way + other_way).item(), rel=1e-6)
        assert ab.total().item() == pytest.approx(sum(t.item() for t in ab), rel=1e-6)


# ----------------------------------------------------------------------------- encoders


class TestEncoders:
    def test_dim32_local_map_is_128_channels_8x8(self):
        dim = make("dim", "dim32", {"mi_units": 16})
        from selfsup.models.encoders import feature_pyramid

        maps, h = feature_pyramid(dim.backbone, torch.randn(2, 3, 32, 32))
        assert maps[dim.local_stage].shape == (2, 128, 8, 8) and h.shape == (2, 1024)

    def test_amdim_encoder_gives_7x7_5x5_1x1_without_padding(self):
        amdim = make("amdim", "amdim32-small", {"n_rkhs": 256})
        images = torch.randn(2, 3, 32, 32, requires_grad=True)
        r1, r5, r7 = amdim.multiscale(images)
        assert r1.shape == (2, 256) and r5.shape == (2, 25, 256) and r7.shape == (2, 49, 256)
        amdim.eval()  # BatchNorm at the output would otherwise connect all locations
        from selfsup.models.encoders import feature_pyramid

        maps, _ = feature_pyramid(amdim.backbone, images)
        five = maps[amdim.index5]
        (grad,) = torch.autograd.grad(five[0, :, 0, 0].sum(), images)
        # no padding: the top-left 5x5 feature sees only a top-left window of the image
        assert torch.count_nonzero(grad[0, :, 24:, :]) == 0 and torch.count_nonzero(grad[0, :, :, 24:]) == 0
        assert torch.count_nonzero(grad[0, :, :8, :8]) > 0

    def test_resnet_adaptation_for_amdim(self):
        amdim = make("amdim", "resnet10", {"n_rkhs": 32})
        r1, r5, r7 = amdim.multiscale(torch.randn(2, 3, 32, 32))
        assert r1.shape == (2, 32) and r5.shape == (2, 25, 32) and r7.shape == (2, 49, 32)


# ----------------------------------------------------------------------------- methods end to end

END_TO_END = [
    (
        "cpc",
        "patchnet-small",
        {"latent_dim": 16, "context_dim": 16, "max_offset": 3, "directions": ("top_down", "right_left")},
        "group",
        1,
        24,
    ),
    ("cpc", "resnet10", {"latent_dim": 16, "context_dim": 16, "max_offset": 2, "num_negatives": 20}, "layer", 1, 16),
    ("dim", "dim32", {"mi_units": 32}, "batch", 1, 32),
    ("dim", "resnet10", {"mi_units": 32, "estimator": "nce", "alpha": 0.5}, "batch", 1, 32),
    ("amdim", "amdim32-small", {"n_rkhs": 256}, "batch", 2, 32),
]


@pytest.mark.parametrize(
    "method, backbone, args, norm, views, size", END_TO_END, ids=[f"{c[0]}-{c[1]}" for c in END_TO_END]
)
def test_training_steps_reach_every_parameter_and_lower_the_loss(method, backbone, args, norm, views, size):
    """One step reaches every parameter (as DDP requires), and a few Adam steps on a fixed batch lower the loss."""
    model = make(method, backbone, args, norm)
    g = torch.Generator().manual_seed(5)
    batch = [torch.randn(8, 3, size, size, generator=g) for _ in range(views)]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for step in range(6):
        torch.manual_seed(step)
        out = model(batch, PROGRESS)
        assert torch.isfinite(out.loss) and out.embedding.shape[0] == 8
        optimizer.zero_grad()
        out.loss.backward()
        if step == 0:
            missing = [n for n, p in model.named_parameters() if p.grad is None]
            assert not missing, missing
        optimizer.step()
        losses.append(out.loss.item())
    assert losses[-1] < losses[0]
    model.eval()
    h, z = model.embed(batch[0])
    assert h.shape[0] == z.shape[0] == 8 and z.shape[1] == type(model).latent_dim(model.args)


def test_prior_matching_gradients_reach_only_their_own_player():
    """With only the prior terms, the discriminator's gradient does not depend on γ (the encoder's term
    sends it nothing) and the encoder's gradient scales with γ (the discriminator's term sends it nothing)."""
    grads = {}
    for gamma in (1.0, 2.0):
        dim = make("dim", "dim32", {"beta": 0.0, "gamma": gamma})
        torch.manual_seed(1)
        dim([torch.randn(8, 3, 32, 32)], PROGRESS).loss.backward()
        grads[gamma] = {n: p.grad.clone() for n, p in dim.named_parameters()}
    for name, grad in grads[1.0].items():
        if name.startswith("discriminator"):
            assert torch.allclose(grads[2.0][name], grad, atol=1e-6), name
        else:
            assert torch.allclose(grads[2.0][name], 2 * grad, rtol=1e-4, atol=1e-7), name
    assert any(g.abs().sum() > 0 for n, g in grads[1.0].items() if n.startswith("backbone"))


def test_occlusion_hides_one_square_of_the_requested_size_per_image():
    """Each image loses exactly one side x side square (set to 0), at a place drawn per image."""
    torch.manual_seed(0)
    images = torch.rand(64, 3, 32, 32) + 1.0  # no zeros before occlusion
    hidden = occlude(images, 0.25) == 0
    assert torch.equal(hidden[:, 0], hidden[:, 1]) and torch.equal(hidden[:, 0], hidden[:, 2])  # all channels
    for mask in hidden[:, 0]:
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        assert len(rows) == len(cols) == 8 and int(mask.sum()) == 64
        assert rows.max() - rows.min() == 7 and cols.max() - cols.min() == 7  # one contiguous square
    tops = {int(mask.any(1).nonzero()[0]) for mask in hidden[:, 0]}
    assert len(tops) > 5
    # a slice of a larger draw is the matching rows of that draw (what each DDP rank uses)
    torch.manual_seed(3)
    whole = occlude(images, 0.5)
    torch.manual_seed(3)
    assert torch.equal(occlude(images[16:32], 0.5, offset=16, total=64), whole[16:32])


def test_occlusion_feeds_y_the_occluded_copy_and_the_local_map_the_full_image():
    """DIM §4.3: with occlusion the global Y never sees the hidden square (its gradient there is zero),
    while the local features still depend on every pixel. (Eval mode, so that BatchNorm's batch statistics,
    which mix the full and occluded copies, do not couple the images.)"""
    dim = make("dim", "dim32", {"mi_units": 32, "gamma": 0.0, "occlusion": 0.5}).eval()
    images = torch.randn(4, 3, 32, 32, requires_grad=True)
    torch.manual_seed(7)
    y_grad = torch.autograd.grad(dim([images], PROGRESS).embedding.sum(), images)[0]
    torch.manual_seed(7)
    hidden = occlude(torch.ones(4, 3, 32, 32), 0.5) == 0
    assert torch.all(y_grad[hidden] == 0) and torch.count_nonzero(y_grad[~hidden]) > 0
    torch.manual_seed(7)
    loss_grad = torch.autograd.grad(dim([images], PROGRESS).loss, images)[0]
    assert torch.count_nonzero(loss_grad[hidden]) > 0  # the local map still sees the hidden pixels


# ----------------------------------------------------------------------------- presets, pipeline, CLI


def test_presets_resolve_with_the_papers_recipes():
    for method in ("cpc", "dim", "amdim"):
        for preset in ("imagenet", "small", "cpu"):
            cfg = resolve_config(method, preset)
            assert cfg.optimizer == "adam" and cfg.lr_scaling == "none"
    cpc = resolve_config("cpc", "imagenet")
    assert cpc.augment.num_views == 1 and cpc.norm == "layer" and cpc.base_lr == 2e-4
    assert cpc.method_args["patch_size"] == 64 and cpc.method_args["patch_stride"] == 32
    assert resolve_config("cpc", "cpu").norm == "group"
    dim = resolve_config("dim", "small")
    assert (dim.backbone, dim.batch_size, dim.base_lr, dim.augment.num_views) == ("dim32", 64, 1e-4, 1)
    assert (dim.method_args["alpha"], dim.method_args["beta"], dim.method_args["gamma"]) == (0.0, 1.0, 0.1)
    assert resolve_config("dim", "cpu").epochs == 24 and resolve_config("cpc", "cpu").epochs == 8
    amdim = resolve_config("amdim", "imagenet")
    assert amdim.augment.shared_flip and amdim.adam_betas == (0.8, 0.999) and amdim.weight_decay == 1e-5
    assert amdim.lr_milestones == (30, 45) and amdim.lr_gamma == 0.2 and amdim.batch_size == 480
    assert amdim.warmup_epochs * 1281167 / 480 == pytest.approx(500, rel=1e-3)
    rows = {row["method"]: row for row in recipe_table("imagenet")}
    assert rows["cpc"]["lr"] == 2e-4 and rows["dim"]["batch_size"] == 64 and rows["amdim"]["latent_dim"] == 1536


def test_the_batched_pipeline_gives_one_view_when_asked():
    cfg = AugmentConfig(num_views=1).resolved(28)
    views = BatchedViewAugmenter(cfg, 1, (0.5,), (0.5,))(
        torch.randint(0, 255, (4, 1, 28, 28), dtype=torch.uint8), torch.Generator().manual_seed(0)
    )
    assert len(views) == 1 and views[0].shape == (4, 1, 28, 28)


TINY = {
    "cpc": [
        "--backbone",
        "patchnet-small",
        "--set",
        "norm=group",
        "--set",
        "aug.image_size=16",
        "--set",
        "max_offset=2",
        "--set",
        "latent_dim=16",
        "--set",
        "context_dim=16",
    ],
    "dim": ["--backbone", "dim32", "--set", "aug.image_size=32", "--set", "mi_units=32"],
    "amdim": ["--backbone", "amdim32-small", "--set", "aug.image_size=32", "--set", "n_rkhs=256"],
}


@needs_fashion_mnist
@pytest.mark.parametrize("method", ["cpc", "dim", "amdim"])
def test_resume_equals_an_uninterrupted_run(tmp_path, method):
    from selfsup.cli.main import main
    from selfsup.run_folder import RunFolder

    common = [
        "--method",
        method,
        *TINY[method],
        "--batch-size",
        "8",
        "--epochs",
        "2",
        "--no-progress",
        "--set",
        "train_subset=32",
        "--set",
        "knn_every=0",
        "--set",
        "log_every=1",
    ]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main(["pretrain", *common, "--out", str(straight)]) == 0
    assert main(["pretrain", *common, "--out", str(resumed), "--max-steps", "6"]) == 0
    assert main(["pretrain", "--out", str(resumed), "--resume", "--no-progress"]) == 0
    a, b = RunFolder(straight).read_checkpoint(), RunFolder(resumed).read_checkpoint()
    assert a["step"] == b["step"] == 8 and a["finished"] and b["finished"]
    for key, tensor in a["method"].items():
        assert torch.equal(tensor, b["method"][key]), key
    rows_a = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    rows_b = [json.loads(line) for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in rows_a] == pytest.approx([r["loss"] for r in rows_b], rel=1e-6)


def test_losses_are_float32_under_autocast():
    g = torch.Generator().manual_seed(6)
    local, glob = torch.randn(4, 3, 5, generator=g), torch.randn(4, 5, generator=g)
    expected = [jsd_mi_loss(local, glob), amdim_nce(glob, local)[0]]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = [jsd_mi_loss(local, glob), amdim_nce(glob, local)[0]]
    for e, x in zip(expected, got):
        assert x.dtype == torch.float32 and x.item() == pytest.approx(e.item(), rel=1e-6)
