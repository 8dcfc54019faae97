"""Drive the real ``selfsup`` command: help, the recipe table, and errors for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from selfsup.cli.main import main
from selfsup.config import RUNTIME_SETTINGS
from tests.conftest import needs_fashion_mnist


def selfsup(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "selfsup", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def test_methods_json_is_the_recipe_table():
    result = selfsup("methods", "--preset", "imagenet", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["method"]: row for row in json.loads(result.stdout)}
    assert set(rows["simclr"]) == {
        "method",
        "latent_dim",
        "batch_size",
        "optimizer",
        "lr",
        "weight_decay",
        "schedule",
        "epochs",
    }
    assert (rows["simclr"]["latent_dim"], rows["simclr"]["batch_size"], rows["simclr"]["lr"]) == (128, 4096, 4.8)
    assert (rows["tico"]["latent_dim"], rows["tico"]["lr"], rows["tico"]["weight_decay"]) == (256, 3.2, 1.5e-6)
    assert (rows["vicreg"]["latent_dim"], rows["vicreg"]["batch_size"], rows["vicreg"]["lr"]) == (8192, 2048, 1.6)


def test_methods_table_prints_every_method(capsys):
    assert main(["methods", "--preset", "cpu"]) == 0
    out = capsys.readouterr().out
    for name in ("simclr", "tico", "vicreg"):
        assert name in out
    assert "latent dim" in out and "schedule" in out


def test_unknown_method_lists_the_valid_ones():
    result = selfsup("pretrain", "--method", "simclear")
    assert result.returncode == 2
    assert "simclr" in result.stderr and "vicreg" in result.stderr and "tico" in result.stderr


def test_unknown_setting_lists_the_valid_ones(tmp_path, capsys):
    assert main(["pretrain", "--out", str(tmp_path / "r"), "--set", "lr_warmup=3"]) == 2
    err = capsys.readouterr().err
    assert "unknown setting 'lr_warmup'" in err and "warmup_epochs" in err


def test_batch_of_one_says_why(tmp_path, capsys):
    assert main(["pretrain", "--out", str(tmp_path / "r"), "--batch-size", "1"]) == 2
    assert "at least 2 images" in capsys.readouterr().err


def test_missing_dataset_says_how_to_get_it(tmp_path):
    result = selfsup(
        "pretrain",
        "--out",
        str(tmp_path / "r"),
        "--data-dir",
        str(tmp_path / "nothing"),
        env={
            "SELFSUP_FASHION_MNIST_DIR": str(tmp_path / "none"),
            "SELFSUP_DATA": str(tmp_path / "c"),
            "SELFSUP_OFFLINE": "1",
        },
    )
    assert result.returncode == 2
    for way in ("apt-get install dataset-fashion-mnist", "--data-dir", "internet access"):
        assert way in result.stderr
    assert not (tmp_path / "r").exists()


@needs_fashion_mnist
def test_a_backbone_too_deep_for_the_image_size_is_refused_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "r"
    command = ["pretrain", "--backbone", "timm:convnext_atto", "--set", "aug.image_size=16", "--out", str(out)]
    assert main([*command, "--batch-size", "16", "--set", "train_subset=32"]) == 2
    err = capsys.readouterr().err
    assert "timm:convnext_atto cannot encode 16-px images" in err and "Traceback" not in err
    assert not out.exists()


def test_missing_cifar_says_how_to_get_it(tmp_path, capsys):
    assert main(["pretrain", "--dataset", "cifar10", "--data-dir", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "CIFAR-10 was not found" in err and "--data-dir" in err


def test_existing_run_is_not_overwritten(tmp_path, capsys):
    run = tmp_path / "r"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"precious")
    assert main(["pretrain", "--out", str(run)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (run / "checkpoints" / "last.pt").read_bytes() == b"precious"


def test_resume_without_a_run_is_explained(tmp_path, capsys):
    assert main(["pretrain", "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["pretrain", "eval", "methods"])
def test_help_documents_every_option(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    options = {
        "pretrain": [
            "--method",
            "--dataset",
            "--preset",
            "--epochs",
            "--batch-size",
            "--backbone",
            "--stem",
            "--out",
            "--device",
            "--resume",
            "--max-steps",
            "--set",
        ],
        "eval": ["--protocol", "--json", "RUN_DIR"],
        "methods": ["--preset", "--json"],
    }[command]
    for option in options:
        assert option in text


def test_eval_of_a_non_run_directory_is_explained(tmp_path, capsys):
    assert main(["eval", str(tmp_path)]) == 2
    assert "not a selfsup run folder" in capsys.readouterr().err


@needs_fashion_mnist
def test_print_config_is_the_config_the_run_writes(tmp_path, capsys):
    """``--print-config`` prints the resolved recipe without training; the run's config.json is the same object,
    with the runtime settings that ``auto`` leaves to a measurement filled in."""
    run = tmp_path / "run"
    args = [
        "pretrain",
        "--out",
        str(run),
        "--no-progress",
        "--batch-size",
        "16",
        "--max-steps",
        "2",
        "--set",
        "train_subset=64",
        "--set",
        "knn_every=0",
    ]
    assert main([*args, "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert not run.exists()  # nothing was trained or written
    assert None not in (
        printed["augment"]["image_size"],
        printed["augment"]["crop_scale"],
        printed["augment"]["blur_prob"],
    )
    assert printed["augment"]["image_size"] == 32 and printed["augment"]["crop_scale"] == [0.5, 1.0]
    assert main(args) == 0
    written = json.loads((run / "config.json").read_text())
    for key in RUNTIME_SETTINGS:
        assert printed[key] == "auto" and written[key] != "auto"
        printed[key] = written[key]
    assert written == printed
