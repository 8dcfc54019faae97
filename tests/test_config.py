"""The config: --set overrides and their error messages, the image-size defaults, the JSON round trip."""

from __future__ import annotations

import json

import pytest

from selfsup.config import AugmentConfig, ConfigError, TrainConfig
from selfsup.methods import METHODS
from selfsup.presets import resolve_config


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
