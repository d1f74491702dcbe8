"""Run-folder and bank-entry locks between real processes: a second holder
is refused naming the holder, a dead holder's lock is taken over with a
warning, and an entry waiter waits (bounded) for the holder to finish."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dtvg_dist.store.locks import RunLocked, entry_lock, lock_holder, run_lock

REPO = Path(__file__).resolve().parents[2]

HOLD = """
import sys, time
from pathlib import Path
from dtvg_dist.store.locks import {what}
with {what}({args}):
    print("held", flush=True)
    {then}
"""


def _holder(tmp_path: Path, what: str, args: str, then: str) -> subprocess.Popen:
    code = HOLD.format(what=what, args=args, then=then)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_holder_is_refused_naming_folder_and_holder(tmp_path):
    folder = tmp_path / "run"
    proc = _holder(tmp_path, "run_lock", f"Path({str(folder)!r})", "sys.stdin.read()")
    try:
        holder = lock_holder(folder)
        assert holder is not None and holder["pid"] == proc.pid
        with pytest.raises(RunLocked) as err, run_lock(folder):
            pass
        message = str(err.value)
        assert str(folder) in message and f"pid {proc.pid}" in message
        assert "host " in message and "started 20" in message
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    assert lock_holder(folder) is None  # released on exit
    with run_lock(folder):
        assert lock_holder(folder)["pid"] == os.getpid()


def test_stale_lock_of_a_dead_holder_is_taken_over_with_a_warning(tmp_path, caplog):
    folder = tmp_path / "run"
    proc = _holder(tmp_path, "run_lock", f"Path({str(folder)!r})",
                   "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert (folder / ".lock.json").is_file()  # the dead holder's record is left behind
    with caplog.at_level(logging.WARNING, logger="dtvg_dist.store.locks"), run_lock(folder):
        assert lock_holder(folder)["pid"] == os.getpid()
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "stale lock" in warning and f"pid {proc.pid}" in warning
    assert "no longer running" in warning
    assert not (folder / ".lock.json").exists()  # a clean release leaves no record


def test_entry_waiter_waits_for_the_holder_then_proceeds(tmp_path, caplog):
    bank = tmp_path / "bank"
    proc = _holder(tmp_path, "entry_lock", f"Path({str(bank)!r}), 'syn_same', 5",
                   "time.sleep(1.5)")
    start = time.monotonic()
    with caplog.at_level(logging.INFO, logger="dtvg_dist.store.locks"), \
            entry_lock(bank, "syn_same", timeout_s=30) as claim:
        waited = time.monotonic() - start
        assert claim.waited
    proc.wait(timeout=30)
    assert 0.5 < waited < 20
    line = " ".join(r.getMessage() for r in caplog.records)
    assert "bank entry syn_same: being trained by" in line and f"pid {proc.pid}" in line


def test_entry_wait_is_bounded(tmp_path):
    bank = tmp_path / "bank"
    proc = _holder(tmp_path, "entry_lock", f"Path({str(bank)!r}), 'syn_same', 5",
                   "sys.stdin.read()")
    try:
        start = time.monotonic()
        with pytest.raises(RunLocked, match="still being trained by"), \
                entry_lock(bank, "syn_same", timeout_s=0.5):
            pass
        assert time.monotonic() - start < 10
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    with entry_lock(bank, "syn_same", timeout_s=0.5) as claim:  # free now, no wait
        assert not claim.waited
