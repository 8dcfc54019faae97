"""The training engine: resume equals an uninterrupted run, divergence stops cleanly, atomic files."""

from __future__ import annotations

import errno
import json

import pytest
import torch

from selfsup.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from selfsup.cli.main import main
from selfsup.run_folder import RunFolder
from tests.conftest import needs_fashion_mnist
from tests.helpers import PINNED_RUNTIME, SMALL_HEADS, TINY_PRETRAIN

TINY = [*TINY_PRETRAIN, *SMALL_HEADS, "--set", "log_every=1", *PINNED_RUNTIME]


def state(run_dir):
    return RunFolder(run_dir).read_checkpoint()


@needs_fashion_mnist
@pytest.mark.parametrize("method", ["simclr", "tico"])
def test_resume_equals_an_uninterrupted_run(tmp_path, method):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    extra = ["--method", method]
    assert main(["pretrain", *extra, *TINY, "--out", str(straight)]) == 0
    # stop in the middle of the second epoch (4 steps per epoch), then resume to the end
    assert main(["pretrain", *extra, *TINY, "--out", str(resumed), "--max-steps", "6"]) == 0
    assert state(resumed)["step"] == 6 and not state(resumed)["finished"]
    assert main(["pretrain", "--out", str(resumed), "--resume", "--no-progress"]) == 0
    a, b = state(straight), state(resumed)
    assert a["step"] == b["step"] == 8 and a["finished"] and b["finished"]
    for key, tensor in a["method"].items():
        assert torch.equal(tensor, b["method"][key]), key
    for key, value in a["optimizer"]["state"].items():
        assert torch.equal(value["momentum_buffer"], b["optimizer"]["state"][key]["momentum_buffer"])
    rows_a = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    rows_b = [json.loads(line) for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows_a] == [r["step"] for r in rows_b]
    assert [r["loss"] for r in rows_a] == pytest.approx([r["loss"] for r in rows_b], rel=1e-6)


@needs_fashion_mnist
def test_metrics_rows_hold_the_required_keys(tmp_path):
    assert main(["pretrain", *TINY, "--out", str(tmp_path / "run"), "--max-steps", "3"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    for row in rows:
        assert {"step", "epoch", "loss", "lr", "images_per_s"} <= row.keys()
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["method"] == "simclr" and config["batch_size"] == 16
    assert (tmp_path / "run" / "tensorboard").is_dir()


@needs_fashion_mnist
def test_diverging_run_stops_with_a_message_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["pretrain", *TINY, "--out", str(run), "--epochs", "3", "--max-steps", "4"]) == 0
    good = state(run)
    # resume with a poisoned method: the loss becomes NaN at the next step
    from selfsup.methods.simclr import SimCLR

    original = SimCLR.contrastive_loss
    SimCLR.contrastive_loss = lambda self, z1, z2: original(self, z1, z2) * float("nan")
    try:
        code = main(["pretrain", "--out", str(run), "--resume", "--no-progress"])
    finally:
        SimCLR.contrastive_loss = original
    assert code == 1
    message = capsys.readouterr().err
    assert "loss became nan or infinite at step" in message and "last good checkpoint is kept" in message
    kept = state(run)
    assert kept["step"] == good["step"] == 4
    for key, tensor in good["method"].items():
        assert torch.equal(tensor, kept["method"][key])


@needs_fashion_mnist
def test_deferred_finiteness_checks_as_on_cuda_still_never_checkpoint_a_nan(tmp_path, capsys, monkeypatch):
    """On CUDA the loss's finiteness is read every log_every steps (no per-step host sync); the same policy,
    forced on the CPU: the NaN is caught at the next read, and the checkpoint stays the last good one."""
    from selfsup.engine.trainer import Trainer
    from selfsup.methods.simclr import SimCLR

    run = tmp_path / "run"
    assert main(["pretrain", *TINY, "--out", str(run), "--epochs", "3", "--max-steps", "4"]) == 0
    good = state(run)
    setup = Trainer.setup

    def deferred_setup(self):
        setup(self)
        self.check_every = 3

    original = SimCLR.contrastive_loss
    monkeypatch.setattr(Trainer, "setup", deferred_setup)
    monkeypatch.setattr(SimCLR, "contrastive_loss", lambda self, z1, z2: original(self, z1, z2) * float("nan"))
    assert main(["pretrain", "--out", str(run), "--resume", "--no-progress", "--set", "checkpoint_every_min=0"]) == 1
    message = capsys.readouterr().err
    assert "loss became nan or infinite within the 3 steps up to 6" in message, message
    kept = state(run)
    assert kept["step"] == good["step"] == 4
    for key, tensor in good["method"].items():
        assert torch.equal(tensor, kept["method"][key])


def test_a_failed_checkpoint_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save_checkpoint({"x": torch.ones(2)}, path)

    class Code:
        def __reduce__(self):
            return (print, ("never",))

    with pytest.raises(CheckpointError, match="data only"):  # refused before anything is written
        save_checkpoint({"x": Code()}, path)

    def disk_full(obj, handle):
        handle.write(b"partial bytes")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="no space left on the device while writing"):
        save_checkpoint({"x": torch.zeros(2)}, path)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["x"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temporary file left behind
