"""Session work started in the background as soon as collection shows that a
selected test needs it.

The suite is CPU-bound on two cores, yet while a test waits on a one-thread
run the other core idles. The session fixtures started here read nothing a
test writes, so their work starts in one background thread at the end of
collection, one process at a time, beside whatever test runs; the fixture
returning it waits for it while it runs, and does it itself, the fast way,
when it has not started yet (taking it off the queue; work offered as
building on it stays queued and reads what the fixture made).
Processes the background thread starts are its own: conftest.py's watcher
does not count them against the test running at the time, gives them the
environment the session started with (not a running test's monkeypatched
one), and the session's end kills any still running.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Mapping
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
        self._offers: dict[str, tuple[Callable[[], Any], tuple[str, ...]]] = {}
        self._taken: dict[str, Future] = {}  # work a fixture took over: what it made
        self._root: Path | None = None
        self._environ: dict[str, str] | None = None

    def offer(self, name: str, work: Callable[[], Any], after: tuple[str, ...] = ()) -> None:
        """The work of the session or module fixture `name`, started at the
        end of collection if a selected test uses that fixture (in the order
        offered: conftest.py's first, then the test modules'). `after`: the
        offered work it builds on (offered before it; it reads their results
        through `done`)."""
        missing = [a for a in after if a not in self._offers]
        if missing:
            raise ValueError(f"{name}: offered before what it builds on: {', '.join(missing)}")
        self._offers[name] = (work, after)

    def start_offers(self, wanted: set[str]) -> None:
        self._environ = dict(os.environ)
        for name, (work, after) in self._offers.items():
            if name in wanted and all(a in self._jobs for a in after):
                self.start(name, work, after)

    def done(self, name: str) -> Any:
        """The result of the work this work was offered `after`: it ran
        first on this thread, or a fixture took it over (then this waits for
        the fixture)."""
        if name in self._taken:
            return self._taken[name].result(timeout=1800)
        return self._jobs[name].result(timeout=0)

    def folder(self, name: str) -> Path:
        """A fresh folder for background work, removed when the session ends."""
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix="dtvg-test-background-"))
            atexit.register(shutil.rmtree, self._root, True)
        return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self._root))

    @staticmethod
    def in_background() -> bool:
        return threading.current_thread().name.startswith(THREAD_PREFIX)

    def environment(self, env: Mapping[str, str] | None) -> dict[str, str]:
        """The environment of a process the background thread starts: `env`
        (None: this process's) with each variable that a running test has
        changed since the background started (monkeypatch.setenv of RANK,
        DTVG_FAULT_STEP, SLURM_JOB_ID, ...) put back as it was; what the work
        set itself stays."""
        now = dict(os.environ)
        out = dict(now if env is None else env)
        then = self._environ if self._environ is not None else now
        for key in set(now) | set(then):
            if now.get(key) != then.get(key) and out.get(key) == now.get(key):
                if key in then:
                    out[key] = then[key]
                else:
                    out.pop(key, None)
        return out

    def started(self, proc: subprocess.Popen) -> None:
        """A process the background thread started (killed if the session ends first)."""
        self._procs.append(proc)

    def start(self, name: str, work: Callable[[], Any], after: tuple[str, ...] = ()) -> None:
        """Queue `work` (`after`: queued before it, or taken over by a fixture)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=THREAD_PREFIX)
        self._jobs[name] = self._pool.submit(work)

    def result(self, name: str, work: Callable[[], Any]) -> Any:
        """What `name` gave (waiting for it while it runs), else `work()` here:
        when it was never queued, or is still queued (it is then taken off the
        queue; what builds on it stays queued and gets this call's result)."""
        future = self._jobs.get(name)
        if future is None:
            return work()
        # set before the cancel: what builds on it may start the moment it is off the queue
        made = self._taken[name] = Future()
        if not future.cancel():  # running or done
            del self._taken[name]
            return future.result()
        del self._jobs[name]
        try:
            value = work()
        except BaseException as err:
            made.set_exception(err)
            raise
        made.set_result(value)
        return value

    def stop(self) -> None:
        """The session is over: drop what has not started, kill what runs."""
        for made in self._taken.values():
            if not made.done():  # a fixture that never finished: nothing may wait for it
                made.set_exception(RuntimeError("the session ended first"))
        for future in self._jobs.values():
            future.cancel()
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
        if self._pool is not None:
            self._pool.shutdown(wait=True)


BACKGROUND = Background()
