"""Stopping a run cleanly on a signal: finish the current step, save a checkpoint, exit with a message.

Clusters preempt jobs with SIGTERM (SLURM can also send SIGUSR1 ahead of the time limit, ``--signal``), and
people press Ctrl-C (SIGINT). While training, :class:`StopRequests` records the first such signal instead of
letting it kill the process mid-step; the engine notices it after the step in progress, writes a checkpoint
(atomically, so a second signal during the write cannot damage it) and raises :class:`Stopped`, which the
command line turns into a message naming the checkpoint and the resume command, and the exit status a
scheduler expects (128 + the signal's number: 143 for SIGTERM, 130 for SIGINT, 138 for SIGUSR1). A second
Ctrl-C stops at once (KeyboardInterrupt); the checkpoint written before it is kept.

Under ``torchrun`` every rank receives the signal; the ranks agree on the step to stop at by all-reducing the
request with the step's finiteness check (:meth:`selfsup.engine.trainer.Trainer._check_step`), so all of
them stop after the same step.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any

STOP_SIGNALS = tuple(s for s in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGUSR1", None)) if s is not None)


class Stopped(Exception):
    """Training stopped on a signal after a checkpoint was written."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum

    @property
    def exit_status(self) -> int:
        return 128 + int(self.signum)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class StopRequests:
    """Within the ``with`` block, SIGTERM, SIGINT and SIGUSR1 set :attr:`signum` instead of ending the
    process (only in the main thread; elsewhere signals keep their handlers)."""

    def __init__(self) -> None:
        self.signum = 0
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.signum = self.signum or signum

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
