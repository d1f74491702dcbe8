"""tests/background.py: session work queued in one background thread; a
fixture waits for work that runs and takes over work that has not started,
with the work that builds on it; other queued work stays queued."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest
from background import BACKGROUND, THREAD_PREFIX, Background


def test_queued_work_is_taken_over_with_what_builds_on_it_and_running_work_is_awaited() -> None:
    background = Background()
    release = threading.Event()
    ran: list[str] = []

    def job(name: str, wait: bool = False):
        def work() -> str:
            if wait:
                assert release.wait(30)
            ran.append(f"{name} in {'background' if Background.in_background() else 'foreground'}")
            return name
        return work

    background.start("a", job("a", wait=True))
    background.start("b", job("b"))
    background.start("c", job("c"), after=("b",))
    background.start("d", job("d"))
    background.start("e", job("e"), after=("c",))
    # "b" is queued behind the running "a": done here, and "c" and "e" (which
    # build on it) too; "d" builds on nothing taken and stays queued
    assert background.result("b", job("b here")) == "b here"
    assert background.result("c", job("c here")) == "c here"
    assert background.result("e", job("e here")) == "e here"
    release.set()
    assert background.result("a", job("a here")) == "a"  # it ran: awaited, not redone
    assert background.result("d", job("d here")) == "d"
    background.stop()
    assert ran == ["b here in foreground", "c here in foreground", "e here in foreground",
                   "a in background", "d in background"]


def test_work_reads_what_it_builds_on_and_must_be_offered_after_it() -> None:
    background = Background()
    background.offer("base", lambda: 20)
    background.offer("top", lambda: background.done("base") + 1, after=("base",))
    with pytest.raises(ValueError, match="orphan: offered before what it builds on: nothing"):
        background.offer("orphan", lambda: 0, after=("nothing",))
    background.start_offers({"base", "top"})
    assert background._jobs["top"].result(timeout=30) == 21  # ran there, after base
    assert background.result("top", lambda: 0) == 21
    background.stop()
    # work whose base was not wanted is not started (its fixture does it)
    other = Background()
    other.offer("base", lambda: 20)
    other.offer("top", lambda: other.done("base") + 1, after=("base",))
    other.start_offers({"top"})
    assert other.result("top", lambda: "here") == "here"
    other.stop()


def test_work_never_queued_is_done_here() -> None:
    assert Background().result("x", lambda: 42) == 42


@pytest.mark.slow  # starts a process
def test_a_process_started_there_gets_the_sessions_environment(monkeypatch) -> None:
    """A test's monkeypatched variables (RANK, a fault injection) never reach
    a process the background starts meanwhile; what the work sets does."""
    monkeypatch.setenv("DTVG_BG_KEPT", "session")
    monkeypatch.delenv("DTVG_BG_NEW", raising=False)
    background = Background()
    background.start_offers(set())  # the session's environment, as at the end of collection
    monkeypatch.setenv("DTVG_BG_KEPT", "a test's")
    monkeypatch.setenv("DTVG_BG_NEW", "a test's")
    env = background.environment({**os.environ, "OMP_NUM_THREADS": "7"})
    assert env["DTVG_BG_KEPT"] == "session" and "DTVG_BG_NEW" not in env
    assert env["OMP_NUM_THREADS"] == "7"
    assert background.environment(None)["DTVG_BG_KEPT"] == "session"
    # through conftest.py's watcher: a real process started on the background thread
    code = "import os; print(os.environ.get('DTVG_BG_KEPT'), os.environ.get('DTVG_BG_NEW'))"
    pool = threading.Thread(name=f"{THREAD_PREFIX}-test", target=lambda: out.append(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.split()))
    out: list[list[str]] = []
    saved = BACKGROUND._environ
    BACKGROUND._environ = background._environ
    try:
        pool.start()
        pool.join(60)
    finally:
        BACKGROUND._environ = saved
    assert out == [["session", "None"]]
