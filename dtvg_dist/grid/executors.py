"""Executors: where and when the jobs of a grid run.

Every executor takes the same list of jobs (dtvg_dist.grid.jobs) and
returns one Result per job. The rules they share live in the base class:
a job whose outputs exist is skipped, a job whose run folder is locked by
a live process is never started (it is waited for, then re-checked), a job
starts only once every job it needs is done, and a failed job fails only
the jobs that need it.

- ``serial``: one job at a time in grid order, output on the terminal and
  in the run's log (today's `reproduce`).
- ``local``: up to ``max_parallel`` jobs at once on this machine, each
  pinned to its own GPUs through CUDA_VISIBLE_DEVICES (no device shared),
  or on CPU given its share of the cores through OMP_NUM_THREADS.
- ``slurm``: dtvg_dist.grid.slurm (submitit), registered when importable.

No executor decides a run's torch thread count: the run sets it itself from
its recipe (`distributed.threads`, default 1; dtvg_dist/training/threads.py),
so every executor gives the same numbers. The OMP_NUM_THREADS an executor
exports only bounds other libraries, and torch's count where a recipe says
`distributed.threads=null`.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import shlex
import socket
import subprocess
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import ClassVar

from dtvg_dist.grid.jobs import Job, check, prepare
from dtvg_dist.grid.status import claim, holder, lock_holder

# Result states of one `run`: done (ran and finished now), skipped (its
# outputs existed), failed, blocked (a job it needs failed), submitted (a
# scheduler took it; see its status later).
DONE, SKIPPED, FAILED, BLOCKED, SUBMITTED = "done", "skipped", "failed", "blocked", "submitted"
OK_STATES = (DONE, SKIPPED)


@dataclass
class Result:
    job: str
    state: str
    detail: str = ""
    code: int | None = None  # the trainer's exit status, when it ran


# An in-process runner: trains one job in this process, returns its exit code.
Runner = Callable[[Job], int]


def _say(text: str, err: bool = False) -> None:
    print(text, file=sys.stderr if err else sys.stdout, flush=True)


def _stamp() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def announce(job: Job) -> None:
    """The lines a dry run prints for a job and a real run logs before it."""
    for path, target in job.links:
        _say(f"# link {path} -> {target} (the same configuration)")
    reason = job.done_reason()
    if reason:
        seed = f" seed {job.seed}" if job.seed is not None else ""
        _say(f"# skip {job.recipe}{seed}: {reason}")
        return
    for src, dst in job.copies:
        if not dst.is_file():
            _say(f"# copy {src} -> {dst}")
    if job.note:
        _say(f"# {job.note}")
    _say(job.shell)


class Executor(ABC):
    """Runs a grid's jobs; subclasses say how one job is started."""

    name: ClassVar[str]
    poll_s: float = 2.0  # how often a job locked by another process is re-checked

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add this executor's command-line options (reproduce's parser)."""
        return None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Executor:
        """The executor the parsed command line asks for."""
        return cls()

    def scheduler_states(self, jobs: list[Job]) -> dict[str, str]:
        """What a scheduler says of the jobs (name -> "running" | "pending"),
        for --status; a local executor has nothing to add to the run folders."""
        return {}

    def run(self, jobs: list[Job], dry_run: bool = False) -> dict[str, Result]:
        """Run (or with dry_run only print) every job; one Result per job, in grid order."""
        check(jobs)
        if dry_run:
            for job in jobs:
                announce(job)
            return {j.name: Result(j.name, SKIPPED, "dry run") for j in jobs}
        return self.execute(jobs)

    @abstractmethod
    def execute(self, jobs: list[Job]) -> dict[str, Result]:
        """Run the jobs (the grid is checked: names unique, needs come first)."""

    # ------------------------------------------------------------ shared rules
    @staticmethod
    def blocked_by(job: Job, results: dict[str, Result]) -> str | None:
        """The first job this one needs that failed (or was blocked), or None."""
        for need in job.needs:
            got = results.get(need)
            if got is not None and got.state not in OK_STATES + (SUBMITTED,):
                return need
        return None

    @staticmethod
    def ready(job: Job, results: dict[str, Result]) -> bool:
        return all(results.get(n) is not None and results[n].state in OK_STATES for n in job.needs)

    def wait_for_holder(self, job: Job) -> Result | None:
        """A job another live process is running: wait until its lock is
        released, then re-check it. None when nobody holds it."""
        who = holder(job.run_dir)
        if who is None:
            return None
        _say(f"# {job.name}: running elsewhere (host {who.get('host')}, pid {who.get('pid')}, "
             f"since {who.get('started')}); waiting for it, not starting it again")
        while holder(job.run_dir) is not None:
            time.sleep(self.poll_s)
        reason = job.done_reason()
        if reason:
            return Result(job.name, SKIPPED, f"finished elsewhere: {reason}")
        return Result(job.name, FAILED, "ran elsewhere and did not finish (see its log)")

    def attempt(self, job: Job, start: Callable[[], int]) -> Result:
        """Claim the run's folder, prepare it and start it (`start` returns
        the exit status); a folder another process holds or has claimed is
        waited for instead, then re-checked."""
        for _ in range(3):
            code: int | None = None
            with claim(job.run_dir) as mine:
                if mine and lock_holder(job.run_dir) is None:
                    error = prepare(job)
                    if error is not None:
                        return Result(job.name, FAILED, error)
                    code = start()
            if code is not None:  # settled with the claim given back: it may wait for others
                return self.settle(job, code)
            waited = self.wait_for_holder(job)
            if waited is not None:
                return waited
            reason = job.done_reason()
            if reason:
                return Result(job.name, SKIPPED, f"finished elsewhere: {reason}")
        return Result(job.name, FAILED, f"{job.run_dir} kept being taken by another process")

    def settle(self, job: Job, code: int) -> Result:
        """The result of a run that exited with `code`. A run refused because
        another process took its folder first (both saw it free) is that
        process's: waited for, then re-checked, like a held run."""
        if code != 0:
            waited = self.wait_for_holder(job)
            if waited is not None:
                return waited
            if job.is_done():
                return Result(job.name, SKIPPED, f"finished elsewhere: {job.done_reason()}")
        return self.finish(job, code)

    @staticmethod
    def finish(job: Job, code: int) -> Result:
        if code == 0 and job.is_done():
            return Result(job.name, DONE, code=0)
        if code == 0:
            return Result(job.name, FAILED, f"exit 0 but no outputs ({job.run_dir}); see {job.log}", 1)
        return Result(job.name, FAILED, f"exit status {code}; see {job.log}", code)

    @staticmethod
    def report_failure(job: Job, result: Result, jobs: Iterable[Job]) -> None:
        _say(f"# FAILED {job.describe()}: {result.detail}", err=True)
        needing = [j.name for j in jobs if job.name in j.needs]
        if needing:
            _say(f"# {len(needing)} job(s) that need it will not start: {', '.join(needing)}", err=True)


def _open_log(job: Job, command: str, env_note: str = ""):
    """The run's log, appended to: one header line per attempt."""
    job.run_dir.mkdir(parents=True, exist_ok=True)
    handle = job.log.open("a", buffering=1)
    handle.write(f"# {_stamp()} {socket.gethostname()} start{env_note}: {command}\n")
    return handle


class SerialExecutor(Executor):
    """One job at a time, in grid order: each a subprocess of the trainer
    (output on the terminal and in the run's log), or, given a ``runner``,
    in this process (the demo: no interpreter start per run)."""

    name = "serial"

    def __init__(self, runner: Runner | None = None) -> None:
        self.runner = runner

    def execute(self, jobs: list[Job]) -> dict[str, Result]:
        results: dict[str, Result] = {}
        for job in jobs:
            results[job.name] = result = self._one(job, results)
            if result.state == FAILED:
                self.report_failure(job, result, jobs)
        return results

    def _one(self, job: Job, results: dict[str, Result]) -> Result:
        need = self.blocked_by(job, results)
        if need is not None:
            return Result(job.name, BLOCKED, f"needs {need}, which did not finish")
        announce(job)
        reason = job.done_reason()
        if reason:
            return Result(job.name, SKIPPED, reason)
        if self.runner is not None:
            runner = self.runner
            return self.attempt(job, lambda: runner(job))
        return self.attempt(job, lambda: self._subprocess(job))

    @staticmethod
    def _subprocess(job: Job) -> int:
        with _open_log(job, job.shell) as log:
            proc = subprocess.Popen(job.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, bufsize=1)
            assert proc.stdout is not None
            for line in proc.stdout:  # tee: the terminal and the run's log
                sys.stdout.write(line)
                log.write(line)
            code = proc.wait()
            log.write(f"# {_stamp()} exit {code}\n")
        return code


def visible_gpus() -> list[str]:
    """The GPU ids this process may use: CUDA_VISIBLE_DEVICES when set, else
    every device torch sees (none on a CPU machine)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip() and d.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except ImportError:  # pragma: no cover - torch is a dependency
        return []


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


class LocalExecutor(Executor):
    """Up to ``max_parallel`` jobs at once on this machine. On GPUs every job
    gets ``job.gpus`` devices of its own (CUDA_VISIBLE_DEVICES) and a job
    waits until that many are free; on CPU each job gets
    OMP_NUM_THREADS=cores // max_parallel (torch's count only where the
    recipe leaves `distributed.threads` null). Output goes to each
    run's log only; a line per start and finish goes to the terminal."""

    name = "local"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--max-parallel", type=int, default=None, metavar="N",
                            help="local: runs at once (default: the visible GPU count, 1 on CPU)")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Executor:
        return cls(max_parallel=args.max_parallel)

    def __init__(self, max_parallel: int | None = None, devices: list[str] | None = None,
                 cores: int | None = None) -> None:
        self.devices = visible_gpus() if devices is None else list(devices)
        self.max_parallel = max_parallel or max(1, len(self.devices))
        if self.max_parallel < 1:
            raise ValueError(f"--max-parallel must be at least 1 (got {max_parallel})")
        self.cores = cores or cpu_cores()
        self._port = 29500 + (os.getpid() % 1000) * 10  # concurrent multi-GPU runs need their own ports
        self._lock = threading.Lock()

    def threads_per_run(self) -> int:
        return max(1, self.cores // self.max_parallel)

    def env_for(self, job: Job, devices: list[str]) -> dict[str, str]:
        env = dict(os.environ)
        if self.devices:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(devices)
        if not self.devices or "OMP_NUM_THREADS" not in env:
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(self.threads_per_run())
        return env

    def command_for(self, job: Job) -> list[str]:
        """The job's command; a multi-process accelerate launch gets a port of its own."""
        cmd = job.command
        if job.gpus > 1 and cmd[:2] == ["accelerate", "launch"] and "--main_process_port" not in cmd:
            with self._lock:
                self._port += 1
                port = self._port
            cmd = [*cmd[:2], "--main_process_port", str(port), *cmd[2:]]
        return cmd

    def _start(self, job: Job, devices: list[str]) -> Result:
        return self.attempt(job, lambda: self._spawn(job, devices))

    def _spawn(self, job: Job, devices: list[str]) -> int:
        env = self.env_for(job, devices)
        cmd = self.command_for(job)
        note = (f" on GPU {env['CUDA_VISIBLE_DEVICES']}" if self.devices
                else f" with OMP_NUM_THREADS={env['OMP_NUM_THREADS']}")
        with _open_log(job, shlex.join(cmd), note) as log:
            code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                  check=False).returncode
            log.write(f"# {_stamp()} exit {code}\n")
        return code

    def execute(self, jobs: list[Job]) -> dict[str, Result]:
        results: dict[str, Result] = {}
        pending = list(jobs)
        free = list(self.devices)
        running: dict[Future, tuple[Job, list[str], str]] = {}
        with ThreadPoolExecutor(max_workers=self.max_parallel + len(jobs)) as pool:
            while pending or running:
                started = self._start_ready(pending, results, running, free, pool, jobs)
                if not running:
                    if pending and not started:  # unreachable for a checked grid
                        for job in pending:
                            results[job.name] = Result(job.name, FAILED, "never became ready")
                        pending.clear()
                    continue
                finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for future in finished:
                    job, devices, kind = running.pop(future)
                    free.extend(devices)
                    result = future.result()
                    if kind == "run":
                        word = "FAILED" if result.state == FAILED else result.state
                        _say(f"# {word}: {job.name}" + (f" ({result.detail})" if result.detail else ""))
                    results[job.name] = result
                    if result.state == FAILED:
                        self.report_failure(job, result, jobs)
        return {j.name: results[j.name] for j in jobs}

    def _start_ready(self, pending: list[Job], results: dict[str, Result],
                     running: dict[Future, tuple[Job, list[str], str]], free: list[str],
                     pool: ThreadPoolExecutor, jobs: list[Job]) -> bool:
        """Start every job that can start now; True if any changed state."""
        changed = False
        for job in list(pending):
            need = self.blocked_by(job, results)
            if need is not None:
                results[job.name] = Result(job.name, BLOCKED, f"needs {need}, which did not finish")
                pending.remove(job)
                changed = True
                continue
            if not self.ready(job, results):
                continue
            reason = job.done_reason()
            if reason:
                announce(job)
                results[job.name] = Result(job.name, SKIPPED, reason)
                pending.remove(job)
                changed = True
                continue
            if holder(job.run_dir) is not None:  # waiting takes no device
                running[pool.submit(self.wait_for_holder_result, job)] = (job, [], "wait")
                pending.remove(job)
                changed = True
                continue
            slots = sum(kind == "run" for _, _, kind in running.values())
            if slots >= self.max_parallel:
                continue
            want = max(1, job.gpus) if self.devices else 0
            if self.devices and want > len(self.devices):
                results[job.name] = Result(job.name, FAILED, f"needs {want} GPUs, "
                                           f"{len(self.devices)} visible")
                self.report_failure(job, results[job.name], jobs)
                pending.remove(job)
                changed = True
                continue
            if want > len(free):
                continue  # a smaller job after it may still fit
            devices = [free.pop(0) for _ in range(want)]
            pending.remove(job)
            announce(job)
            where = f"GPU {','.join(devices)}" if devices else f"{self.threads_per_run()} thread(s)"
            _say(f"# start: {job.name} on {where}, log {job.log}")
            running[pool.submit(self._start, job, devices)] = (job, devices, "run")
            changed = True
        return changed

    def wait_for_holder_result(self, job: Job) -> Result:
        got = self.wait_for_holder(job)
        if got is not None:
            return got
        reason = job.done_reason()  # released between the two checks
        return Result(job.name, SKIPPED if reason else FAILED, reason or "its holder stopped; rerun")


EXECUTORS: dict[str, type[Executor]] = {"serial": SerialExecutor, "local": LocalExecutor}
SLURM_MODULE = "dtvg_dist.grid.slurm"  # adds "slurm" to EXECUTORS when imported


def register(cls: type[Executor]) -> type[Executor]:
    """Make an executor class selectable by its name (--executor NAME)."""
    EXECUTORS[cls.name] = cls
    return cls


def load_executors() -> dict[str, type[Executor]]:
    """Every executor, the slurm one included when its module is present."""
    if "slurm" not in EXECUTORS and importlib.util.find_spec(SLURM_MODULE) is not None:
        importlib.import_module(SLURM_MODULE)
    return EXECUTORS


def make_executor(name: str, args: argparse.Namespace | None = None, **options) -> Executor:
    """The executor called `name`, from parsed arguments or keyword options."""
    known = load_executors()
    if name not in known:
        raise ValueError(f"--executor {name!r} is not one of {', '.join(known)}")
    cls = known[name]
    return cls.from_args(args) if args is not None else cls(**options)


def summary(results: dict[str, Result]) -> str:
    counts: dict[str, int] = {}
    for r in results.values():
        counts[r.state] = counts.get(r.state, 0) + 1
    return ", ".join(f"{n} {s}" for s, n in counts.items())


__all__ = [
    "BLOCKED", "DONE", "EXECUTORS", "FAILED", "OK_STATES", "SKIPPED", "SUBMITTED", "Executor",
    "LocalExecutor", "Result", "Runner", "SerialExecutor", "announce", "load_executors",
    "make_executor", "register", "summary", "visible_gpus",
]
