"""Presets (the recipe table), --set overrides and their error messages."""

from __future__ import annotations

import json

import pytest

from selfsup.config import AugmentConfig, ConfigError, TrainConfig
from selfsup.methods import METHODS
from selfsup.presets import recipe_row, resolve_config

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


def test_set_overrides_run_augmentation_and_method_settings():
    cfg = resolve_config(
        "simclr",
        "cpu",
        sets={"epochs": "3", "aug.blur_prob": "1.0,0.1", "temperature": "0.5", "channels_last": "false"},
    )
    assert cfg.epochs == 3 and cfg.method_args["temperature"] == 0.5 and cfg.channels_last == "false"
    assert cfg.augment.blur_prob == (1.0, 0.1)
    assert cfg.augment.for_view(0, "blur_prob") == 1.0 and cfg.augment.for_view(1, "blur_prob") == 0.1


def test_unknown_setting_lists_the_valid_ones():
    with pytest.raises(ConfigError) as err:
        resolve_config("vicreg", "cpu", sets={"temprature": "0.1"})
    message = str(err.value)
    assert "temprature" in message and "base_lr" in message and "aug.crop_scale" in message
    assert "sim_coeff" in message


def test_bad_values_say_what_is_expected():
    with pytest.raises(ConfigError, match="integer"):
        resolve_config("simclr", "cpu", sets={"epochs": "two"})
    with pytest.raises(ConfigError, match="true or false"):
        resolve_config("simclr", "cpu", sets={"channels_last": "maybe"})


def test_batch_of_one_is_refused_with_a_reason():
    with pytest.raises(ConfigError, match="at least 2 images"):
        resolve_config("simclr", "cpu", flags={"batch_size": 1})


def test_unknown_preset_lists_valid_ones():
    with pytest.raises(ConfigError, match="imagenet, small, cpu"):
        resolve_config("simclr", "huge")


def test_small_images_get_small_image_defaults():
    aug = AugmentConfig().resolved(native_size=28)
    assert aug.crop_scale == (0.2, 1.0) and aug.blur_prob == (0.0,) and aug.image_size == 28
    big = AugmentConfig().resolved(native_size=224)
    assert big.crop_scale == (0.08, 1.0) and big.blur_prob == (0.5,)


def test_config_round_trips_through_json():
    cfg = resolve_config("vicreg", "imagenet")
    again = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again.augment == cfg.augment
    assert METHODS.get("vicreg").make_args(again.method_args).expander == (8192, 8192, 8192)
