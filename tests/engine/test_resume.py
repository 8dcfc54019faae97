"""Resuming equals an uninterrupted run, for every kind of state a method carries."""

from __future__ import annotations

import json

import pytest
import torch

from selfsup.cli.main import main
from selfsup.run_folder import RunFolder
from tests.conftest import needs_fashion_mnist
from tests.helpers import PINNED_RUNTIME, SMALL_HEADS, TINY_PRETRAIN

pytestmark = pytest.mark.slow  # end to end: real runs through the CLI, interrupted and resumed


@needs_fashion_mnist
def test_moco_resume_carries_the_queue_and_the_key_encoder(tmp_path):
    """Stopping after 6 of 8 steps (mid second epoch) and resuming gives the same weights, key encoder and queue."""
    flags = ["pretrain", "--method", "moco-v2", *TINY_PRETRAIN, *SMALL_HEADS, "--set", "queue_size=32"]
    flags += ["--set", "log_every=1", *PINNED_RUNTIME]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main([*flags, "--out", str(straight)]) == 0
    assert main([*flags, "--out", str(resumed), "--max-steps", "6"]) == 0
    assert main(["pretrain", "--out", str(resumed), "--resume", "--no-progress"]) == 0
    a = RunFolder(straight).read_checkpoint()["method"]
    b = RunFolder(resumed).read_checkpoint()["method"]
    assert int(a["queue_ptr"]) == (8 * 16) % 32
    for key in a:
        assert torch.equal(a[key], b[key]), key


RESUME_TINY = [*TINY_PRETRAIN, "--set", "hidden_dim=32", "--set", "log_every=1", *PINNED_RUNTIME]


@needs_fashion_mnist
@pytest.mark.parametrize(
    "method, sets",
    [
        # the queue (a buffer) fills at step 2 and is used from step 3; small crops through the real pipeline
        (
            "swav",
            [
                "latent_dim=8",
                "nmb_prototypes=10",
                "queue_length=32",
                "queue_start_epoch=0",
                "aug.small_crops=2",
                "aug.small_size=8",
            ],
        ),
        # the sub-batch permutations come from the global RNG, which the checkpoint carries
        ("wmse", ["latent_dim=4", "w_size=8"]),
    ],
)
def test_swav_barlow_wmse_resume_equals_an_uninterrupted_run(tmp_path, method, sets):
    args = ["pretrain", "--method", method, *RESUME_TINY, *[x for kv in sets for x in ("--set", kv)]]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main([*args, "--out", str(straight)]) == 0
    assert main([*args, "--out", str(resumed), "--max-steps", "5"]) == 0
    assert main(["pretrain", "--out", str(resumed), "--resume", "--no-progress"]) == 0
    a, b = (RunFolder(run).read_checkpoint()["method"] for run in (straight, resumed))
    for key, tensor in a.items():
        assert torch.equal(tensor, b[key]), key
    losses = [
        [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
        for run in (straight, resumed)
    ]
    assert len(losses[0]) == 8 and losses[0] == pytest.approx(losses[1], rel=1e-6)


MI_TINY = {
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
def test_cpc_dim_amdim_resume_equals_an_uninterrupted_run(tmp_path, method):
    from selfsup.cli.main import main
    from selfsup.run_folder import RunFolder

    common = [
        "--method",
        method,
        *MI_TINY[method],
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
        *PINNED_RUNTIME,
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
