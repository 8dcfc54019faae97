"""One writer per run folder: a second ``pretrain`` with the same ``--out``, or a ``--resume`` while the run
still goes, is refused with the holder's PID and host, and changes nothing; readers need no lock."""

from __future__ import annotations

import signal
import socket

import pytest

from selfsup.cli.main import main
from tests.conftest import needs_fashion_mnist
from tests.helpers import TINY_RUN, selfsup_process, wait_for_steps

pytestmark = [pytest.mark.slow, needs_fashion_mnist]  # a real process holds the folder


def test_a_second_writer_is_refused_while_the_first_runs(tmp_path, capsys):
    run = tmp_path / "run"
    first = selfsup_process("pretrain", "--out", str(run), "--epochs", "50", *TINY_RUN)
    holder = f"is being written by PID {first.pid} on host {socket.gethostname()}"
    try:
        wait_for_steps(run, 2, first)  # before its first checkpoint (end of epoch 1, step 8)
        assert main(["pretrain", "--out", str(run), "--epochs", "50", *TINY_RUN]) == 2
        err = capsys.readouterr().err
        assert holder in err and "nothing was changed" in err
        wait_for_steps(run, 10, first)  # a checkpoint exists now, and the run goes on
        before = (run / "metrics.jsonl").read_text()
        assert main(["pretrain", "--out", str(run), "--resume", "--no-progress"]) == 2
        assert holder in capsys.readouterr().err
        after = (run / "metrics.jsonl").read_text()
        assert after.startswith(before)  # the refused resume did not touch the log
        steps = [int(line.split('"step": ')[1].split(",")[0]) for line in after.splitlines()]
        assert steps == list(range(1, len(steps) + 1))
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # the OS released the dead holder's lock: the run can be resumed now
    assert main(["pretrain", "--out", str(run), "--resume", "--no-progress", "--max-steps", "12"]) == 0
