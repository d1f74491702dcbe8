"""What runs inside one SLURM job of the slurm executor: the trainer of one
grid job, started by submitit on every node of the allocation.

Preemption and wall time go through submitit's checkpoint/requeue
mechanism (`submitit.helpers.Checkpointable`). SLURM delivers a signal to
every process of the job step, so the trainer receives it itself: SIGTERM
(preemption, `scancel --signal=TERM`) or SIGUSR1 (sent `signal_delay_s`
before the time limit; submitit is told to use USR1 through
SUBMITIT_PREEMPT_SIGNAL, because the trainer checkpoints on USR1 but would
die on submitit's default USR2). The trainer finishes its step, writes a
checkpoint and exits EXIT_REQUEUE (75). Then `checkpoint()` below hands
submitit the same run with resume=true and submitit requeues the job
(`scontrol requeue`); on SIGTERM, which submitit itself ignores, the exit
code 75 makes this process send itself submitit's signal to take that path.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import shlex
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import submitit
from submitit.core.job_environment import JobEnvironment

from dtvg_dist.errors import EXIT_REQUEUE
from dtvg_dist.grid.jobs import TRAIN_MODULE, Job, prepare
from dtvg_dist.grid.status import claim
from dtvg_dist.store.checkpoint_slots import checkpoints, signal_stopped

PREEMPT_SIGNAL = "USR1"  # what submitit watches for (SUBMITIT_PREEMPT_SIGNAL)
DOCTOR_MODULE = "dtvg_dist.doctor"  # --preflight: exit 0 all pass, 2 with one stderr line per failure
COPY_WAIT_S = 600  # a node > 0 waits this long for node 0 to copy the bank entries


def _stamp() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


@dataclass(frozen=True)
class Node:
    """Where this process sits in the allocation (from SLURM's variables)."""

    rank: int
    count: int
    main_host: str
    job_id: str
    restarts: int


def this_node() -> Node:
    """The node rank, node count and first host of this job, read from
    SLURM_NODEID / SLURM_JOB_NUM_NODES / SLURM_JOB_NODELIST (submitit's
    JobEnvironment parses the node list), and how often it was requeued."""
    env = JobEnvironment()
    hosts = env.hostnames
    return Node(rank=env.node, count=env.num_nodes, main_host=hosts[0] if hosts else "127.0.0.1",
                job_id=str(env.job_id), restarts=int(os.environ.get("SLURM_RESTART_COUNT", "0")))


def node_address(host: str) -> str:
    """How the other nodes reach `host`: its name where it resolves (a
    cluster's DNS), else its NodeAddr from `scontrol show node` (nodes named
    only in slurm.conf, as on the test cluster), else the name as it is."""
    try:
        socket.getaddrinfo(host, None)
        return host
    except OSError:
        pass
    try:
        proc = subprocess.run(["scontrol", "show", "node", host, "--oneliner"], capture_output=True,
                              text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return host
    for item in proc.stdout.split():
        key, _, value = item.partition("=")
        if key == "NodeAddr" and value:
            return value
    return host


def launch_port(job_id: str) -> int:
    """A rendezvous port derived from the job id, so two multi-node jobs that
    share a first node do not collide."""
    digits = "".join(ch for ch in job_id if ch.isdigit()) or "0"
    return 29500 + int(digits) % 20000


MULTI_NODE_FLAGS = ("--num_machines", "--machine_rank", "--main_process_ip", "--main_process_port",
                    "--num_processes")


def node_command(job: Job, node: Node, module: str | None = None) -> list[str]:
    """The command this node runs: the job's own on one node; on several,
    its `accelerate launch` with this node's machine rank, the first node as
    the rendezvous host (dtvg_dist.grid.slurm_job.node_address) and the
    run's total process count. `module` runs another module the same way
    (the doctor before training)."""
    command = job.command
    if module is not None:
        at = command.index(TRAIN_MODULE[1], command.index(TRAIN_MODULE[0]))
        command = [*command[:at], module, *command[at + 1:]]
    if node.count == 1:
        return command
    try:
        at = next(i for i in range(len(command) - 1)
                  if Path(command[i]).name == "accelerate" and command[i + 1] == "launch") + 2
    except StopIteration:
        raise ValueError(f"{job.name}: a run on {node.count} nodes needs an `accelerate launch` "
                         f"command, not {command[:3]}") from None
    rest, i = [], at
    while i < len(command) and command[i] != "-m":
        if command[i] in MULTI_NODE_FLAGS:
            i += 2  # set below for this node
            continue
        rest.append(command[i])
        i += 1
    flags = ["--num_machines", str(node.count), "--machine_rank", str(node.rank),
             "--main_process_ip", node_address(node.main_host), "--main_process_port", str(launch_port(node.job_id)),
             "--num_processes", str(max(1, job.gpus))]
    return [*command[:at], *flags, *rest, *command[i:]]


def _ignore_stop_signal() -> None:
    """In the launcher's process before exec: ignore the preemption signal.
    SLURM signals every process of the step; `accelerate launch` and torchrun
    would die of SIGUSR1 (its default action) and take the workers with
    them before they checkpoint. The disposition is inherited across exec;
    the trainer installs its own handler (dtvg_dist.training.signals)."""
    signal.signal(getattr(signal, f"SIG{PREEMPT_SIGNAL}"), signal.SIG_IGN)


def stopped_since(run_dir: Path, since: float) -> bool:
    """A stop signal checkpointed a run of this output_dir (stage 2, or a
    stage-1 task) after `since`: the requeue request of a launcher that
    hides its workers' exit 75 (torchrun reports any non-zero worker as a
    failure). Older marks belong to earlier attempts."""
    for run in signal_stopped(run_dir):
        newest = checkpoints(run)
        if newest and (newest[0] / "state.json").stat().st_mtime >= since:
            return True
    return False


class TrainerRun(submitit.helpers.Checkpointable):
    """One grid job as submitit's callable; `resume` is set on the copy that
    `checkpoint()` hands back for the requeued job."""

    def __init__(self, job: Job, cwd: str, resume: bool = False, preflight: bool = False) -> None:
        self.job = job
        self.cwd = cwd
        self.resume = resume
        self.preflight = preflight
        self._proc: subprocess.Popen | None = None
        self._started = 0.0

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("_proc", "_started")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("preflight", False)  # pickled by an older version
        self._proc, self._started = None, 0.0

    # -------------------------------------------------------------- the run
    def _log_path(self, node: Node) -> Path:
        log = self.job.log
        return log if node.rank == 0 else log.with_name(f"{log.stem}.node{node.rank}{log.suffix}")

    def _prepare(self, node: Node) -> None:
        """Bank copies and variant links, by node 0; the others wait for them."""
        if node.rank == 0:
            error = prepare(self.job)
            if error is not None:
                raise RuntimeError(f"{self.job.name}: {error}")
            return
        deadline = time.time() + COPY_WAIT_S
        while not all(dst.is_file() for _, dst in self.job.copies):
            if time.time() > deadline:
                raise RuntimeError(f"{self.job.name}: node 0 did not copy the bank entries in "
                                   f"{COPY_WAIT_S} s")
            time.sleep(0.5)  # a few stat calls; the job waits on this node

    def __call__(self) -> str:
        os.chdir(self.cwd)
        node = this_node()
        job = self.job
        reason = job.done_reason()
        if reason:  # finished by an earlier attempt, or by another grid
            return f"{job.name}: already done ({reason})"
        self._prepare(node)
        command = node_command(job, node)
        # a requeue, or a new job for a run an earlier job left with a
        # checkpoint (a node died, the job was cancelled): carry on from it
        resumed = self.resume or node.restarts > 0 or bool(checkpoints(job.run_dir))
        if resumed and "resume=true" not in command:
            command.append("resume=true")
        env = dict(os.environ)
        # bounds other libraries; torch's count is the run's distributed.threads
        cpus = os.environ.get("SLURM_CPUS_PER_TASK")
        if cpus and "OMP_NUM_THREADS" not in env:
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = cpus
        log_path = self._log_path(node)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        if self.preflight and node.count > 1:
            self._preflight(node, env, log_path)
        # node 0 claims the folder as the other executors do, so no other grid starts it meanwhile
        with claim(job.run_dir) if node.rank == 0 else contextlib.nullcontext(True) as mine:
            if not mine:
                raise RuntimeError(f"{job.name}: {job.run_dir} is claimed by another grid's "
                                   "executor; not started twice")
            code = self._run(command, env, log_path, node, resumed)
        if code == EXIT_REQUEUE or (code != 0 and stopped_since(job.run_dir, self._started)):
            if node.rank == 0:  # submitit's handler: checkpoint() below, scontrol requeue, exit
                os.kill(os.getpid(), getattr(signal, f"SIG{JobEnvironment.USR_SIG}"))
                time.sleep(60)  # the handler exits this process; it never gets here
            return f"{job.name}: node {node.rank} stopped for requeue"
        if code != 0:
            raise RuntimeError(f"{job.name}: the trainer exited {code}; see {log_path}")
        if node.rank == 0 and not job.is_done():
            raise RuntimeError(f"{job.name}: exit 0 but no outputs in {job.run_dir}; see {log_path}")
        return f"{job.name}: done"

    def _preflight(self, node: Node, env: dict[str, str], log_path: Path) -> None:
        """The doctor on every node of the job, launched as training is; its
        failure lines (exit 2) fail the job before any training starts."""
        command = node_command(self.job, node, module=DOCTOR_MODULE)
        with log_path.open("a", buffering=1) as log:
            log.write(f"# {_stamp()} {socket.gethostname()} slurm job {node.job_id} node "
                      f"{node.rank}/{node.count} preflight: {shlex.join(command)}\n")
            proc = subprocess.run(command, stdout=log, stderr=subprocess.PIPE, text=True, env=env,
                                  check=False)
            log.write(proc.stderr)
            log.write(f"# {_stamp()} preflight exit {proc.returncode}\n")
        if proc.returncode == 0:
            return
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error")] \
            or proc.stderr.strip().splitlines()[-3:]
        raise RuntimeError(f"{self.job.name}: preflight failed on node {node.rank} (exit "
                           f"{proc.returncode}), not trained: " + " | ".join(lines)
                           + f"; see {log_path}")

    def _run(self, command: list[str], env: dict[str, str], log_path: Path, node: Node,
             resumed: bool) -> int:
        with log_path.open("a", buffering=1) as log:
            log.write(f"# {_stamp()} {socket.gethostname()} slurm job {node.job_id} node "
                      f"{node.rank}/{node.count} ({os.environ.get('SLURMD_NODENAME', '?')}), "
                      f"restart {node.restarts}"
                      f"{' (resume)' if resumed else ''} start: {shlex.join(command)}\n")
            self._started = time.time()
            self._proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                          preexec_fn=_ignore_stop_signal)
            # poll, not wait(): the signal handler below waits for the same
            # child, and Popen.wait holds a lock a nested wait would block on
            while (code := self._proc.poll()) is None:
                time.sleep(0.5)
            log.write(f"# {_stamp()} exit {code}\n")
        return code

    # --------------------------------------------------------- requeueing
    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission | None:
        """Called by submitit on its preemption signal (and through the
        self-signal above): wait for the trainer to finish its checkpoint,
        then hand back this run with resume=true to be requeued. A trainer
        that failed for another reason is not requeued."""
        proc = self._proc
        while proc is not None and proc.poll() is None:
            time.sleep(0.5)  # it got the signal too: finishing its step, checkpointing
        code = proc.returncode if proc is not None else None
        if (code is not None and code not in (0, EXIT_REQUEUE) and code >= 0
                and not stopped_since(self.job.run_dir, self._started)):
            return None
        return submitit.helpers.DelayedSubmission(TrainerRun(self.job, self.cwd, resume=True,
                                                             preflight=self.preflight))
