"""tests/background.py: session work queued in one background thread; a
fixture waits for work that runs and takes over work that has not started,
with every job queued after it."""

from __future__ import annotations

import threading

from background import Background


def test_queued_work_is_taken_over_with_what_follows_it_and_running_work_is_awaited() -> None:
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
    background.start("c", job("c"))
    # "b" is queued behind the running "a": done here, and "c" (which may build on it) too
    assert background.result("b", job("b here")) == "b here"
    assert background.result("c", job("c here")) == "c here"
    release.set()
    assert background.result("a", job("a here")) == "a"  # it ran: awaited, not redone
    background.stop()
    assert ran == ["b here in foreground", "c here in foreground", "a in background"]


def test_work_never_queued_is_done_here() -> None:
    assert Background().result("x", lambda: 42) == 42
