"""A grid of training runs as jobs with explicit dependencies.

A job is one trainer invocation: its name (the run folder relative to the
grid's root), the folder, the exact command, the jobs it needs (a stage-2
run needs the stage-1 runs that fill its bank; a few-shot run also those
of the full-data bank it copies from) and how many GPUs it occupies.
Executors (dtvg_dist.grid.executors) decide where and when jobs run; this
module only says what a job is, when it is done, and in which order jobs
may start.
"""

from __future__ import annotations

import shlex
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from dtvg_dist.errors import RecipeError
from dtvg_dist.store.run_files import RESULTS, entry_path

TRAIN_MODULE = ("-m", "dtvg_dist.train")
LOG_NAME = "run.log"  # one per run, in its folder: the trainer's stdout and stderr


@dataclass(frozen=True)
class Launch:
    """How a run is started: the argv before `-m dtvg_dist.train`, the
    overrides its launch mode needs (e.g. backbone.load_in_8bit=true), and
    the number of GPUs the processes use (0: no GPU, CPU only)."""

    prefix: tuple[str, ...]
    gpus: int = 0
    extra: tuple[str, ...] = ()
    mode: str = "python"  # "python", or the planner's mode: "ddp" | "ddp8" | "zero3"


@dataclass
class Job:
    """One trainer invocation of a grid."""

    name: str
    run_dir: Path
    recipe: str
    args: list[str]  # the trainer's arguments after `-m dtvg_dist.train`
    launch: Launch
    needs: tuple[str, ...] = ()  # names of the jobs that must be done first
    stage1: bool = False
    seed: int | None = None
    variant: str = "dtvg"
    title: str = ""  # what the job is, for logs ("seed 22: PT")
    bank: Path | None = None  # the bank this run reads (stage 2) or fills (stage 1)
    bank_tasks: tuple[str, ...] = ()  # stage 1: the entries it fills
    copies: list[tuple[Path, Path]] = field(default_factory=list)  # bank entries to copy first
    links: list[tuple[Path, str]] = field(default_factory=list)  # variant folder -> shared runs
    # A job whose product is files, not a results.json (a method's pre-stage,
    # e.g. MPT's shared prompt): done when every one exists.
    outputs: tuple[Path, ...] = ()
    note: str = ""  # the method's settings this run uses (Method.describe), for dry runs

    @property
    def gpus(self) -> int:
        return self.launch.gpus

    @property
    def command(self) -> list[str]:
        return [*self.launch.prefix, *TRAIN_MODULE, *self.args, *self.launch.extra]

    @property
    def shell(self) -> str:
        return shlex.join(self.command)

    @property
    def log(self) -> Path:
        return self.run_dir / LOG_NAME

    def done_reason(self) -> str | None:
        """Why the job needs no run (its outputs exist), or None."""
        if self.stage1:
            if self.bank is not None and self.bank_tasks and all(
                entry_path(self.bank, t).is_file() for t in self.bank_tasks
            ):
                return f"bank {self.bank} has {', '.join(self.bank_tasks)}"
            return None
        if self.outputs:
            if all(path.is_file() for path in self.outputs):
                return f"{', '.join(map(str, self.outputs))} exist"
            return None
        if (self.run_dir / RESULTS).is_file():
            return f"{self.run_dir / RESULTS} exists"
        return None

    def is_done(self) -> bool:
        return self.done_reason() is not None

    def describe(self) -> str:
        return self.title or self.name


def prepare(job: Job) -> str | None:
    """What a job needs on disk before it starts: its variant links and the
    bank entries it copies. Returns the error text when a source TPV is
    missing (its stage-1 run did not produce it)."""
    for path, target in job.links:
        if not path.exists() and not path.is_symlink():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.symlink_to(target, target_is_directory=True)
    missing = [str(src) for src, dst in job.copies if not src.is_file() and not dst.is_file()]
    if missing:
        return f"source TPVs missing: {', '.join(missing)} (their stage-1 runs did not finish)"
    for src, dst in job.copies:
        if not dst.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    return None


# ------------------------------------------------------------------ the graph
def link_stage1(jobs: list[Job]) -> None:
    """Give every stage-2 job the stage-1 jobs it needs: those filling its
    bank, and those filling a bank it copies entries from."""
    fills: dict[Path, list[str]] = {}
    for job in jobs:
        if job.stage1 and job.bank is not None:
            fills.setdefault(job.bank.resolve(), []).append(job.name)
    for job in jobs:
        if job.stage1:
            continue
        banks = [job.bank] if job.bank is not None else []
        banks += [src.parent for src, _ in job.copies]
        needs = [n for b in banks for n in fills.get(b.resolve(), [])]
        job.needs = tuple(dict.fromkeys([*job.needs, *needs]))


def check(jobs: Iterable[Job]) -> dict[str, Job]:
    """The jobs by name, after checking names are unique, every need names
    a job of the grid, and a need comes before its dependent (so the list
    order is a valid serial order and there is no cycle)."""
    by_name: dict[str, Job] = {}
    for job in jobs:
        if job.name in by_name:
            raise RecipeError(f"two jobs named {job.name!r} (the same run folder {job.run_dir})")
        for need in job.needs:
            if need not in by_name:
                raise RecipeError(f"job {job.name!r} needs {need!r}, which is not before it in the grid")
        by_name[job.name] = job
    return by_name


def dependents(jobs: Iterable[Job], name: str) -> list[str]:
    """Every job that needs `name`, directly or through others, in grid order."""
    out: list[str] = []
    blocked = {name}
    for job in jobs:
        if any(n in blocked for n in job.needs):
            blocked.add(job.name)
            out.append(job.name)
    return out
