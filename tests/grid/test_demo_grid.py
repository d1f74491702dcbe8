"""`reproduce demo` on real (tiny) training: `local --max-parallel 2` gives
exactly the results of `serial`, and two overlapping `reproduce` commands on
one runs dir train every TPV exactly once and print the same table.

Both train for real through subprocesses of the trainer (processes of
their own, forked warm: tests/warm_python.py): slow on 2 cores, hence
marked slow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import warm_python
from background import BACKGROUND
from safetensors.torch import load_file

from dtvg_dist.store.run_files import read_jsonl
from dtvg_dist.tasks.synthetic import MIX_SOURCES, MIX_TARGET

REPO = Path(__file__).resolve().parents[2]
TINY = ["backbone.name_or_path=null", "backbone.tokenizer=synthetic", "optim.max_steps=4",
        "stage1.max_steps=4", "stage1.source_max_steps=4", "eval.every_steps=2",
        "logging.every_steps=1", "logging.progress_bar=false", "data.max_eval_examples=16"]
GRID = ["demo", "--seeds", "1", "--variants", "pt,dtvg", *TINY]
RUNS = ("pt/1", "dtvg/1")
TASKS = (MIX_TARGET, *MIX_SOURCES)  # the demo's main scenario (two-sources)

pytestmark = pytest.mark.slow


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _reproduce(cwd: Path, runs: Path, *extra: str) -> subprocess.Popen | warm_python.WarmProcess:
    """The grid command, warm, and so are the trainers its executor starts
    (tests/warm_python.py; the docs' pages run grids cold)."""
    return warm_python.popen([sys.executable, "-m", "dtvg_dist.reproduce", *GRID, "--runs-dir", str(runs),
                              *extra], cwd=cwd, env=_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen | warm_python.WarmProcess) -> str:
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-4000:]
    return out


def _table(stdout: str) -> list[str]:
    """The printed table: from its first line to the line before the run count."""
    lines = stdout.splitlines()
    first = next(i for i, line in enumerate(lines)
                 if line.startswith(f"target {MIX_TARGET}: ") and "training rows" in line)
    last = next(i for i, line in enumerate(lines) if line.startswith("(") and " runs in " in line)
    return lines[first:last]


def _serial_and_local(root: Path, at_once: bool) -> tuple[Path, str, str]:
    """The grid under the serial and the local executor (own runs dirs in
    `root`); both at once when `at_once`: the serial one fills the gaps of the
    local one's waits. Returns (root, both printouts)."""
    serial_proc = _reproduce(root, root / "serial", "--executor", "serial")
    serial = None if at_once else _finish(serial_proc)
    local_proc = _reproduce(root, root / "local", "--executor", "local", "--max-parallel", "2")
    return root, serial or _finish(serial_proc), _finish(local_proc)


def _overlapping(root: Path) -> tuple[Path, str, str]:
    """Two `reproduce` commands on one runs dir, the second started while the
    first's stage-1 run is starting. Returns (runs dir, both printouts)."""
    runs = root / "runs"
    first = _reproduce(root, runs)
    time.sleep(2.0)
    second = _reproduce(root, runs)
    return runs, _finish(first), _finish(second)


# in the background (tests/background.py): one grid at a time, the two
# overlapping commands together
BACKGROUND.offer("serial_and_local", lambda: _serial_and_local(BACKGROUND.folder("grids"), at_once=False))
BACKGROUND.offer("overlapping", lambda: _overlapping(BACKGROUND.folder("overlapping")))


@pytest.fixture(scope="module")
def serial_and_local(tmp_path_factory) -> tuple[Path, str, str]:
    return BACKGROUND.result("serial_and_local",
                             lambda: _serial_and_local(tmp_path_factory.mktemp("grids"), at_once=True))


@pytest.fixture(scope="module")
def overlapping(tmp_path_factory) -> tuple[Path, str, str]:
    return BACKGROUND.result("overlapping", lambda: _overlapping(tmp_path_factory.mktemp("overlapping")))


def test_local_with_two_at_once_equals_serial(serial_and_local) -> None:
    tmp_path, serial, local = serial_and_local
    assert "# start: pt/1 on 1 thread(s)" in local  # local ran it (pt and dtvg side by side)
    assert _table(serial) == _table(local)
    a, b = tmp_path / "serial/demo", tmp_path / "local/demo"
    for task in TASKS:  # every TPV bit for bit
        x, y = (load_file(str(d / "bank/seed1" / f"{task}.safetensors")) for d in (a, b))
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), task
    for run in RUNS:
        x, y = (load_file(str(d / run / "prompt.safetensors")) for d in (a, b))
        assert all(torch.equal(x[k], y[k]) for k in x), run
        losses = [[r.get("loss") for r in read_jsonl(d / run / "metrics.jsonl") if "loss" in r]
                  for d in (a, b)]
        assert losses[0] and losses[0] == losses[1], run
        ra, rb = (json.loads((d / run / "results.json").read_text()) for d in (a, b))
        assert ra["test"] == rb["test"] and ra["best_validation"] == rb["best_validation"], run
        assert (b / run / "run.log").is_file()  # one log per run


def test_two_overlapping_reproduce_commands_train_every_tpv_once(overlapping) -> None:
    runs, out_first, out_second = overlapping
    assert _table(out_first) == _table(out_second)
    assert "running elsewhere" in out_second + out_first
    logs = "".join(p.read_text() for p in (runs / "demo").rglob("run.log"))
    for task in TASKS:  # the trainer logs each entry it writes
        assert logs.count(f"stage 1: {task} -> bank entry") == 1, task
    for run in ("stage1/1", *RUNS):
        starts = [line for line in (runs / "demo" / run / "run.log").read_text().splitlines()
                  if line.startswith("# ") and " start" in line.split(": ", 1)[0]]
        assert len(starts) == 1, (run, starts)  # started by one command only
