"""Damaged and hostile files: a metrics.jsonl cut short, a truncated checkpoint, and a checkpoint carrying a
pickled payload, which no command may run."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch

from selfsup.cli.main import main
from selfsup.run_folder import RunFolder
from tests.conftest import needs_fashion_mnist
from tests.helpers import TINY_RUN

pytestmark = needs_fashion_mnist


@pytest.fixture
def stopped_run(tmp_path):
    """A run stopped at step 12 of 16 (a checkpoint at step 12: mid-epoch, since --max-steps saves)."""
    run = tmp_path / "run"
    assert main(["pretrain", "--out", str(run), "--epochs", "2", "--max-steps", "12", *TINY_RUN]) == 0
    return run


def test_a_partial_last_line_in_the_metrics_is_repaired_on_resume(stopped_run):
    metrics = stopped_run / "metrics.jsonl"
    with metrics.open("a") as handle:
        handle.write('{"step": 13, "epoch": 1.6, "lo')  # the disk filled up mid-line
    assert main(["pretrain", "--out", str(stopped_run), "--resume", "--no-progress"]) == 0
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]  # every line is valid JSON again
    assert [r["step"] for r in rows] == list(range(1, 17))


def test_non_finite_numbers_are_written_as_null(tmp_path):
    from selfsup.engine.logging import MetricsLogger

    logger = MetricsLogger(RunFolder(tmp_path), tensorboard=False)
    logger.log({"step": 1, "loss": float("nan"), "lr": float("inf"), "knn_top1": 0.5})
    line = (tmp_path / "metrics.jsonl").read_text()
    assert "NaN" not in line and "Infinity" not in line
    assert json.loads(line) == {"step": 1, "loss": None, "lr": None, "knn_top1": 0.5}


def test_a_truncated_checkpoint_is_reported_by_name(stopped_run, capsys):
    path = RunFolder(stopped_run).checkpoint_path
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    for command in (["pretrain", "--out", str(stopped_run), "--resume", "--no-progress"], ["eval", str(stopped_run)]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert f"{path} is damaged or not a checkpoint" in err and "Traceback" not in err


class Payload:
    """What an attacker would put in a shared last.pt: unpickling it runs ``os.system``-like code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_a_checkpoint_carrying_code_is_refused_everywhere_and_the_code_never_runs(stopped_run, tmp_path, capsys):
    marker = tmp_path / "the-payload-ran"
    folder = RunFolder(stopped_run)
    state = folder.read_checkpoint()
    state["extra"] = Payload(marker)
    with open(folder.checkpoint_path, "wb") as handle:
        torch.save(state, handle, pickle_protocol=pickle.HIGHEST_PROTOCOL)
    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image

    Image.new("L", (28, 28)).save(images / "a.png")
    commands = [
        ["eval", str(stopped_run)],
        ["export", str(stopped_run), "--out", str(tmp_path / "encoder.pt")],
        ["embed", str(stopped_run), "--images", str(images), "--out", str(tmp_path / "e.npy")],
        ["pretrain", "--out", str(stopped_run), "--resume", "--no-progress"],
    ]
    for command in commands:
        assert main(command) == 2, command
        err = capsys.readouterr().err
        assert "refused to load" in err and "could run code" in err, command
    assert not marker.exists()


def test_tensorboard_holds_each_step_once_after_a_resume(stopped_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(stopped_run / "tensorboard")) as writer:  # events past the checkpoint, as after a crash
        for step in (13, 14):
            writer.add_scalar("loss", 99.0, step)
    assert main(["pretrain", "--out", str(stopped_run), "--resume", "--no-progress"]) == 0
    events = EventAccumulator(str(stopped_run / "tensorboard"))
    events.Reload()
    scalars = events.Scalars("loss")
    assert sorted(event.step for event in scalars) == list(range(1, 17))  # 13 and 14 once, from the resumed run
    assert all(event.value != 99.0 for event in scalars)


@pytest.mark.slow
def test_a_compare_rerun_refuses_a_run_whose_checkpoint_carries_code(tmp_path, capsys):
    out, marker = tmp_path / "cmp", tmp_path / "the-payload-ran"
    command = [
        "compare",
        "--methods",
        "simclr",
        "--no-supervised",
        "--out",
        str(out),
        "--in-process",
        "--max-steps",
        "2",
        "--eval-train",
        "200",
        "--eval-test",
        "100",
        *TINY_RUN,
    ]
    assert main(command) == 0
    folder = RunFolder(out / "simclr")
    state = folder.read_checkpoint()
    state["extra"] = Payload(marker)
    torch.save(state, folder.checkpoint_path)
    assert main(command) == 2
    assert "refused to load" in capsys.readouterr().err
    assert not marker.exists()


def test_resuming_a_finished_run_changes_no_file(stopped_run, capsys):
    assert main(["pretrain", "--out", str(stopped_run), "--resume", "--no-progress"]) == 0
    files = {p: p.read_bytes() for p in stopped_run.rglob("*") if p.is_file() and p.name != ".lock"}
    assert main(["pretrain", "--out", str(stopped_run), "--resume", "--no-progress"]) == 0
    assert "has nothing left to train" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in stopped_run.rglob("*") if p.is_file() and p.name != ".lock"} == files
