"""The state of every run of a grid, read from the run folders (and, for a
scheduler, from what it says): done, running, pending, failed (with the
last error line of its log) or missing."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from dtvg_dist.grid.jobs import Job
from dtvg_dist.store.locks import HOLDER as LOCK_INFO
from dtvg_dist.store.locks import lock_holder

DONE, RUNNING, PENDING, FAILED, MISSING = "done", "running", "pending", "failed", "missing"
STATES = (DONE, RUNNING, PENDING, FAILED, MISSING)
__all__ = ["LOCK_INFO", "STATES", "claim", "holder", "last_error_line", "lock_holder", "render",
           "state_of", "status"]
CLAIM = ".grid.lock"  # held by the executor that starts a run, from before its process starts


def _claim_info(folder: Path) -> Path:
    return Path(folder) / (CLAIM + ".json")


@contextlib.contextmanager
def claim(folder: Path) -> Iterator[bool]:
    """Claim a run folder for this grid while its run starts and runs (True),
    or find it claimed by another executor (False). The trainer's own lock
    is taken only once its process has imported everything; the claim closes
    that window, so two grids never both start a run."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder / CLAIM))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        yield False
        return
    info = _claim_info(folder)
    info.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}))
    try:
        yield True
    finally:
        info.unlink(missing_ok=True)
        lock.release()


def _claimed(folder: Path) -> dict[str, Any] | None:
    path = Path(folder) / CLAIM
    if not path.exists():
        return None
    probe = FileLock(str(path))
    try:
        probe.acquire(timeout=0)
    except Timeout:
        try:
            return json.loads(_claim_info(folder).read_text())
        except (OSError, ValueError):
            return {"host": None, "pid": None, "started": None}
    probe.release()
    return None


def holder(folder: Path) -> dict[str, Any] | None:
    """Who runs a folder now: the trainer holding its lock, else the
    executor that claimed it to start a run; None when nobody does."""
    return lock_holder(folder) or _claimed(folder)

_ERROR = re.compile(r"error|exception|traceback|killed|out of memory", re.IGNORECASE)


def last_error_line(log: Path) -> str:
    """The last line of a log that reads as an error (an `error:` line, an
    exception), else its last line; the executor's own `# ...` lines skipped."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return ""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("# ")]
    for line in reversed(lines):
        if _ERROR.search(line):
            return line
    return lines[-1] if lines else ""


def state_of(job: Job, scheduler: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(state, detail) of one job. `scheduler` maps job names to what a
    scheduler says of them ("running" or "pending") and wins over the files
    unless the run is done."""
    said = (scheduler or {}).get(job.name)
    if job.is_done():
        return DONE, ""
    who = holder(job.run_dir)
    if who is not None:
        return RUNNING, f"host {who.get('host')}, pid {who.get('pid')}, since {who.get('started')}"
    if said in (RUNNING, PENDING):
        return said, ""
    if job.log.is_file():
        return FAILED, last_error_line(job.log)
    return MISSING, ""


def status(jobs: list[Job], scheduler: Mapping[str, str] | None = None) -> list[dict[str, str]]:
    """One row per job, in grid order: name, state, detail. A missing job
    whose need failed says which."""
    rows: list[dict[str, str]] = []
    states: dict[str, str] = {}
    for job in jobs:
        state, detail = state_of(job, scheduler)
        if state == MISSING:
            bad = [n for n in job.needs if states.get(n) == FAILED]
            if bad:
                detail = f"waits for {', '.join(bad)} (failed)"
        states[job.name] = state
        rows.append({"job": job.name, "state": state, "detail": detail, "log": str(job.log)})
    return rows


def render(rows: list[dict[str, str]]) -> str:
    """The table --status prints, then a count per state."""
    width = max([len("run"), *(len(r["job"]) for r in rows)])
    lines = [f"{'run':<{width}}  {'state':<8} detail"]
    lines += [f"{r['job']:<{width}}  {r['state']:<8} {r['detail']}".rstrip() for r in rows]
    counts = {s: sum(r["state"] == s for r in rows) for s in STATES}
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no runs")
    return "\n".join(lines)
