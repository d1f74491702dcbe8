"""Session work started in the background as soon as collection shows that a
selected test needs it.

The suite is CPU-bound on two cores, yet while a test waits on a one-thread
run the other core idles. The session fixtures started here read nothing a
test writes, so their work starts in one background thread at the end of
collection, one process at a time, beside whatever test runs (the work the
earliest tests need first: a test waiting for running work leaves a core
idle once nothing else is queued); the fixture
returning it waits for it while it runs, and does it itself, the fast way,
when it has not started yet (taking it off the queue; work offered as
building on it stays queued and reads what the fixture made). While a
fixture waits for running work, the core it leaves idle takes the next
queued piece whose work it builds on is done (one such helper at a time):
the waiting test goes on when its work is done, the helper finishes its
piece beside the tests.
Processes the background threads start are theirs: conftest.py's watcher
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
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

THREAD_PREFIX = "dtvg-background"


class Background:
    """Named pieces of work run one after another in one thread (and one
    more beside it while a fixture waits for running work)."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._queue: list[tuple[str, Callable[[], Any], tuple[str, ...], Future]] = []
        self._worker: threading.Thread | None = None
        self._helper: threading.Thread | None = None
        self._stopped = False
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
        through `done`). A name `FIXTURE:PART` is one of several independent
        pieces of that fixture's work."""
        missing = [a for a in after if a not in self._offers]
        if missing:
            raise ValueError(f"{name}: offered before what it builds on: {', '.join(missing)}")
        self._offers[name] = (work, after)

    def start_offers(self, first_use: Mapping[str, int]) -> None:
        """Queue the offered work whose fixture a selected test uses;
        `first_use`: fixture name -> position of the first selected test that
        uses it. The queue runs the work needed soonest first (its own first
        use, or that of work building on it, whichever is sooner; then the
        order offered): a test waiting for work that runs leaves a core idle
        once nothing else is queued, so what the later tests need runs last."""
        self._environ = dict(os.environ)
        names = list(self._offers)
        needed = {name: first_use[name.split(":", 1)[0]] for name in names
                  if name.split(":", 1)[0] in first_use}
        for name in reversed(names):  # what builds on a piece was offered after it
            for base in self._offers[name][1]:
                if name in needed and base in needed:
                    needed[base] = min(needed[base], needed[name])
        for name in sorted(needed, key=lambda n: (needed[n], names.index(n))):
            work, after = self._offers[name]
            if all(a in self._jobs for a in after):
                self.start(name, work, after)

    def done(self, name: str) -> Any:
        """The result of the work this work was offered `after`: it ran
        first, or a fixture took it over (then this waits for the fixture)."""
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

    @classmethod
    def pool(cls, max_workers: int, name: str) -> ThreadPoolExecutor:
        """Threads for work that fans out: when it runs in the background,
        they are the background's too (what they start gets the session's
        environment and is not counted against the running test)."""
        prefix = f"{THREAD_PREFIX}-{name}" if cls.in_background() else name
        return ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=prefix)

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

    def set_session_env(self, key: str, value: str) -> None:
        """Set `key` for the rest of the session (a session fixture's
        variable, such as the test cluster's SLURM_CONF): not a test's
        change that `environment` would undo."""
        os.environ[key] = value
        if self._environ is not None:
            self._environ[key] = value

    def started(self, proc: subprocess.Popen) -> None:
        """A process the background thread started (killed if the session ends first)."""
        self._procs.append(proc)

    def start(self, name: str, work: Callable[[], Any], after: tuple[str, ...] = ()) -> None:
        """Queue `work` (`after`: queued before it, or taken over by a fixture)."""
        with self._cv:
            self._jobs[name] = future = Future()
            self._queue.append((name, work, after, future))
            if self._worker is None:
                self._worker = threading.Thread(target=self._serve, name=THREAD_PREFIX, daemon=True)
                self._worker.start()
            self._cv.notify_all()

    def _built_on_done(self, after: tuple[str, ...]) -> bool:
        return all((self._taken.get(a) or self._jobs[a]).done() for a in after)

    def _next(self) -> tuple[Callable[[], Any], Future] | None:
        """(Under the lock) the first queued piece whose `after` work is done, off the queue."""
        for i, (_, work, after, future) in enumerate(self._queue):
            if self._built_on_done(after):
                del self._queue[i]
                return work, future
        return None

    def _run(self, work: Callable[[], Any], future: Future) -> None:
        if future.set_running_or_notify_cancel():
            try:
                future.set_result(work())
            except BaseException as err:  # noqa: BLE001 - the fixture that reads it raises it
                future.set_exception(err)
        with self._cv:
            self._cv.notify_all()  # what builds on it may run now

    def _serve(self) -> None:
        while True:
            with self._cv:
                piece = self._next()
                while piece is None and not self._stopped:
                    self._cv.wait()
                    piece = self._next()
                if self._stopped:
                    return
            self._run(*piece)

    def _help(self) -> None:
        """Start the next runnable queued piece on a helper thread, unless one runs."""
        with self._cv:
            if self._stopped or (self._helper is not None and self._helper.is_alive()):
                return
            piece = self._next()
            if piece is None:
                return
            self._helper = threading.Thread(target=self._run, args=piece, name=f"{THREAD_PREFIX}-helper",
                                            daemon=True)
            self._helper.start()

    def result(self, name: str, work: Callable[[], Any]) -> Any:
        """What `name` gave (waiting for it while it runs, a helper taking the
        next queued piece meanwhile), else `work()` here: when it was never
        queued, or is still queued (it is then taken off the queue; what
        builds on it stays queued and gets this call's result)."""
        future = self._jobs.get(name)
        if future is None:
            return work()
        with self._cv:
            # set before the cancel: what builds on it may start the moment it is off the queue
            made = self._taken[name] = Future()
            taken = future.cancel()
            if taken:
                self._queue = [piece for piece in self._queue if piece[0] != name]
                del self._jobs[name]
            else:  # running or done
                del self._taken[name]
        if not taken:
            while not future.done():
                self._help()
                wait([future], timeout=1.0)
            return future.result()
        try:
            value = work()
        except BaseException as err:
            made.set_exception(err)
            raise
        else:
            made.set_result(value)
            return value
        finally:
            with self._cv:
                self._cv.notify_all()  # what builds on it may run now

    def stop(self) -> None:
        """The session is over: drop what has not started, kill what runs."""
        for made in self._taken.values():
            if not made.done():  # a fixture that never finished: nothing may wait for it
                made.set_exception(RuntimeError("the session ended first"))
        with self._cv:
            self._stopped = True
            for _, _, _, future in self._queue:
                future.cancel()
            self._queue.clear()
            self._cv.notify_all()
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
        for thread in (self._worker, self._helper):
            if thread is not None:
                thread.join()


BACKGROUND = Background()
