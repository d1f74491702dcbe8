"""Preemption under `accelerate launch` (2 CPU processes, gloo): a SIGTERM to
the launcher reaches every rank (torchrun forwards it), and a SIGTERM that
reaches one rank only stops every rank at the same step; either way the
main process checkpoints, each worker exits 75, and the same command then
resumes to outputs equal to an uninterrupted run's, bit for bit."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import torch
from dist_runs import check, jsonl, launch_cmd, losses, prompt, results, run, start, tail, wait

from dtvg_dist.errors import EXIT_REQUEUE
from dtvg_dist.store.checkpoint import load_checkpoint

pytestmark = pytest.mark.distributed


def _args(ref, out: Path) -> list[str]:
    return [f"recipe={ref.recipe}", "stage=2", f"bank_dir={ref.bank}", f"output_dir={out}"]


def _assert_equal_runs(whole: Path, resumed: Path) -> None:
    a, b = prompt(whole), prompt(resumed)
    assert sorted(a) == sorted(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert losses(whole) == losses(resumed) and len(losses(resumed)) == 6
    ra, rb = results(whole), results(resumed)
    assert ra["test"] == rb["test"] and ra["best_validation"] == rb["best_validation"]
    assert jsonl(whole / "grouping.jsonl") == jsonl(resumed / "grouping.jsonl")


def _stopped_workers(log: Path, step: int) -> list[str]:
    lines = [line for line in log.read_text().splitlines() if line.startswith("stopped: ")]
    assert len(lines) == 2, tail(log)  # both workers left through the requeue path
    assert all(f"after step {step};" in line for line in lines), lines
    return lines


@pytest.mark.parametrize("config", ["cpu_ddp_2proc.yaml", "cpu_zero3_2proc.yaml"])
def test_sigterm_checkpoints_and_resumes_exactly(references, config, tmp_path):
    ref = references["tiny-llama"]
    # The uninterrupted run side by side with the stopped one (own folder,
    # own port): it is only read at the end.
    whole, whole_log = tmp_path / "whole", tmp_path / "whole.txt"
    whole_proc = start(launch_cmd(config, *_args(ref, whole)), whole_log)
    try:
        out, log = tmp_path / "run", tmp_path / "stopped.txt"
        if config == "cpu_ddp_2proc.yaml":
            # The launcher gets SIGTERM (what `kill` or a scheduler sends it) while
            # both ranks are paused at the start of step 4; torchrun forwards it.
            go = tmp_path / "go"
            proc = start(launch_cmd(config, *_args(ref, out)), log, DTVG_FAULT_STEP="4",
                         DTVG_FAULT_KIND="wait", DTVG_FAULT_FILE=str(go))
            deadline = time.monotonic() + 300
            while not (out / "checkpoint" / "state.json").is_file():  # step 3's checkpoint
                assert proc.poll() is None and time.monotonic() < deadline, tail(log)
                time.sleep(0.2)
            os.kill(proc.pid, signal.SIGTERM)
            while "death signal" not in log.read_text():
                assert time.monotonic() < deadline, tail(log)
                time.sleep(0.1)
            time.sleep(1.0)
            go.touch()
            step, why = 4, "SIGTERM"
        else:
            # Only rank 1 gets SIGTERM, at the start of step 2: rank 0 learns of it
            # in that step's all-reduce and both stop after step 2.
            proc = start(launch_cmd(config, *_args(ref, out)), log, DTVG_FAULT_STEP="2",
                         DTVG_FAULT_RANK="1", DTVG_FAULT_KIND="sigterm")
            step, why = 2, "a signal to another rank"
        code = wait(proc, log, timeout=300)
        assert code != 0  # torchrun reports a worker that exits 75 as failed
        _stopped_workers(log, step)
        ckpt = load_checkpoint(out / "checkpoint")
        assert ckpt.state.step == step and ckpt.stopped_by == why
        assert not (out / "results.json").exists()

        log2 = tmp_path / "resume.txt"
        check(run(launch_cmd(config, *_args(ref, out)), log2), log2)  # the same command
        assert f"at step {step} (stopped there by {why})" in log2.read_text()
        check(wait(whole_proc, whole_log, timeout=300), whole_log)
    finally:  # a failed check above must not leave it running
        if whole_proc.poll() is None:
            whole_proc.kill()
    _assert_equal_runs(whole, out)


def test_worker_exit_code_is_75(references, tmp_path):
    """One process: the trainer's own exit code (what a scheduler sees
    without a launcher in between)."""
    from dist_runs import single_cmd

    ref = references["tiny-llama"]
    out, log = tmp_path / "run", tmp_path / "log.txt"
    code = run(single_cmd(*_args(ref, out)), log, DTVG_FAULT_STEP="2", DTVG_FAULT_KIND="sigusr1")
    assert code == EXIT_REQUEUE, tail(log)
    assert load_checkpoint(out / "checkpoint").stopped_by == "SIGUSR1"
