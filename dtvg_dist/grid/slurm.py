"""The slurm executor: a grid's jobs submitted to SLURM through submitit.

Jobs are submitted level by level of the dependency graph. The jobs of one
level that need the same jobs and the same resources go in as one job
array (the stage-1 runs of a grid: one array; the stage-2 runs of one bank:
one array after it), and an array depends on exactly the array tasks it
needs (`--dependency=afterok:<id>_<task>:...`, `--kill-on-invalid-dep=yes`:
a failed stage-1 run cancels only the runs that need it). A run that needs
more GPUs than `--slurm-gpus-per-node` is one job on several nodes, each
node starting `accelerate launch` with its machine rank
(dtvg_dist.grid.slurm_job); with `--preflight` each such job first runs
`python -m dtvg_dist.doctor` the same way on all its nodes and fails with
the doctor's lines instead of training. On a cluster whose nodes have no
GPU (no `gpu` GRES in `sinfo`), the same flags ask for no GPUs: a "GPU" of
a run is then one CPU process, over gloo.

Jobs get a signal `signal_delay_s` before their time limit and are
requeued when the trainer stops on it (or on SIGTERM) with EXIT_REQUEUE;
the requeued job resumes (resume=true). The ids of what was submitted are
kept in `<folder>/submitted.json`, so `--status` and the next submission
know which runs are queued: a run queued or running is never submitted
again.

submitit is imported only when something is submitted or queried, so the
rest of the package works without it.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dtvg_dist.grid.executors import (
    BLOCKED,
    DONE,
    FAILED,
    SKIPPED,
    SUBMITTED,
    Executor,
    Result,
    announce,
    register,
)
from dtvg_dist.grid.jobs import Job
from dtvg_dist.grid.status import holder, last_error_line

RECORDS = "submitted.json"
DEFAULT_FOLDER = Path("runs/.slurm")
SIGNAL_DELAY_S = 120  # the time-limit signal comes this long before the kill
# requeues after a time-limit signal before submitit gives up: each resumes
# from a checkpoint, so a long run may need many wall-time slots
MAX_TIMEOUT_REQUEUES = 100
# squeue states of a job that is still the scheduler's (not finished)
QUEUED = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SUSPENDED", "RESV_DEL_HOLD"}
RUNNING = {"RUNNING", "CONFIGURING", "COMPLETING", "RESIZING", "SIGNALING", "STAGE_OUT"}
ACTIVE = QUEUED | RUNNING
_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def parse_time(text: str | None) -> int | None:
    """A SLURM time limit (`MM`, `MM:SS`, `HH:MM:SS`, `D-HH`, `D-HH:MM`,
    `D-HH:MM:SS`) in whole minutes, rounded up, as submitit's `time` takes it."""
    if text is None or text == "":
        return None
    match = _TIME.match(text.strip())
    if not match:
        raise ValueError(f"--slurm-time {text!r}: use minutes, MM:SS, HH:MM:SS or D-HH:MM:SS")
    days, a, b, c = match.groups()
    if days is not None:  # D-HH[:MM[:SS]]
        seconds = int(days) * 86400 + int(a) * 3600 + int(b or 0) * 60 + int(c or 0)
    elif c is not None:  # HH:MM:SS
        seconds = int(a) * 3600 + int(b) * 60 + int(c)
    elif b is not None:  # MM:SS
        seconds = int(a) * 60 + int(b)
    else:  # MM
        seconds = int(a) * 60
    if seconds <= 0:
        raise ValueError(f"--slurm-time {text!r}: must be more than 0")
    return math.ceil(seconds / 60)


def _minutes(field: str) -> int | None:
    """A partition's DefaultTime / MaxTime field in minutes; None if unset or unlimited."""
    if field.upper() in ("", "NONE", "UNLIMITED", "INFINITE", "N/A"):
        return None
    try:
        return parse_time(field)
    except ValueError:
        return None


@functools.lru_cache(maxsize=8)
def partition_time(partition: str | None) -> int | None:
    """The time limit a job gets without --time in `partition` (the default
    partition when None): its DefaultTime, else its MaxTime; None when
    unlimited or unknown."""
    cmd = ["scontrol", "show", "partition", "--oneliner", *([partition] if partition else [])]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in proc.stdout.splitlines():
        fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
        if partition is None and fields.get("Default") != "YES":
            continue
        return _minutes(fields.get("DefaultTime", "")) or _minutes(fields.get("MaxTime", ""))
    return None


def parse_extra(items: Iterable[str]) -> dict[str, str]:
    """`--slurm-extra key=value` items (repeatable) as a dict."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().lstrip("-")
        if not sep or not key:
            raise ValueError(f"--slurm-extra {item!r}: give key=value, e.g. qos=high or "
                             "constraint=a100")
        out[key.replace("-", "_")] = value
    return out


@dataclass(frozen=True)
class SlurmOptions:
    """What every submitted job asks SLURM for."""

    partition: str | None = None
    account: str | None = None
    time_min: int | None = None
    gpus_per_node: int | None = None
    cpus_per_task: int | None = None
    extra: dict[str, str] = field(default_factory=dict)
    cpu_only: bool = False  # the nodes have no GPU GRES: ask for none, one CPU process per "GPU"
    preflight: bool = False  # multi-node jobs run the doctor before training


def nodes_for(job: Job, opts: SlurmOptions) -> tuple[int, int]:
    """(nodes, GPUs per node) a job asks for: one node unless it needs more
    GPUs than --slurm-gpus-per-node, then whole nodes."""
    gpus = job.gpus
    per_node = opts.gpus_per_node
    if gpus <= 0:
        return 1, 0
    if per_node is None or gpus <= per_node:
        return 1, gpus
    if gpus % per_node:
        raise ValueError(f"{job.name} needs {gpus} GPUs: not a multiple of "
                         f"--slurm-gpus-per-node {per_node} (whole nodes per run)")
    return gpus // per_node, per_node


def submitit_parameters(job: Job, opts: SlurmOptions, job_name: str) -> dict[str, Any]:
    """The parameters of submitit.SlurmExecutor.update_parameters for a job
    (each becomes one `#SBATCH` line; see docs/many-gpus.md)."""
    import submitit

    from dtvg_dist.grid.slurm_job import PREEMPT_SIGNAL

    valid = set(submitit.SlurmExecutor._valid_parameters())
    nodes, gpus = nodes_for(job, opts)
    extra = dict(opts.extra)
    params: dict[str, Any] = {"job_name": job_name, "nodes": nodes, "ntasks_per_node": 1,
                              "cpus_per_task": opts.cpus_per_task or 1}
    if gpus and not opts.cpu_only:
        params["gpus_per_node"] = gpus
    if nodes > 1:
        # one node's launcher dying ends the whole job instead of leaving
        # the others waiting in a collective
        params["srun_args"] = ["--kill-on-bad-exit=1"]
    if opts.partition:
        params["partition"] = opts.partition
    if opts.account:
        params["account"] = opts.account
    # submitit always writes --time (default 5 min): without --slurm-time the
    # partition's own limit, or 0 (no limit) where it has none
    params["time"] = opts.time_min or partition_time(opts.partition) or 0
    signal_delay = int(extra.pop("signal_delay_s", SIGNAL_DELAY_S))
    if params["time"] and signal_delay >= params["time"] * 60:
        signal_delay = max(1, params["time"] * 60 // 4)
    params["signal_delay_s"] = signal_delay
    additional: dict[str, Any] = {
        # the trainer checkpoints on USR1 (submitit's default USR2 would kill it)
        "signal": f"{PREEMPT_SIGNAL}@{signal_delay}",
        "requeue": True,  # requeueable even where JobRequeue=0
        "kill_on_invalid_dep": "yes",  # a failed dependency cancels, not strands, its dependents
    }
    for key, value in extra.items():
        if key in valid and key not in ("additional_parameters", "setup"):
            params[key] = _typed(value)
        else:
            additional[key] = True if value == "" else value
    params["additional_parameters"] = additional
    params["setup"] = [f"export SUBMITIT_PREEMPT_SIGNAL={PREEMPT_SIGNAL}"]
    return params


def _typed(value: str) -> Any:
    """An --slurm-extra value as submitit wants it (ints stay ints)."""
    if re.fullmatch(r"-?\d+", value):
        return int(value)
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value


def cluster_has_gpus(partition: str | None) -> bool:
    """Whether any node of `partition` (every partition when None) has a
    `gpu` GRES (`sinfo -o %G`); True when sinfo cannot say, so a real GPU
    cluster is never asked for less than the run needs."""
    cmd = ["sinfo", "--noheader", "--format=%G", *(["--partition", partition] if partition else [])]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return True
    if proc.returncode != 0 or not proc.stdout.strip():
        return True
    return any("gpu" in line for line in proc.stdout.splitlines())


@dataclass
class Group:
    """Jobs submitted as one array: same dependency level, same needs, same resources."""

    jobs: list[Job]
    needs: tuple[str, ...]  # the names of the jobs they wait for (afterok)
    stage1: bool


def submission_groups(todo: list[Job], queued: Iterable[str], opts: SlurmOptions) -> list[Group]:
    """The arrays to submit, in an order where every array comes after the
    ones it depends on. `todo` is in grid order (needs first); `queued` are
    jobs already in SLURM that a job of `todo` may wait for. A need that is
    neither (done, or skipped) is no dependency."""
    waitable = set(queued) | {j.name for j in todo}
    level: dict[str, int] = {}
    groups: dict[tuple, Group] = {}
    for job in todo:
        needs = tuple(sorted(n for n in job.needs if n in waitable))
        level[job.name] = 1 + max((level.get(n, -1) for n in needs), default=-1)
        key = (level[job.name], needs, nodes_for(job, opts), job.stage1)
        groups.setdefault(key, Group([], needs, job.stage1)).jobs.append(job)
    return [groups[k] for k in sorted(groups, key=lambda k: k[0])]


# ------------------------------------------------------------- the queue
def squeue_states(user: str | None = None) -> dict[str, str]:
    """job id -> state of every job SLURM still knows of (array tasks one
    by one, recently finished ones included)."""
    cmd = ["squeue", "--noheader", "--array", "--states=all", "--format=%i|%T"]
    cmd += ["--user", user or _user()]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise RuntimeError(f"squeue failed: {err}") from None
    if proc.returncode != 0:
        raise RuntimeError(f"squeue failed ({proc.returncode}): {proc.stderr.strip()}")
    states = {}
    for line in proc.stdout.splitlines():
        job_id, _, state = line.strip().partition("|")
        if job_id:
            states[job_id] = state.split()[0] if state else ""
    return states


def _user() -> str:
    import getpass

    return getpass.getuser()


def load_records(folder: Path) -> dict[str, dict[str, Any]]:
    path = Path(folder) / RECORDS
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as err:
        raise RuntimeError(f"{path} is not valid JSON ({err}); delete it to forget the "
                           "submissions it lists") from None
    return data if isinstance(data, dict) else {}


def save_records(folder: Path, records: dict[str, dict[str, Any]]) -> None:
    from dtvg_dist.store.run_files import atomic_write_text

    Path(folder).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(folder) / RECORDS, json.dumps(records, indent=2, sort_keys=True) + "\n")


def _say(text: str) -> None:
    print(text, flush=True)


@register
class SlurmExecutor(Executor):
    """Submits the grid to SLURM and returns (state `submitted`), or with
    `wait` follows the jobs until they leave the queue and returns what the
    run folders say (done / failed)."""

    name = "slurm"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--slurm-partition", default=None, help="slurm: --partition")
        parser.add_argument("--slurm-account", default=None, help="slurm: --account")
        parser.add_argument("--slurm-time", default=None, metavar="TIME",
                            help="slurm: --time per job (minutes, HH:MM:SS or D-HH:MM:SS); the "
                            f"trainer is signalled {SIGNAL_DELAY_S} s before it, checkpoints, "
                            "and the job is requeued")
        parser.add_argument("--slurm-gpus-per-node", type=int, default=None, metavar="N",
                            help="slurm: GPUs of one node; a run needing more spans several nodes "
                            "(one `accelerate launch` per node, machine rank = SLURM_NODEID). On a "
                            "cluster without GPUs (no gpu GRES) a run's GPUs are CPU processes "
                            "over gloo: --gpus-per-run 2 --slurm-gpus-per-node 1 is one process "
                            "on each of 2 nodes")
        parser.add_argument("--slurm-cpus-per-task", type=int, default=None, metavar="N",
                            help="slurm: CPU cores per job (default 1)")
        parser.add_argument("--slurm-extra", action="append", default=[], metavar="KEY=VALUE",
                            help="slurm: any other sbatch option (repeatable), e.g. qos=high")
        parser.add_argument("--slurm-folder", default=None, metavar="DIR",
                            help="slurm: submitit's scripts and logs, and the submission record "
                            "(default: <runs-dir>/.slurm)")
        parser.add_argument("--preflight", action="store_true",
                            help="slurm: each multi-node job first runs `python -m dtvg_dist.doctor "
                            "recipe=... key=value...` on all its nodes, launched as training is, "
                            "and fails with the doctor's lines instead of training")
        parser.add_argument("--slurm-wait", action="store_true",
                            help="slurm: wait for the submitted jobs, then report as the other "
                            "executors do")
        parser.add_argument("--slurm-poll-s", type=float, default=3.0, metavar="S",
                            help="slurm --slurm-wait: seconds between two looks at the queue "
                            "(squeue) (default 3)")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Executor:
        folder = args.slurm_folder or Path(getattr(args, "runs_dir", None) or "runs") / ".slurm"
        return cls(partition=args.slurm_partition, account=args.slurm_account,
                   time=args.slurm_time, gpus_per_node=args.slurm_gpus_per_node,
                   cpus_per_task=args.slurm_cpus_per_task, extra=args.slurm_extra,
                   folder=folder, wait=args.slurm_wait, poll_s=args.slurm_poll_s,
                   preflight=args.preflight)

    def __init__(self, partition: str | None = None, account: str | None = None,
                 time: str | None = None, gpus_per_node: int | None = None,
                 cpus_per_task: int | None = None, extra: Iterable[str] = (),
                 folder: str | Path | None = None, wait: bool = False,
                 poll_s: float = 3.0, preflight: bool = False) -> None:
        if gpus_per_node is not None and gpus_per_node < 1:
            raise ValueError(f"--slurm-gpus-per-node must be at least 1 (got {gpus_per_node})")
        self.options = SlurmOptions(partition=partition, account=account, time_min=parse_time(time),
                                    gpus_per_node=gpus_per_node, cpus_per_task=cpus_per_task,
                                    extra=parse_extra(extra), preflight=preflight)
        self.folder = Path(folder) if folder is not None else DEFAULT_FOLDER
        if not poll_s > 0:
            raise ValueError(f"--slurm-poll-s must be above 0 (got {poll_s})")
        self.wait = wait
        self.poll_s = poll_s

    # --------------------------------------------------------------- status
    def scheduler_states(self, jobs: list[Job]) -> dict[str, str]:
        """name -> "running" | "pending" for the jobs this folder submitted
        that SLURM still has."""
        records = load_records(self.folder)
        if not records:
            return {}
        try:
            queue = squeue_states()
        except RuntimeError as err:
            _say(f"# {err}: states from the run folders only")
            return {}
        out = {}
        for job in jobs:
            state = queue.get(str(records.get(job.name, {}).get("job_id")))
            if state in RUNNING:
                out[job.name] = "running"
            elif state in QUEUED:
                out[job.name] = "pending"
        return out

    # ----------------------------------------------------------- submitting
    def execute(self, jobs: list[Job]) -> dict[str, Result]:
        import submitit

        from dtvg_dist.grid.slurm_job import TrainerRun

        if shutil.which("sbatch") is None:
            _say("error: --executor slurm: sbatch is not on PATH (run on a SLURM login node)")
            return {j.name: Result(j.name, FAILED, "sbatch not found") for j in jobs}
        try:
            records = load_records(self.folder)
            queue = squeue_states() if records else {}
        except RuntimeError as err:
            _say(f"error: --executor slurm: {err}")
            return {j.name: Result(j.name, FAILED, str(err)) for j in jobs}
        results: dict[str, Result] = {}
        ids: dict[str, str] = {}  # job name -> the SLURM job id its dependents wait on
        todo: list[Job] = []
        for job in jobs:
            need = self.blocked_by(job, results)
            if need is not None:
                results[job.name] = Result(job.name, BLOCKED, f"needs {need}, which did not finish "
                                           "or runs outside this grid's jobs")
                continue
            reason = job.done_reason()
            if reason:
                announce(job)
                results[job.name] = Result(job.name, SKIPPED, reason)
                continue
            old = str(records.get(job.name, {}).get("job_id", ""))
            if old and queue.get(old) in ACTIVE:
                results[job.name] = Result(job.name, SUBMITTED, f"already queued as job {old} "
                                           f"({queue[old]})")
                ids[job.name] = old
                _say(f"# {job.name}: already queued as SLURM job {old} ({queue[old]}), "
                     "not submitted again")
                continue
            who = holder(job.run_dir)
            if who is not None:
                results[job.name] = Result(job.name, BLOCKED, "running outside SLURM (host "
                                           f"{who.get('host')}, pid {who.get('pid')}); "
                                           "not submitted")
                continue
            todo.append(job)
        if any(j.gpus for j in todo) and not cluster_has_gpus(self.options.partition):
            self.options = dataclasses.replace(self.options, cpu_only=True)
            _say("# no GPU on this cluster's nodes (sinfo): a run's GPUs are CPU processes "
                 "over gloo, one per node beyond --slurm-gpus-per-node")
        self.folder.mkdir(parents=True, exist_ok=True)
        cwd = os.getcwd()
        submitted: list[str] = []
        for group in submission_groups(todo, set(ids), self.options):
            missing = [n for n in group.needs if n not in ids]
            if missing:  # its needs could not be submitted
                for job in group.jobs:
                    results[job.name] = Result(job.name, BLOCKED, f"needs {missing[0]}, which was "
                                               "not submitted")
                continue
            deps = tuple(sorted({ids[n] for n in group.needs}))
            name = f"dtvg-{'stage1' if group.stage1 else 'stage2'}"
            params = submitit_parameters(group.jobs[0], self.options, name)
            if deps:
                params["additional_parameters"]["dependency"] = "afterok:" + ":".join(deps)
            executor = submitit.SlurmExecutor(folder=self.folder / "%j",
                                              max_num_timeout=MAX_TIMEOUT_REQUEUES)
            executor.update_parameters(**params)
            for job in group.jobs:
                announce(job)
            try:
                with executor.batch():
                    handles = [executor.submit(TrainerRun(job, cwd, preflight=self.options.preflight))
                               for job in group.jobs]
            except (OSError, subprocess.CalledProcessError, submitit.core.utils.FailedJobError) as err:
                text = " ".join(str(err).split())[:500]
                _say(f"error: sbatch refused {name} ({', '.join(j.name for j in group.jobs)}): "
                     f"{text}")
                for job in group.jobs:
                    results[job.name] = Result(job.name, FAILED, f"sbatch refused it: {text}")
                continue
            array = handles[0].job_id.split("_")[0]
            kind = "array" if len(group.jobs) > 1 else "job"
            after = f", after {' '.join(deps)}" if deps else ""
            _say(f"# submitted {name} {kind} {array}: {len(group.jobs)} run(s){after}")
            for job, handle in zip(group.jobs, handles, strict=True):
                ids[job.name] = handle.job_id
                submitted.append(handle.job_id)
                records[job.name] = {"job_id": handle.job_id, "run_dir": str(job.run_dir),
                                     "submitted": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                     "needs": list(deps)}
                results[job.name] = Result(job.name, SUBMITTED, f"SLURM job {handle.job_id}")
                _say(f"#   {handle.job_id}: {job.describe()} (log {job.log})")
            save_records(self.folder, records)
        if submitted:
            arrays = sorted({i.split("_")[0] for i in submitted}, key=lambda s: int(s))
            _say(f"# follow: squeue -j {','.join(arrays)}; each run's log is <run>/{jobs[0].log.name}"
                 f"; submitit's in {self.folder}/<job id>/")
        if not self.wait:
            return {j.name: results[j.name] for j in jobs}
        last = self.follow({n: ids[n] for n, r in results.items() if r.state == SUBMITTED})
        for job in jobs:
            if results[job.name].state == SUBMITTED:
                results[job.name] = self._final(job, ids[job.name], last.get(job.name, ""))
        return {j.name: results[j.name] for j in jobs}

    # -------------------------------------------------------------- waiting
    def follow(self, ids: dict[str, str]) -> dict[str, str]:
        """Wait until every job of `ids` (name -> job id) has left the queue,
        printing each change of state (a requeue shows as RUNNING -> PENDING
        -> RUNNING). Returns the last state SLURM gave each job."""
        seen: dict[str, str] = {}
        last: dict[str, str] = {}
        names = {v: k for k, v in ids.items()}
        while True:
            queue = squeue_states()
            active = False
            for job_id, name in names.items():
                state = queue.get(job_id, "left the queue")
                if seen.get(job_id) != state:
                    _say(f"# {job_id} {name}: {state}")
                    seen[job_id] = state
                if job_id in queue:
                    last[name] = state
                active = active or state in ACTIVE
            if not active:
                return last
            time.sleep(self.poll_s)

    def _final(self, job: Job, job_id: str, state: str) -> Result:
        if job.is_done():
            return Result(job.name, DONE, f"SLURM job {job_id}")
        if state == "CANCELLED" and not job.log.is_file():
            return Result(job.name, BLOCKED, f"SLURM job {job_id} cancelled before it started "
                          "(a job it needs failed)")
        line = last_error_line(job.log)
        return Result(job.name, FAILED, f"SLURM job {job_id} ended without outputs"
                      + (f": {line}" if line else "") + f"; see {job.log} and "
                      f"{self.folder / job_id.split('_')[0]}")


__all__ = ["SlurmExecutor", "SlurmOptions", "cluster_has_gpus", "nodes_for", "parse_extra", "parse_time",
           "squeue_states", "submitit_parameters"]
