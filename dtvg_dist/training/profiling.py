"""`logging.profile=true`: a torch.profiler trace of a few optimizer steps
after warm-up, in `<output_dir>/profile/` (TensorBoard's profiler plugin and
Perfetto / chrome://tracing read its `*.pt.trace.json`), and the top
operators by time in the log and in `profile/top_operators.txt`.

Off (the default), the trainer holds a `NoProfiler` whose `step` does
nothing: no profiler is built and nothing is imported.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("dtvg_dist.training.profiling")

SKIP_STEPS = 2  # steps left out first: allocation, compilation, caches warming
WARMUP_STEPS = 1  # profiled but discarded (the profiler's own warm-up)
ACTIVE_STEPS = 3  # recorded
TOP_OPERATORS = 15
PROFILE_DIR = "profile"


class NoProfiler:
    """What the trainer steps when profiling is off."""

    def step(self) -> None:
        return None

    def close(self) -> None:
        return None


class StepProfiler:
    """torch.profiler over optimizer steps SKIP+1+WARMUP .. SKIP+WARMUP+ACTIVE
    (fewer when the run is shorter); main process only."""

    def __init__(self, out_dir: Path, max_steps: int, name: str) -> None:
        import torch
        from torch.profiler import ProfilerActivity, profile, schedule

        self.dir = Path(out_dir) / PROFILE_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        skip = min(SKIP_STEPS, max(max_steps - 2, 0))
        active = max(1, min(ACTIVE_STEPS, max_steps - skip - WARMUP_STEPS))
        activities = [ProfilerActivity.CPU]
        if torch.cuda.is_available():
            activities.append(ProfilerActivity.CUDA)
        self.written = False
        self.name = name
        self._prof: Any = profile(
            activities=activities,
            schedule=schedule(skip_first=skip, wait=0, warmup=WARMUP_STEPS, active=active, repeat=1),
            on_trace_ready=self._ready,
            record_shapes=False,
        )
        self._prof.start()
        self.cuda = len(activities) > 1
        log.info("%s: profiling %d step(s) after step %d into %s", name, active, skip + WARMUP_STEPS, self.dir)

    def _ready(self, prof: Any) -> None:
        from torch.profiler import tensorboard_trace_handler

        tensorboard_trace_handler(str(self.dir), worker_name=self.name.replace("/", "_"))(prof)
        sort_by = "self_device_time_total" if self.cuda else "self_cpu_time_total"
        table = prof.key_averages().table(sort_by=sort_by, row_limit=TOP_OPERATORS)
        (self.dir / "top_operators.txt").write_text(table + "\n")
        log.info("%s: top operators by %s (trace in %s)\n%s", self.name, sort_by, self.dir, table)
        self.written = True

    def step(self) -> None:
        self._prof.step()

    def close(self) -> None:
        """Stop (a run shorter than the schedule writes what it recorded)."""
        if self._prof is not None:
            self._prof.stop()
            self._prof = None


def step_profiler(enabled: bool, out_dir: Path, max_steps: int, name: str, main: bool) -> NoProfiler | StepProfiler:
    return StepProfiler(out_dir, max_steps, name) if enabled and main else NoProfiler()
