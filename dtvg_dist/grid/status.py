"""The state of every run of a grid, read from the run folders (and, for a
scheduler, from what it says): done, running, pending, failed (with the
last error line of its log) or missing."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from dtvg_dist.grid.jobs import Job
from dtvg_dist.store.locks import HOLDER as LOCK_INFO
from dtvg_dist.store.locks import lock_holder

DONE, RUNNING, PENDING, FAILED, MISSING = "done", "running", "pending", "failed", "missing"
STATES = (DONE, RUNNING, PENDING, FAILED, MISSING)
__all__ = ["LOCK_INFO", "STATES", "last_error_line", "lock_holder", "render", "state_of", "status"]
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
    holder = lock_holder(job.run_dir)
    if holder is not None:
        return RUNNING, f"host {holder.get('host')}, pid {holder.get('pid')}, since {holder.get('started')}"
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
