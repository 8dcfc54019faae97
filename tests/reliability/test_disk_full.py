"""A full disk: refused at the start when the checkpoints cannot fit, reported in one line when the disk
fills during the run (the previous checkpoint kept), and the run resumes once there is room. On a real
size-limited file system (a tmpfs) where the machine allows mounting one, else the test is skipped
(``tests/engine/test_trainer.py`` simulates ENOSPC in-process on every machine)."""

from __future__ import annotations

import shutil
import signal
import subprocess

import pytest

from selfsup.run_folder import RunFolder
from tests.conftest import needs_fashion_mnist
from tests.helpers import TINY_RUN, run_selfsup, selfsup_process, wait_for_steps

pytestmark = [pytest.mark.slow, needs_fashion_mnist]


@pytest.fixture
def small_disk(tmp_path):
    """A 200 MiB tmpfs (a ResNet-10 checkpoint with its optimizer state is about 40 MiB)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()[:100]})")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(mount, leave_bytes=0):
    """Fill the disk, leaving about ``leave_bytes`` (a run may be writing at the same time)."""
    chunk = b"\0" * (1 << 20)
    with open(mount / "filler", "wb") as handle:
        try:
            while shutil.disk_usage(mount).free > leave_bytes + len(chunk):
                handle.write(chunk)
                handle.flush()
        except OSError:  # full
            pass


def test_too_little_space_is_refused_at_the_start_and_leaves_nothing(small_disk):
    fill(small_disk, 30 << 20)
    run = small_disk / "run"
    done = run_selfsup("pretrain", "--out", str(run), "--epochs", "2", *TINY_RUN)
    assert done.returncode == 2
    assert f"not enough free space for checkpoints in {run}" in done.stderr
    assert not run.exists()  # nothing was written


def test_a_disk_that_fills_during_the_run_keeps_the_last_checkpoint_then_resumes(small_disk):
    run = small_disk / "run"
    args = ["pretrain", "--out", str(run), "--epochs", "4", *TINY_RUN, "--set", "checkpoint_every_min=0.00001"]
    process = selfsup_process(*args)
    wait_for_steps(run, 3, process)
    process.send_signal(signal.SIGSTOP)  # hold the run while the disk is filled completely
    fill(small_disk)
    process.send_signal(signal.SIGCONT)  # its next metrics row or checkpoint cannot be written
    _, err = process.communicate(timeout=60)
    assert process.returncode == 2, err[-2000:]
    assert "no space left on the device while writing" in err and str(run) in err
    assert "Traceback" not in err
    kept = RunFolder(run).read_checkpoint()  # intact
    assert 2 <= kept["step"] < 32  # the last complete checkpoint before the disk filled
    (small_disk / "filler").unlink()
    done = run_selfsup("pretrain", "--out", str(run), "--resume", "--no-progress")
    assert done.returncode == 0, done.stderr[-2000:]
    assert RunFolder(run).read_checkpoint()["finished"]
    assert not list((run / "checkpoints").glob(".*.tmp"))


def test_a_read_only_file_system_is_reported_in_one_line_before_training(tmp_path):
    mount = tmp_path / "readonly"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode:
        pytest.skip("cannot mount a file system here")
    try:
        result = run_selfsup("pretrain", "--out", str(mount / "run"), "--epochs", "1", *TINY_RUN)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"cannot write to {mount / 'run'}" in result.stderr and "Read-only file system" in result.stderr
