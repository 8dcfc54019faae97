"""Every value is checked before anything is written: each bad value is refused in one line naming it."""

from __future__ import annotations

import dataclasses

import pytest

from selfsup.cli.main import main
from selfsup.config import ConfigError
from selfsup.methods import METHODS
from selfsup.presets import resolve_config

BAD = [
    ({"base_lr": "nan"}, "base_lr=nan: the value must be a finite number"),
    ({"base_lr": "inf"}, "base_lr=inf"),
    ({"temperature": "0"}, "temperature=0.0 is out of range: it must be > 0"),
    ({"temperature": "-1"}, "temperature=-1.0"),
    ({"aug.crop_scale": "2,3"}, "aug.crop_scale=(2.0, 3.0) (the item 2.0) is out of range: it must be in (0, 1]"),
    ({"aug.crop_scale": "0.9,0.2"}, "the low end must not exceed the high end"),
    ({"aug.flip_prob": "5"}, "aug.flip_prob=(5.0,) (the item 5.0) is out of range: it must be in [0, 1]"),
    ({"latent_dim": "0"}, "latent_dim=0 is out of range: it must be >= 1"),
    ({"train_subset": "-5"}, "train_subset=-5 is out of range: it must be >= 0"),
    ({"train_subset": "7"}, "train_subset=7 is smaller than one batch of 128"),
    ({"aug.num_views": "1"}, "simclr compares 2 views of every image, and aug.num_views=1 gives 1"),
    ({"knn_bank": "0"}, "knn_bank=0 is out of range: it must be >= 1"),
    ({"precision": "fp16", "device": "cpu"}, "precision=fp16 is not supported on the CPU"),
    ({"momentum": "1.5"}, "momentum=1.5 is out of range: it must be in [0, 1)"),
    ({"warmup_epochs": "20"}, "warmup_epochs=20 is longer than the run (epochs=8)"),
    ({"optimizer": "rmsprop"}, "optimizer='rmsprop' is out of range: it must be one of lars, sgd, adamw, adam"),
    ({"loss": "hinge"}, "loss='hinge' is out of range: it must be one of nt_xent, nt_logistic, margin_triplet"),
    ({"checkpoint_every_min": "-1"}, "checkpoint_every_min=-1.0"),
    ({"keep_checkpoints": "0"}, "keep_checkpoints=0"),
    ({"channels": "2"}, "channels=2 is out of range: it must be one of 0, 1, 3"),
    ({"backbone": "timm:vit_tiny_patch16_22"}, "timm has no model 'vit_tiny_patch16_22' (see timm.list_models())"),
    ({"backbone": "tv:resnet5"}, "Closest: tv:resnet50"),
    ({"backbone": "resnet51"}, "unknown backbone 'resnet51'. Valid backbones: resnet10"),
    ({"freeze_patch_embed": "true"}, "apply to timm:/tv: backbones, not to 'resnet10'"),
    ({"backbone": "timm:convnext_atto", "pos_embed": "sincos"}, "apply to Vision Transformers, not timm:convnext"),
    ({"backbone": "timm:vit_tiny_patch16_224", "backbone_args": "depth"}, "backbone_args items are key=value"),
    ({"pos_embed": "rope"}, "pos_embed='rope' is out of range: it must be one of learned, sincos"),
]


@pytest.mark.parametrize("sets, message", BAD, ids=[next(iter(s)) + "=" + next(iter(s.values())) for s, _ in BAD])
def test_a_bad_value_is_refused_with_its_name(sets, message):
    with pytest.raises(ConfigError) as caught:
        resolve_config("simclr", "cpu", sets=sets)
    assert message in str(caught.value)


@pytest.mark.parametrize("method", sorted(METHODS.names()))
def test_every_numeric_method_setting_declares_its_range(method):
    cls = METHODS.get(method)
    numeric = [
        f.name
        for f in dataclasses.fields(cls.Args)
        if not isinstance(f.default, bool)
        and isinstance(f.default, (int, float, tuple))
        or f.name in ("loss", "projector", "version")
    ]
    assert sorted(set(numeric) - set(cls.ranges)) == []


def test_every_preset_of_every_method_is_valid():
    from selfsup.methods import method_names
    from selfsup.presets import PRESETS

    for name in method_names(include_unlisted=True):
        for preset in PRESETS:
            resolve_config(name, preset)  # raises on an invalid recipe


def test_a_refused_start_writes_nothing(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["pretrain", "--out", str(run), "--set", "temperature=0"]) == 2
    assert main(["pretrain", "--out", str(run), "--dataset", "imagefolder", "--data-dir", str(tmp_path / "none")]) == 2
    assert not run.exists()
    capsys.readouterr()


def test_a_path_under_a_file_is_reported_in_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("not a folder")
    code = main(
        [
            "pretrain",
            "--out",
            str(tmp_path / "file" / "run"),
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--set",
            "train_subset=64",
            "--set",
            "knn_every=0",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and f"cannot use {tmp_path / 'file' / 'run'} as a run folder" in err
    assert "Traceback" not in err
