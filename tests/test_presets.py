"""The presets: the papers' recipes resolve and the recipe table shows them."""

from __future__ import annotations

import pytest

from selfsup.cli.main import main
from selfsup.config import TrainConfig
from selfsup.methods import METHODS
from selfsup.presets import recipe_row, recipe_table, resolve_config

REFERENCE_TABLE = {
    # method: latent, batch, optimizer, LR, WD, epochs (the papers' ImageNet recipes)
    "simclr": (128, 4096, "LARS", 4.8, 1e-6, 100),
    "tico": (256, 4096, "LARS", 3.2, 1.5e-6, 1000),
    "vicreg": (8192, 2048, "LARS", 1.6, 1e-6, 1000),
}


@pytest.mark.parametrize("method", sorted(REFERENCE_TABLE))
def test_imagenet_preset_is_exactly_the_reference_table(method):
    row = recipe_row(method, "imagenet")
    latent, batch, optimizer, lr, wd, epochs = REFERENCE_TABLE[method]
    assert (row["latent_dim"], row["batch_size"], row["optimizer"], row["epochs"]) == (latent, batch, optimizer, epochs)
    assert row["lr"] == pytest.approx(lr)
    assert row["weight_decay"] == wd
    assert row["schedule"].startswith("linear warmup, cosine decay")


def test_imagenet_preset_adds_what_the_reference_table_leaves_out():
    simclr = resolve_config("simclr", "imagenet")
    assert simclr.method_args["temperature"] == 0.1 and simclr.warmup_epochs == 10
    assert simclr.base_lr == 0.3 and simclr.lr_scaling == "linear"
    tico = resolve_config("tico", "imagenet")
    assert (tico.method_args["beta"], tico.method_args["rho"]) == (0.9, 8.0)
    vicreg = resolve_config("vicreg", "imagenet")
    args = vicreg.method_args
    assert (args["sim_coeff"], args["std_coeff"], args["cov_coeff"]) == (25.0, 25.0, 1.0)
    assert args["expander"] == (8192, 8192, 8192)
    assert vicreg.final_lr_ratio == 0.001
    assert vicreg.augment.blur_prob == (1.0, 0.1) and vicreg.augment.solarize_prob == (0.0, 0.2)


def test_byol_simsiam_moco_presets_are_the_papers_recipes():
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
    vit = rows["moco-v3 + timm:vit_small_patch16_224"]  # MoCo v3's ViT-S/16 recipe next to its ResNet one
    assert vit[1:] == ["256", "4096", "AdamW", "0.0024", "0.1", "linear warmup, cosine decay", "300"]


@pytest.mark.parametrize("method", ["swav", "barlowtwins", "wmse"])
@pytest.mark.parametrize("preset", ["imagenet", "small", "cpu"])
def test_swav_barlow_wmse_presets_resolve(method, preset):
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


def test_cpc_dim_amdim_presets_are_the_papers_recipes():
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


@pytest.mark.parametrize("vit", ["timm:vit_small_patch16_224", "timm:vit_base_patch16_224"])
def test_moco_v3_imagenet_with_a_vit_is_the_papers_vit_recipe(vit):
    cfg = resolve_config("moco-v3", "imagenet", flags={"backbone": vit})
    assert (cfg.optimizer, cfg.base_lr, cfg.weight_decay, cfg.batch_size) == ("adamw", 1.5e-4, 0.1, 4096)
    assert cfg.lr == pytest.approx(2.4e-3) and (cfg.epochs, cfg.warmup_epochs) == (300, 40)
    assert not cfg.weight_decay_exclude  # main_moco.py gives AdamW every trained parameter
    assert cfg.freeze_patch_embed and cfg.pos_embed == "sincos" and cfg.backbone_args == ("num_heads=12",)
    args = cfg.method_args
    assert (args["temperature"], args["momentum_base"], args["momentum_final"], args["momentum_cosine"]) == (
        0.2,
        0.99,
        1.0,
        True,
    )
    assert (args["projector_layers"], args["predictor_last_bn"], args["hidden_dim"], args["latent_dim"]) == (
        3,
        True,
        4096,
        256,
    )
    assert cfg.augment.crop_scale == (0.08, 1.0) and cfg.augment.blur_prob == (1.0, 0.1)
    resnet = resolve_config("moco-v3", "imagenet")  # the ResNet recipe is untouched
    assert (resnet.optimizer, resnet.method_args["projector_layers"], resnet.freeze_patch_embed) == ("lars", 2, False)


def test_any_method_with_a_vit_on_small_images_gets_the_small_vit_recipe_and_flags_still_win():
    cfg = resolve_config("simclr", "small", flags={"backbone": "timm:vit_tiny_patch16_224"})
    assert (cfg.optimizer, cfg.base_lr, cfg.weight_decay, cfg.adam_betas) == ("adamw", 2e-4, 0.05, (0.9, 0.95))
    assert cfg.weight_decay_exclude and cfg.method_args["temperature"] == 0.5  # the method's own settings stay
    mine = resolve_config(
        "simclr", "small", flags={"backbone": "timm:vit_tiny_patch16_224"}, sets={"optimizer": "lars", "base_lr": 1}
    )
    assert (mine.optimizer, mine.base_lr) == ("lars", 1.0)
    convnext = resolve_config("simclr", "small", flags={"backbone": "timm:convnext_atto"})
    assert convnext.optimizer == "lars"  # not a ViT: the method's recipe
