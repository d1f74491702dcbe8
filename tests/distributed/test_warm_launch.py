"""A warm launch trains as a cold one (tests/warm_python.py): accelerate's
launcher forked from the warm server asks the server for its workers too,
so they are not its children, and the run is the one a launcher started as
a fresh interpreter, with fresh workers, makes: per-step losses, prompt
tensors and evaluation rows, bit for bit."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import torch
import warm_python
from dist_runs import (
    REPO,
    check,
    env,
    evals,
    launch_cmd,
    losses,
    prompt,
    results,
    start,
    tail,
    wait,
)

pytestmark = pytest.mark.distributed


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (from /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def test_a_warm_launch_trains_as_a_cold_one(references, tmp_path):
    ref = references["tiny-llama"]

    def cmd(out: Path) -> list[str]:
        return launch_cmd("cpu_ddp_2proc.yaml", f"recipe={ref.recipe}", "stage=2", f"bank_dir={ref.bank}",
                          f"output_dir={out}", "optim.max_steps=4", "eval.every_steps=2")

    # rank 1 waits at the start of step 2 until `go` exists: both workers are up
    go = tmp_path / "go"
    fault = {"DTVG_FAULT_STEP": "2", "DTVG_FAULT_RANK": "1", "DTVG_FAULT_KIND": "wait",
             "DTVG_FAULT_FILE": str(go)}
    warm_log, cold_log = tmp_path / "warm.log", tmp_path / "cold.log"
    warm = start(cmd(tmp_path / "warm"), warm_log, **fault)
    assert isinstance(warm, warm_python.WarmProcess), "the launcher did not start warm"
    try:
        deadline, metrics = time.monotonic() + 300, tmp_path / "warm" / "metrics.jsonl"
        while not (metrics.is_file() and '"loss"' in metrics.read_text()):  # step 1 is done
            assert warm.poll() is None and time.monotonic() < deadline, tail(warm_log)
            time.sleep(0.2)
        assert _children(warm.pid) == [], "the workers are the launcher's children: started cold"
    finally:
        go.touch()
    check(wait(warm, warm_log), warm_log)
    with cold_log.open("w") as log:  # the same command, started as a user would
        cold = subprocess.Popen(cmd(tmp_path / "cold"), cwd=REPO, env=env(**fault), stdout=log,
                                stderr=subprocess.STDOUT)
    check(wait(cold, cold_log), cold_log)

    a, b = tmp_path / "warm", tmp_path / "cold"
    assert results(a)["world_size"] == results(b)["world_size"] == 2
    assert losses(a) == losses(b) and len(losses(a)) == 4
    pa, pb = prompt(a), prompt(b)
    assert sorted(pa) == sorted(pb) and all(torch.equal(pa[k], pb[k]) for k in pa)
    assert evals(a) == evals(b) and evals(a)
    assert results(a)["test"] == results(b)["test"]
