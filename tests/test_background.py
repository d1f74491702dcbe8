"""tests/background.py: session work queued in one background thread; a
fixture waits for work that runs (a helper runs the next queued piece
meanwhile) and takes over work that has not started, with the work that
builds on it; other queued work stays queued."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest
from background import BACKGROUND, THREAD_PREFIX, Background


def test_queued_work_is_taken_over_alone_and_running_work_is_awaited() -> None:
    background = Background()
    release, a_runs = threading.Event(), threading.Event()
    ran: list[str] = []

    def job(name: str, wait: bool = False, base: str | None = None):
        def work() -> str:
            if wait:
                a_runs.set()
                assert release.wait(30)
            got = name if base is None else f"{name} on {background.done(base)}"
            ran.append(f"{got} in {'background' if Background.in_background() else 'foreground'}")
            return got
        return work

    background.start("a", job("a", wait=True))
    background.start("b", job("b"))
    background.start("c", job("c", base="b"), after=("b",))
    background.start("d", job("d"))
    assert a_runs.wait(30)
    # "b" is queued behind the running "a": done here; "c", which builds on
    # it, stays queued and gets what was made here
    assert background.result("b", job("b here")) == "b here"
    release.set()
    assert background.result("a", job("a here")) == "a"  # it ran: awaited, not redone
    background._jobs["d"].result(timeout=30)  # the queue ran on (c and d, beside or after a)
    assert background.result("c", job("c here")) == "c on b here"
    assert background.result("d", job("d here")) == "d"
    background.stop()
    assert ran[0] == "b here in foreground"
    assert sorted(ran[1:]) == ["a in background", "c on b here in background", "d in background"]


def test_while_a_fixture_waits_for_running_work_the_next_piece_runs_beside_it() -> None:
    """"a" runs until "c" has run; "c" builds on "b", queued behind "a". Run
    one piece at a time, "a" would never end; while its fixture waits, a
    helper takes "b", then "c" (only once "b" is done), and "a" ends."""
    background = Background()
    a_runs, c_ran = threading.Event(), threading.Event()
    threads: dict[str, str] = {}

    def a() -> str:
        threads["a"] = threading.current_thread().name
        a_runs.set()
        assert c_ran.wait(30), "nothing ran beside the waiting fixture"
        return "a"

    def c() -> str:
        threads["c"] = threading.current_thread().name
        got = f"c on {background.done('b')}"
        c_ran.set()
        return got

    background.start("a", a)
    background.start("b", lambda: "b")
    background.start("c", c, after=("b",))
    assert a_runs.wait(30)
    assert background.result("a", lambda: "a here") == "a"
    assert background.result("c", lambda: "c here") == "c on b"
    background.stop()
    assert threads["a"] == THREAD_PREFIX and threads["c"] == f"{THREAD_PREFIX}-helper"


def test_work_building_on_a_failed_take_over_fails_with_its_error() -> None:
    background = Background()
    release = threading.Event()
    background.start("a", lambda: release.wait(30))
    background.start("b", lambda: 1)
    background.start("c", lambda: background.done("b") + 1, after=("b",))

    def broken() -> int:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        background.result("b", broken)
    release.set()
    assert "disk full" in str(background._jobs["c"].exception(timeout=30))  # it ran there, after "a"
    with pytest.raises(OSError, match="disk full"):
        background.result("c", lambda: 0)
    background.stop()


def test_offers_queue_the_work_needed_soonest_first() -> None:
    """The queue's order is the first use of each piece's fixture, where
    work building on a piece pulls it forward; ties keep the order offered;
    work no selected test uses is not queued."""
    background = Background()
    release, ran = threading.Event(), []

    def job(name: str):
        def work() -> str:
            if name == "late":
                assert release.wait(30)  # holds the worker until everything is queued
            ran.append(name)
            return name
        return work

    for name, after in (("late", ()), ("base", ()), ("soon:a", ()), ("soon:b", ()), ("on_base", ("base",)),
                        ("unused", ())):
        background.offer(name, job(name), after=after)
    background.start_offers({"late": 0, "base": 9, "soon": 5, "on_base": 2})
    assert [piece[0] for piece in background._queue] in (["base", "on_base", "soon:a", "soon:b"],
                                                          ["late", "base", "on_base", "soon:a", "soon:b"])
    release.set()
    background._jobs["soon:b"].result(timeout=30)
    background.stop()
    assert ran == ["late", "base", "on_base", "soon:a", "soon:b"] and "unused" not in background._jobs


def test_a_pool_started_in_the_background_is_the_backgrounds() -> None:
    """Background.pool's threads count as the background's exactly when the
    work that starts them runs there."""
    def inside() -> bool:
        with Background.pool(2, "fan") as pool:
            return all(pool.map(lambda _: Background.in_background(), range(2)))

    background = Background()
    background.start("fan", inside)
    assert background._jobs["fan"].result(timeout=30) is True  # ran in the background
    background.stop()
    assert inside() is False  # here, in the test's thread


def test_work_never_queued_is_done_here() -> None:
    assert Background().result("x", lambda: 42) == 42


@pytest.mark.slow  # starts a process
def test_a_process_started_there_gets_the_sessions_environment(monkeypatch) -> None:
    """A test's monkeypatched variables (RANK, a fault injection) never reach
    a process the background starts meanwhile; what the work sets does."""
    monkeypatch.setenv("DTVG_BG_KEPT", "session")
    monkeypatch.delenv("DTVG_BG_NEW", raising=False)
    background = Background()
    background.start_offers({})  # the session's environment, as at the end of collection
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
