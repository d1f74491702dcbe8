"""Session work started in the background as soon as collection shows that a
selected test needs it.

The suite is CPU-bound on two cores, yet while a test waits on a one-thread
run the other core idles. The session fixtures started here read nothing a
test writes, so their work starts in one background thread at the end of
collection, one process at a time, beside whatever test runs; the fixture
returning it waits for it while it runs, and does it itself, the fast way,
when it has not started yet.
Processes the background thread starts are its own: conftest.py's watcher
does not count them against the test running at the time, and the session's
end kills any still running.
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

THREAD_PREFIX = "dtvg-background"


class Background:
    """Named pieces of work run one after another in one thread."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._jobs: dict[str, Future] = {}
        self._procs: list[subprocess.Popen] = []
        self._offers: dict[str, Callable[[], Any]] = {}
        self._root: Path | None = None

    def offer(self, name: str, work: Callable[[], Any]) -> None:
        """The work of the session or module fixture `name`, started at the
        end of collection if a selected test uses that fixture (in the order
        offered: conftest.py's first, then the test modules')."""
        self._offers[name] = work

    def start_offers(self, wanted: set[str]) -> None:
        for name, work in self._offers.items():
            if name in wanted:
                self.start(name, work)

    def folder(self, name: str) -> Path:
        """A fresh folder for background work, removed when the session ends."""
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix="dtvg-test-background-"))
            atexit.register(shutil.rmtree, self._root, True)
        return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self._root))

    @staticmethod
    def in_background() -> bool:
        return threading.current_thread().name.startswith(THREAD_PREFIX)

    def started(self, proc: subprocess.Popen) -> None:
        """A process the background thread started (killed if the session ends first)."""
        self._procs.append(proc)

    def start(self, name: str, work: Callable[[], Any]) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=THREAD_PREFIX)
        self._jobs[name] = self._pool.submit(work)

    def result(self, name: str, work: Callable[[], Any]) -> Any:
        """What `name` gave (waiting for it while it runs), else `work()` here:
        when it was never queued, or is still queued (it is then taken off the
        queue with every job after it, which may build on it)."""
        if name not in self._jobs:
            return work()
        future = self._jobs[name]
        if future.running() or future.done():
            return future.result()
        names = list(self._jobs)
        for queued in reversed(names[names.index(name):]):  # last first: none starts after one it needs
            if self._jobs[queued].cancel():
                del self._jobs[queued]
        return work() if name not in self._jobs else self._jobs[name].result()

    def stop(self) -> None:
        """The session is over: drop what has not started, kill what runs."""
        for future in self._jobs.values():
            future.cancel()
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
        if self._pool is not None:
            self._pool.shutdown(wait=True)


BACKGROUND = Background()
