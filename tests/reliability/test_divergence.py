"""Divergence: a checkpoint is never poisoned, and the recovery the message suggests works."""

from __future__ import annotations

import torch

from selfsup.cli.main import main
from selfsup.run_folder import RunFolder
from tests.conftest import needs_fashion_mnist
from tests.helpers import TINY_RUN


@needs_fashion_mnist
def test_a_blown_up_run_keeps_its_last_good_checkpoint_and_resumes_with_a_lower_learning_rate(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["pretrain", "--out", str(run), "--epochs", "3", "--max-steps", "8", *TINY_RUN]) == 0
    good = RunFolder(run).read_checkpoint()
    # base_lr may change on resume; 1e10 blows BatchNorm statistics up (to inf) while the loss stays finite
    code = main(
        [
            "pretrain",
            "--out",
            str(run),
            "--resume",
            "--no-progress",
            "--set",
            "base_lr=1e10",
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "last good checkpoint is kept" in err and f"selfsup pretrain --out {run} --resume --set base_lr=" in err
    kept = RunFolder(run).read_checkpoint()
    assert all(torch.isfinite(t).all() for t in kept["method"].values() if t.is_floating_point())
    assert kept["step"] == good["step"] and all(torch.equal(t, kept["method"][k]) for k, t in good["method"].items())
    # the suggested recovery: resume with a lower learning rate
    assert main(["pretrain", "--out", str(run), "--resume", "--no-progress", "--set", "base_lr=0.1"]) == 0
    final = RunFolder(run).read_checkpoint()
    assert final["finished"] and final["config"]["base_lr"] == 0.1


def test_resume_refuses_to_change_what_the_run_is(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["pretrain", "--out", str(run), "--epochs", "2", "--max-steps", "2", *TINY_RUN]) == 0
    assert main(["pretrain", "--out", str(run), "--resume", "--set", "temperature=0.5", "--epochs", "5"]) == 2
    err = capsys.readouterr().err
    assert "cannot change mid-run: epochs (2 -> 5), method.temperature" in err and "base_lr" in err


@needs_fashion_mnist
def test_weights_that_blow_up_under_a_finite_loss_never_reach_a_checkpoint(tmp_path, capsys):
    """base_lr=1e10 sends a BatchNorm running variance to inf at step 2 while the loss is still finite: the
    checkpoint due then (one after every step) is not written, and the one of step 1 is kept."""
    run = tmp_path / "run"
    args = ["pretrain", "--out", str(run), "--epochs", "2", *TINY_RUN, "--set", "base_lr=1e10"]
    assert main([*args, "--set", "checkpoint_every_min=0.00001"]) == 1
    err = capsys.readouterr().err
    assert "became non-finite by step" in err and "(the loss was still finite)" in err
    kept = RunFolder(run).read_checkpoint()
    assert kept["step"] >= 1
    assert all(torch.isfinite(t).all() for t in kept["method"].values() if t.is_floating_point())
