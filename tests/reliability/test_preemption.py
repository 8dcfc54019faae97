"""Preemption and crashes, on real ``selfsup pretrain`` processes: kill -9 at random moments (checkpoints are
written after every step, so some kills land in a write), SIGTERM, SIGINT and SIGUSR1. Whatever happens,
``last.pt`` stays readable and the resumed run ends with the weights of an uninterrupted run, every step
logged once."""

from __future__ import annotations

import json
import random
import signal
import time

import pytest
import torch

from selfsup.run_folder import RunFolder
from tests.conftest import needs_fashion_mnist
from tests.helpers import TINY_RUN, run_selfsup, selfsup_process, wait_for_steps

pytestmark = [pytest.mark.slow, needs_fashion_mnist]  # real processes, killed and resumed

EPOCHS = 4  # 8 steps per epoch: 32 steps
EVERY_STEP = ["--set", "checkpoint_every_min=0.00001"]  # a checkpoint after (nearly) every step


def command(run, *extra):
    return ["pretrain", "--out", str(run), "--resume", "auto", "--epochs", str(EPOCHS), *TINY_RUN, *extra]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The weights of an uninterrupted run (a checkpoint after every step, like the interrupted runs)."""
    run = tmp_path_factory.mktemp("reference") / "run"
    done = run_selfsup(*command(run, *EVERY_STEP))
    assert done.returncode == 0, done.stderr[-2000:]
    return RunFolder(run).read_checkpoint()


def assert_same_run(run, reference):
    state = RunFolder(run).read_checkpoint()
    assert state["finished"] and state["step"] == reference["step"] == EPOCHS * 8
    for key, tensor in reference["method"].items():
        assert torch.equal(tensor, state["method"][key]), key
    for key, value in reference["optimizer"]["state"].items():
        assert torch.equal(value["momentum_buffer"], state["optimizer"]["state"][key]["momentum_buffer"])
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, EPOCHS * 8 + 1))  # every step once: the log was repaired on resume


def test_kill_9_at_random_moments_then_resume_equals_an_uninterrupted_run(tmp_path, reference):
    run = tmp_path / "run"
    rng = random.Random(0)
    for _ in range(3):
        logged = len((run / "metrics.jsonl").read_text().splitlines()) if (run / "metrics.jsonl").exists() else 0
        process = selfsup_process(*command(run, *EVERY_STEP))
        wait_for_steps(run, logged + 1, process)  # training again
        time.sleep(rng.uniform(0.0, 0.3))  # anywhere in a step or a checkpoint write
        process.send_signal(signal.SIGKILL)
        process.wait()
        if RunFolder(run).has_checkpoint():
            RunFolder(run).read_checkpoint()  # never damaged by the kill
    done = run_selfsup(*command(run, *EVERY_STEP))
    assert done.returncode == 0, done.stderr[-2000:]
    assert not list((run / "checkpoints").glob(".*.tmp"))  # leftovers of killed writes are removed
    assert_same_run(run, reference)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1])
def test_a_signal_saves_mid_epoch_exits_for_the_scheduler_and_resume_is_exact(tmp_path, reference, signum):
    run = tmp_path / "run"
    process = selfsup_process(*command(run, *EVERY_STEP))
    wait_for_steps(run, 2, process)  # early in the first epoch (8 steps)
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signum
    name = signal.Signals(signum).name
    assert f"{name} received: stopped after step" in err
    assert f"selfsup pretrain --out {run} --resume" in err and str(RunFolder(run).checkpoint_path) in err
    state = RunFolder(run).read_checkpoint()
    logged = len((run / "metrics.jsonl").read_text().splitlines())
    assert state["step"] == logged and 0 < state["batch"] == state["step"] < 8  # finished the step, mid-epoch
    done = run_selfsup(*command(run, *EVERY_STEP))  # the same job script restarts it
    assert done.returncode == 0, done.stderr[-2000:]
    assert_same_run(run, reference)


def test_periodic_checkpoints_without_a_signal_keep_the_last_k(tmp_path):
    run = tmp_path / "run"
    done = run_selfsup(*command(run, *EVERY_STEP, "--set", "keep_checkpoints=3", "--max-steps", "10"))
    assert done.returncode == 0, done.stderr[-2000:]
    kept = sorted(p.name for p in (run / "checkpoints").glob("step-*.pt"))
    assert kept == ["step-000000008.pt", "step-000000009.pt", "step-000000010.pt"]
    assert torch.equal(
        RunFolder(run).read_checkpoint()["method"]["backbone.net.conv1.weight"],
        torch.load(run / "checkpoints" / kept[-1], weights_only=True)["method"]["backbone.net.conv1.weight"],
    )
