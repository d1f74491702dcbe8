"""Where a run's checkpoints are and what their state.json says, without
torch: the SLURM job wrapper reads these on every node of every job, and
importing torch there cost about 1.5 s of CPU per node and restart
(dtvg_dist/store/checkpoint.py writes and loads the checkpoints)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

CHECKPOINT_DIR = "checkpoint"
PREVIOUS = CHECKPOINT_DIR + ".prev"
# newest first; checkpoint.old is what a crash between two renames left behind
SLOTS = (CHECKPOINT_DIR, PREVIOUS, CHECKPOINT_DIR + ".old")


def signal_stopped(output_dir: Path) -> list[Path]:
    """The runs of a pipeline's output_dir (stage 2 there, stage 1 under
    stage1/) whose newest checkpoint a stop signal wrote: for a job wrapper
    that must tell a requeue request from a failure when a launcher (torchrun
    reports any non-zero worker as failed) hides the workers' exit 75."""
    runs = [output_dir, *sorted(p for p in (output_dir / "stage1").glob("*") if p.is_dir())]
    return [run for run in runs if stopped_by_signal(run)]


def mark_stopped(run_dir: Path, stopped_by: str) -> None:
    """Record in the newest checkpoint that a signal stopped the run there."""
    state_file = run_dir / CHECKPOINT_DIR / "state.json"
    meta = json.loads(state_file.read_text())
    meta["stopped_by"] = stopped_by
    tmp = state_file.with_name("state.json.tmp")
    tmp.write_text(json.dumps(meta))
    os.replace(tmp, state_file)


def remove_checkpoints(run_dir: Path) -> None:
    """A fresh (not resumed) run: drop the checkpoints of an earlier run, so
    a later resume never falls back to one of them."""
    for name in (*SLOTS, CHECKPOINT_DIR + ".tmp"):
        if (run_dir / name).exists():
            shutil.rmtree(run_dir / name)


def checkpoints(run_dir: Path) -> list[Path]:
    """The checkpoint folders of `run_dir`, newest first."""
    return [run_dir / name for name in SLOTS if (run_dir / name / "state.json").is_file()]


def find_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint folder (not verified; `load_latest` verifies)."""
    found = checkpoints(run_dir)
    return found[0] if found else None


def stopped_by_signal(run_dir: Path) -> str | None:
    """The signal that stopped the run at its newest readable checkpoint, or None."""
    for path in checkpoints(run_dir):
        try:
            return json.loads((path / "state.json").read_text()).get("stopped_by")
        except (OSError, ValueError):
            continue
    return None
