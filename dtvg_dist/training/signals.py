"""Stopping cleanly when the scheduler asks: SLURM sends SIGTERM on
preemption and, with `--signal`, SIGUSR1 before the time limit.

The handler only records the signal. The trainer reads the record once per
optimizer step inside the loss all-reduce it already does (one more element
in that tensor, so no extra collective and no extra host sync), so every
rank learns of a signal that reached any rank at the same step, finishes
that step, and the main process writes a checkpoint before every rank
leaves with EXIT_REQUEUE. The handler stays installed for the process's
life, so a signal between two runs of one process stops the next run after
its first step instead of killing the process mid-write.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

from dtvg_dist.errors import Preempted  # noqa: F401 - raised here, imported from here

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)




class StopRequest:
    """The first stop signal this process received, if any."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.installed = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum

    def install(self) -> None:
        """Catch STOP_SIGNALS (main thread only: Python delivers signals there)."""
        if self.installed or threading.current_thread() is not threading.main_thread():
            return
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._handle)
        self.installed = True

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else "none"

    def clear(self) -> None:
        self.signum = None


_REQUEST = StopRequest()


def stop_request() -> StopRequest:
    """The process's StopRequest, its handlers installed on first use."""
    _REQUEST.install()
    return _REQUEST
