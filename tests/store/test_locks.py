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

from dtvg_dist.store.bank import entry_path, load_entry
from dtvg_dist.store.locks import RunLocked, entry_lock, lock_holder, run_lock

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # every test holds a lock in another process

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


def test_one_process_may_take_its_own_folder_twice(tmp_path):
    folder = tmp_path / "run"
    with run_lock(folder):
        with run_lock(folder):  # e.g. two pipelines of one demo process
            assert lock_holder(folder)["pid"] == os.getpid()
        assert lock_holder(folder)["pid"] == os.getpid()  # the outer hold remains
    assert lock_holder(folder) is None and not (folder / ".lock.json").exists()


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


# ------------------------------------------------------- the training command
def _train(*args: str, log: Path | None = None, **extra_env: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           **extra_env}
    stderr = open(log, "w") if log else subprocess.PIPE  # noqa: SIM115 - the child owns it
    return subprocess.Popen([sys.executable, "-m", "dtvg_dist.train", *args,
                             "logging.progress_bar=false"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=stderr, text=True)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300, text: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() or text not in path.read_text():
        assert proc.poll() is None, f"exit {proc.returncode} before {path} had {text!r}"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.2)


def test_two_trainers_on_one_output_dir_second_exits_2_at_once(tiny_runs, tmp_path):
    out = tmp_path / "run"
    args = ["recipe=tiny-t5", "stage=2", f"bank_dir={tiny_runs['tiny-t5'] / 'bank'}",
            "source_tasks=[syn_same,syn_flip]", "optim.max_steps=6", f"output_dir={out}"]
    go = tmp_path / "go"  # the first pauses at its step 2 until the second is done
    first = _train(*args, DTVG_FAULT_STEP="2", DTVG_FAULT_KIND="wait", DTVG_FAULT_FILE=str(go))
    _wait_for(out / ".lock.json", first)
    second = _train(*args)
    _, err = second.communicate(timeout=300)
    go.touch()
    assert second.returncode == 2, err[-3000:]
    assert "Traceback" not in err
    [line] = [line for line in err.splitlines() if line.startswith("error:")]
    assert f"run folder {out} is in use" in line and f"pid {first.pid}" in line
    _, first_err = first.communicate(timeout=600)
    assert first.returncode == 0, first_err[-3000:]
    assert (out / "results.json").is_file() and not (out / ".lock.json").exists()


def test_two_stage1_processes_train_a_shared_entry_once(tmp_path):
    bank = tmp_path / "bank"
    common = ["recipe=tiny-t5", "stage=1", "stage1.tasks=[syn_same]", "stage1.max_steps=4",
              "eval.every_steps=2", f"bank_dir={bank}"]
    go = tmp_path / "go"  # the first pauses at its step 2 until the second is waiting
    first = _train(*common, f"output_dir={tmp_path / 'a'}", DTVG_FAULT_STEP="2",
                   DTVG_FAULT_KIND="wait", DTVG_FAULT_FILE=str(go))
    _wait_for(bank / ".syn_same.lock.json", first)
    log_b = tmp_path / "b.log"
    second = _train(*common, f"output_dir={tmp_path / 'b'}", log=log_b)
    _wait_for(log_b, second, text="is being trained by")
    go.touch()
    second.communicate(timeout=600)
    _, err_a = first.communicate(timeout=600)
    err_b = log_b.read_text()
    assert first.returncode == 0, err_a[-3000:]
    assert second.returncode == 0, err_b[-3000:]
    assert "stage 1: bank entry syn_same is being trained by" in err_b
    assert f"pid {first.pid}" in err_b
    assert "syn_same was trained meanwhile by another process; using its bank entry" in err_b
    assert (tmp_path / "a" / "stage1" / "syn_same" / "results.json").is_file()
    assert not (tmp_path / "b" / "stage1" / "syn_same").exists()  # trained once
    assert load_entry(entry_path(bank, "syn_same")).steps == 4
