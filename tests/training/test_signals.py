"""Preemption in one process: SIGTERM / SIGUSR1 mid-run checkpoints and exits
75, the same command resumes, and the outputs equal an uninterrupted run's
exactly; a truncated newest checkpoint falls back to the previous one; a
changed bank entry refuses the resume."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from cli_runs import check_ok, finish, jsonl, losses, prompt_tensors, results, run_cli, start_cli

from dtvg_dist.errors import EXIT_REQUEUE, EXIT_USER_ERROR
from dtvg_dist.store.bank import entry_path, load_entry, save_entry
from dtvg_dist.store.checkpoint import load_checkpoint
from dtvg_dist.training.signals import stop_request


def test_stop_request_records_the_first_signal():
    request = stop_request()
    request.clear()
    os.kill(os.getpid(), signal.SIGUSR1)
    os.kill(os.getpid(), signal.SIGTERM)
    assert request.requested and request.name == "SIGUSR1"
    assert signal.getsignal(signal.SIGTERM) == request._handle  # still installed
    request.clear()
    assert not request.requested


def assert_same_run(whole: Path, other: Path) -> None:
    """The standard of the SIGKILL resume test: bit-equal prompt, equal
    losses, grouping, best validation and test metrics."""
    a, b = prompt_tensors(whole), prompt_tensors(other)
    assert set(a) == set(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    ra, rb = results(whole), results(other)
    assert ra["best_validation"] == rb["best_validation"] and ra["test"] == rb["test"]
    assert ra["best_step"] == rb["best_step"] and rb["steps"] == 9
    assert losses(whole) == losses(other)
    assert jsonl(whole / "grouping.jsonl") == jsonl(other / "grouping.jsonl")


@pytest.fixture(scope="module")
def runs(tiny_runs, tmp_path_factory):
    """An uninterrupted 9-step stage-2 run and, side by side (independent
    folders), one stopped by SIGTERM at step 5 (checkpoints of steps 3 and 6
    would be written; 5 is between them)."""
    root = tmp_path_factory.mktemp("preempt")
    bank = root / "bank"
    shutil.copytree(tiny_runs["tiny-t5"] / "bank", bank)
    common = ["recipe=tiny-t5", "stage=2", f"bank_dir={bank}", "source_tasks=[syn_same,syn_flip]",
              "optim.max_steps=9", "eval.every_steps=3"]
    whole = root / "whole"
    whole_proc = start_cli(*common, f"output_dir={whole}")
    stopped = root / "stopped"
    proc = run_cli(*common, f"output_dir={stopped}",
                   env={"DTVG_FAULT_STEP": "5", "DTVG_FAULT_KIND": "sigterm"})
    check_ok(finish(whole_proc))
    return common, bank, whole, stopped, proc


@pytest.fixture(scope="module")
def reruns(runs, tmp_path_factory) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    """The stopped run, copied and made ready for each test below, then each
    copy's command, two at a time (one thread each, independent folders):
    name -> (its folder, the finished command)."""
    common, bank, _, stopped, _ = runs
    root = tmp_path_factory.mktemp("reruns")
    commands = {}
    # the same command, without resume=true, picks the run up where it stopped
    commands["resumed"] = [*common, f"output_dir={_copy(stopped, root / 'resumed')}"]
    out = _copy(stopped, root / "truncated")
    best = out / "checkpoint" / "best.safetensors"
    best.write_bytes(best.read_bytes()[: best.stat().st_size // 2])
    commands["truncated"] = [*common, f"output_dir={out}", "resume=true"]
    out = _copy(stopped, root / "both")
    (out / "checkpoint" / "best.safetensors").write_bytes(b"\0" * 10)
    optimizer = out / "checkpoint.prev" / "optimizer.safetensors"
    data = bytearray(optimizer.read_bytes())
    data[-1] ^= 0xFF  # same length, one flipped byte: only the checksum sees it
    optimizer.write_bytes(bytes(data))
    commands["both"] = [*common, f"output_dir={out}", "resume=true"]
    out = _copy(stopped, root / "changed")
    changed = _copy(bank, root / "bank")
    entry = load_entry(entry_path(changed, "syn_same"))
    save_entry(changed, "syn_same", entry.tpv + 0.01, entry.p_init, backbone=entry.backbone,
               init_seed=entry.init_seed, steps=entry.steps, best_score=entry.best_score)
    commands["changed"] = [*(a if not a.startswith("bank_dir=") else f"bank_dir={changed}" for a in common),
                           f"output_dir={out}"]
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = {name: pool.submit(run_cli, *args) for name, args in commands.items()}
        return {name: (root / name, future.result()) for name, future in done.items()}


def _copy(run: Path, dst: Path) -> Path:
    shutil.copytree(run, dst)
    return dst


def test_sigterm_checkpoints_exits_75_and_rerun_resumes_exactly(runs, reruns):
    _, _, whole, stopped, proc = runs
    assert proc.returncode == EXIT_REQUEUE, proc.stderr[-3000:]
    assert "stopped by SIGTERM after step 5" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (stopped / "results.json").exists()
    newest = load_checkpoint(stopped / "checkpoint")
    assert newest.state.step == 5 and newest.stopped_by == "SIGTERM"
    assert set(newest.bank) == {"syn_target", "syn_same", "syn_flip"}
    assert load_checkpoint(stopped / "checkpoint.prev").state.step == 3  # the last two are kept
    # the same command, without resume=true, picks the run up where it stopped
    out, again = reruns["resumed"]
    check_ok(again)
    assert "resumed from" in again.stderr and "at step 5 (stopped there by SIGTERM)" in again.stderr
    assert_same_run(whole, out)


def test_truncated_newest_checkpoint_falls_back_to_the_previous(runs, reruns):
    whole = runs[2]
    out, proc = reruns["truncated"]
    check_ok(proc)
    best = out / "checkpoint" / "best.safetensors"
    lines = [line for line in proc.stderr.splitlines() if "checkpoint unusable" in line]
    assert len(lines) == 1 and str(best) in lines[0], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert f"resumed from {out / 'checkpoint.prev'} at step 3" in proc.stderr
    assert_same_run(whole, out)


def test_no_usable_checkpoint_is_exit_2_saying_what_to_delete(reruns):
    out, proc = reruns["both"]
    assert proc.returncode == EXIT_USER_ERROR, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    error = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1
    assert f"Delete {out / 'checkpoint'} and {out / 'checkpoint.prev'}" in error[0]
    assert "does not match the sha256" in error[0]


def test_resume_refuses_a_changed_bank_entry(reruns):
    out, proc = reruns["changed"]
    changed = out.parent / "bank"
    assert proc.returncode == EXIT_USER_ERROR, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert f"bank entry {entry_path(changed, 'syn_same')} changed since checkpoint" in proc.stderr
    assert not (out / "results.json").exists()
