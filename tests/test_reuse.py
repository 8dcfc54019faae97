"""Encoders ready for reuse: the exported backbone loads into plain torchvision (no selfsup import) and gives
the same features as selfsup's backbone, in both formats; the model card is complete and its code runs;
``selfsup embed`` writes one row per image to .npy and .parquet, equal to the features of the card's code.

The runs are built without training: a method with perturbed weights and BatchNorm statistics, saved as
a checkpoint next to its config.json, which is all that export and embed read.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from selfsup.checkpoint import save_checkpoint
from selfsup.cli.main import main
from selfsup.config import TrainConfig
from selfsup.methods import build_method
from selfsup.presets import resolve_config
from selfsup.reuse import backbone_state_dict
from selfsup.run_folder import RunFolder
from tests.conftest import needs_fashion_mnist


def make_run(run_dir: Path, cfg: TrainConfig, channels: int, evaluation: dict | None = None) -> torch.nn.Module:
    """A run folder whose checkpoint holds a method with non-trivial weights and BN statistics."""
    torch.manual_seed(1)
    method = build_method(cfg, channels)
    with torch.no_grad():
        for name, buffer in method.named_buffers():
            if name.endswith("running_mean"):
                buffer.normal_(0, 0.1)
            elif name.endswith("running_var"):
                buffer.uniform_(0.5, 2.0)
        for name, parameter in method.named_parameters():
            if "bn" in name or "downsample.1" in name:
                parameter.add_(0.1 * torch.randn_like(parameter))
    run_dir.mkdir(parents=True)
    cfg.out = str(run_dir)
    (run_dir / "config.json").write_text(json.dumps(cfg.to_dict()))
    (run_dir / "summary.json").write_text(json.dumps({"epochs": 1.0, "steps": 4}))
    if evaluation:
        (run_dir / "eval.json").write_text(json.dumps(evaluation))
    save_checkpoint({"method": method.state_dict(), "step": 4, "finished": True}, RunFolder(run_dir).checkpoint_path)
    return method.eval()


def card_code(card: Path) -> str:
    match = re.search(r"```python\n(.*?)```", card.read_text(), re.S)
    assert match, "the model card has no python block"
    return match.group(1)


CARD_SCRIPT = """
import sys, pathlib, os, torch
for folder in sys.argv[1:]:
    os.chdir(folder)
    scope = {}
    exec(pathlib.Path("code.py").read_text(), scope)
    with torch.no_grad():
        torch.save(scope["net"](torch.load("x.pt")), "features.pt")
assert not [m for m in sys.modules if m.startswith("selfsup")], "the card's code imported selfsup"
"""


def run_cards_without_selfsup(exports: list[Path]) -> None:
    """Run each export's model-card code in one fresh interpreter that never imports selfsup: it builds the
    plain model, loads the weights and writes ``features.pt`` of ``x.pt`` next to the export."""
    for out in exports:
        (out.parent / "code.py").write_text(card_code(out.with_suffix(".md")))
    result = subprocess.run(
        [sys.executable, "-c", CARD_SCRIPT, *(str(out.parent) for out in exports)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(a) resnet10, CIFAR stem, Fashion-MNIST (1 channel); (b) resnet18, ImageNet stem, an RGB image folder."""
    root = tmp_path_factory.mktemp("reuse")
    images = root / "images"
    rng = np.random.default_rng(0)
    for i in range(5):
        sub = images / ("a" if i < 3 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        size = (20, 24) if i % 2 else (16, 16)  # one exact size, one that is resized and centre-cropped
        Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).save(sub / f"img{i}.png")
    sets = {"hidden_dim": 32, "latent_dim": 16, "aug.image_size": 16}
    fmnist = resolve_config("simclr", "cpu", {"backbone": "resnet10", "stem": "cifar"}, sets)
    folder = resolve_config(
        "tico",
        "cpu",
        {"backbone": "resnet18", "stem": "imagenet", "dataset": "imagefolder", "data_dir": str(images)},
        sets,
    )
    evaluation = {
        "dataset": "fashion-mnist",
        "test_images": 10000,
        "train_images": 60000,
        "knn_top1_h": 0.8123,
        "linear_top1_h": 0.8456,
        "raw_pixels_knn_top1": 0.81,
    }
    vit_sets = {**sets, "backbone_args": "depth=2"}
    vit = resolve_config("moco-v3", "cpu", {"backbone": "timm:vit_tiny_patch16_224"}, vit_sets)
    torchvision_model = resolve_config("byol", "cpu", {"backbone": "tv:mobilenet_v3_small"}, sets)
    return {
        "fmnist": (root / "fmnist", make_run(root / "fmnist", fmnist, 1, evaluation)),
        "folder": (root / "folder", make_run(root / "folder", folder, 3)),
        "vit": (root / "vit", make_run(root / "vit", vit, 1)),
        "tv": (root / "tv", make_run(root / "tv", torchvision_model, 1)),
        "images": images,
    }


def test_state_dict_is_the_plain_backbone(runs):
    run_dir, method = runs["fmnist"]
    weights = backbone_state_dict(run_dir)
    assert weights.keys() == method.backbone.net.state_dict().keys()
    assert not any(k.startswith(("backbone.", "projector", "momentum", "fc.")) for k in weights)
    for key, tensor in method.backbone.net.state_dict().items():
        assert torch.equal(weights[key], tensor), key


@needs_fashion_mnist
def test_exports_load_into_plain_torchvision_with_the_same_features(runs, tmp_path):
    """Both formats, both stems, 1 and 3 channels: run each model card's code in a fresh interpreter that
    never imports selfsup, and compare its features with selfsup's backbone on the same inputs."""
    cases = []
    for name, fmt, channels in (("fmnist", "torchvision", 1), ("folder", "safetensors", 3)):
        run_dir, method = runs[name]
        out = tmp_path / name / f"encoder.{'pt' if fmt == 'torchvision' else 'safetensors'}"
        assert main(["export", str(run_dir), "--format", fmt, "--out", str(out)]) == 0
        x = torch.randn(3, channels, 16, 16, generator=torch.Generator().manual_seed(2))
        torch.save(x, out.parent / "x.pt")
        with torch.no_grad():
            expected = method.backbone(x)
        cases.append((out, expected))
    run_cards_without_selfsup([out for out, _ in cases])
    for out, expected in cases:
        features = torch.load(out.parent / "features.pt")
        assert features.shape == expected.shape == (3, 512)
        torch.testing.assert_close(features, expected, rtol=1e-5, atol=1e-5)


@needs_fashion_mnist
def test_timm_and_torchvision_models_export_for_their_library_with_the_same_features(runs, tmp_path):
    """A timm ViT run (MoCo v3's ViT heads) and a torchvision MobileNet run: the card's code, in a fresh
    interpreter without selfsup, builds timm.create_model(...) / torchvision.models.get_model(...), loads the
    export and gives selfsup's features."""
    exports = []
    for name, fmt, suffix in (("vit", "timm", "pt"), ("tv", "safetensors", "safetensors")):
        run_dir, method = runs[name]
        out = tmp_path / name / f"encoder.{suffix}"
        assert main(["export", str(run_dir), "--format", fmt, "--out", str(out)]) == 0
        x = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(2))
        torch.save(x, out.parent / "x.pt")
        with torch.no_grad():
            expected = method.backbone(x)
        exports.append((out, expected))
    card = exports[0][0].with_suffix(".md").read_text()
    assert "## Load it with plain timm" in card and "timm.create_model('vit_tiny_patch16_224'" in card
    assert "in_chans=1, img_size=16, dynamic_img_size=True, patch_size=4, depth=2" in card
    run_cards_without_selfsup([out for out, _ in exports])
    for out, expected in exports:
        features = torch.load(out.parent / "features.pt")
        assert features.shape == expected.shape
        torch.testing.assert_close(features, expected, rtol=1e-5, atol=1e-5)


def test_a_timm_run_refuses_the_torchvision_format_and_a_paper_encoder_refuses_export(runs, tmp_path, capsys):
    run_dir, _ = runs["vit"]
    assert main(["export", str(run_dir), "--format", "torchvision", "--out", str(tmp_path / "x.pt")]) == 2
    assert "is a timm model: export it with --format timm or --format safetensors" in capsys.readouterr().err
    dim = resolve_config("dim", "cpu", sets={"mi_units": 16})
    make_run(tmp_path / "dim", dim, 1)
    assert main(["export", str(tmp_path / "dim"), "--out", str(tmp_path / "y.safetensors")]) == 2
    assert "one of the papers' own encoders, which no library builds" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists() and not (tmp_path / "y.safetensors").exists()


@needs_fashion_mnist
def test_model_card_describes_the_run(runs, tmp_path):
    run_dir, _ = runs["fmnist"]
    assert main(["export", str(run_dir)]) == 0
    out = run_dir / "export" / "resnet10-simclr.pt"
    card = out.with_suffix(".md").read_text()
    for text in (
        "# resnet10 encoder pretrained with simclr on fashion-mnist",
        "Chen et al.",
        "cifar stem",
        "1 input channel",
        "peak LR",
        "fashion-mnist",
        "16 x 16 px",
        "mean [0.286]",
        "| trained encoder, h (backbone) | 81.23 | 84.56 |",
        "net.maxpool = nn.Identity()",
        'torch.load("resnet10-simclr.pt", weights_only=True)',
    ):
        assert text in card, text
    assert "from selfsup" not in card_code(out.with_suffix(".md")) and "import selfsup" not in card


def test_embed_writes_npy_and_parquet_equal_to_the_card_preprocessing(runs, tmp_path):
    run_dir, method = runs["folder"]
    images = runs["images"]
    npy, parquet = tmp_path / "e.npy", tmp_path / "e.parquet"
    assert main(["embed", str(run_dir), "--images", str(images), "--out", str(npy), "--no-progress"]) == 0
    assert (
        main(
            [
                "embed",
                str(run_dir),
                "--images",
                str(images),
                "--out",
                str(parquet),
                "--batch-size",
                "2",
                "--no-progress",
            ]
        )
        == 0
    )
    array = np.load(npy)
    assert array.shape == (5, 512) and array.dtype == np.float32
    paths = (tmp_path / "e.npy.paths.txt").read_text().split()
    assert paths == ["a/img0.png", "a/img1.png", "a/img2.png", "b/img3.png", "b/img4.png"]
    table = pq.read_table(parquet)
    assert table.column_names == ["path", "embedding"] and table.num_rows == 5
    assert table.column("path").to_pylist() == paths
    np.testing.assert_allclose(
        np.stack(table.column("embedding").to_numpy(zero_copy_only=False)), array, rtol=1e-5, atol=1e-5
    )
    # the model card's preprocess + selfsup's backbone give the same rows
    assert main(["export", str(run_dir), "--out", str(tmp_path / "enc.pt")]) == 0
    scope: dict = {}
    exec(_preprocess_only(card_code(tmp_path / "enc.md")), scope)
    batch = torch.stack([scope["preprocess"](Image.open(images / p)) for p in paths])
    assert batch.shape == (5, 3, 16, 16)
    with torch.no_grad():
        expected = method.backbone(batch).numpy()
    np.testing.assert_allclose(array, expected, rtol=1e-5, atol=1e-5)


def _preprocess_only(code: str) -> str:
    """The card's imports and its ``preprocess`` function (without building the network)."""
    imports = "\n".join(line for line in code.splitlines() if line.startswith(("import ", "from ")))
    return imports + "\n\n" + "def preprocess" + code.split("def preprocess", 1)[1]


def test_embed_rejects_an_unknown_output_type(runs, tmp_path, capsys):
    run_dir, _ = runs["folder"]
    assert main(["embed", str(run_dir), "--images", str(runs["images"]), "--out", str(tmp_path / "e.csv")]) == 2
    assert ".npy or .parquet" in capsys.readouterr().err


def test_export_never_overwrites_what_it_should_not(runs, tmp_path, capsys):
    run_dir, _ = runs["folder"]
    checkpoint = RunFolder(run_dir).checkpoint_path
    before = checkpoint.read_bytes()
    refused = {
        "x.md": "--out must end in .pt for the torchvision format",
        str(checkpoint): "inside the checkpoints folder of a run",
        str(run_dir / "summary.json"): "--out must end in .pt",
    }
    for out, message in refused.items():
        target = out if "/" in out else str(tmp_path / out)
        assert main(["export", str(run_dir), "--out", target]) == 2
        assert message in capsys.readouterr().err
    assert checkpoint.read_bytes() == before
    out = tmp_path / "encoder.pt"
    assert main(["export", str(run_dir), "--out", str(out)]) == 0
    assert out.is_file() and out.with_suffix(".md").is_file()  # the card next to the weights, its own name
    weights = out.read_bytes()
    out.with_suffix(".md").write_text("my notes")
    assert main(["export", str(run_dir), "--out", str(out)]) == 2
    assert "exists; nothing was written (use --force" in capsys.readouterr().err
    assert out.read_bytes() == weights and out.with_suffix(".md").read_text() == "my notes"
    assert main(["export", str(run_dir), "--out", str(out), "--force"]) == 0
    assert out.with_suffix(".md").read_text() != "my notes"


def test_embed_skips_unreadable_images_and_checks_its_inputs(runs, tmp_path, capsys):
    run_dir, _ = runs["folder"]
    images = tmp_path / "images"
    shutil.copytree(runs["images"], images)
    for i in range(100):  # enough good images that one bad file stays under 1 %
        Image.new("RGB", (16, 16), (i, 2 * i, 3 * i)).save(images / "a" / f"plain{i}.png")
    (images / "a" / "notes.png").write_text("not an image")
    out = tmp_path / "e.npy"
    assert main(["embed", str(run_dir), "--images", str(images), "--out", str(out), "--batch-size", "0"]) == 2
    assert "--batch-size must be at least 1" in capsys.readouterr().err
    assert main(["embed", str(run_dir), "--images", str(images), "--out", str(out), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "notes.png" in err and "Traceback" not in err
    paths = (tmp_path / "e.npy.paths.txt").read_text().splitlines()
    assert len(paths) == 105 and "a/notes.png" not in paths and np.load(out).shape[0] == 105
    assert main(["embed", str(run_dir), "--images", str(images), "--out", str(out)]) == 2  # exists: no --force
    assert "exists; nothing was written" in capsys.readouterr().err
