"""The slurm executor: its sbatch parameters and job arrays without a
cluster, then on a real two-node SLURM cluster on this machine
(tests/grid/slurm_cluster.py):

- `reproduce demo` gives the same per-run results under the serial, local
  and slurm executors, with no thread count pinned in the environment (each
  executor leaves a different OMP_NUM_THREADS; the run pins its own);
- stage 2 waits for stage 1 (afterok, read back from `scontrol show job`),
  and a stage-2 run signalled through SLURM mid-run is requeued, resumes and
  ends bit for bit where an uninterrupted run ends;
- a run of 2 processes on 2 nodes (`--gpus-per-run 2 --slurm-gpus-per-node
  1`: on this CPU-only cluster one process per node, over gloo), under DDP
  and under ZeRO-3, equals the one-process run; writes every shared file
  from node 0 only; is checkpointed, requeued and resumed bit for bit on
  USR1; and ends within 60 s when one node's process dies, then resumes.

Budgets are tiny (one seed, PT and DTVG, 4 steps). The cluster part is
marked slow."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import warm_python
from background import BACKGROUND, Background
from safetensors.torch import load_file

from dtvg_dist.grid.jobs import Job, Launch
from dtvg_dist.grid.slurm import (
    SlurmOptions,
    nodes_for,
    parse_extra,
    parse_time,
    submission_groups,
    submitit_parameters,
)

REPO = Path(__file__).resolve().parents[2]
TINY = ["backbone.name_or_path=null", "backbone.tokenizer=synthetic", "optim.max_steps=4",
        "stage1.max_steps=4", "stage1.source_max_steps=6", "eval.every_steps=2",
        "logging.progress_bar=false"]
GRID = ["demo", "--seeds", "1", "--variants", "pt,dtvg", *TINY]
RUNS = ("stage1/1", "pt/1", "dtvg/1")
STAGE2 = ("pt/1", "dtvg/1")
PAUSE_STEP = 3  # the preempted run is signalled at the start of this step
# --slurm-wait looking at the queue every half second (default 3 s): the
# tests wait for short jobs, and each look is one squeue
WAIT = ["--slurm-wait", "--slurm-poll-s", "0.5"]


# ------------------------------------------------------- without a cluster
def _job(name: str, gpus: int = 0, needs: tuple[str, ...] = (), stage1: bool = False) -> Job:
    prefix = ("accelerate", "launch", "--config_file", "x.yaml", "--num_processes", str(gpus)) \
        if gpus > 1 else (sys.executable,)
    return Job(name, Path("runs") / name, "demo", ["recipe=demo"], Launch(prefix, gpus=gpus),
               needs=needs, stage1=stage1)


def test_time_limits_parse_as_sbatch_does() -> None:
    assert parse_time("90") == 90
    assert parse_time("1:30") == 2  # MM:SS, rounded up to whole minutes
    assert parse_time("02:00:00") == 120
    assert parse_time("1-00") == 1440
    assert parse_time("1-02:03:04") == 1440 + 123 + 1
    for bad in ("soon", "1:2:3:4", "0"):
        with pytest.raises(ValueError, match="--slurm-time"):
            parse_time(bad)
    assert parse_extra(["qos=high", "--constraint=a100", "exclusive="]) == {
        "qos": "high", "constraint": "a100", "exclusive": ""}
    with pytest.raises(ValueError, match="'qos'"):
        parse_extra(["qos"])


def test_options_become_submitit_parameters() -> None:
    pytest.importorskip("submitit", reason="submitit is not installed (pip install submitit)")
    opts = SlurmOptions(partition="gpu", account="proj", time_min=600, gpus_per_node=8,
                        extra=parse_extra(["qos=high", "mem_gb=64", "reservation=r1"]))
    params = submitit_parameters(_job("dtvg/22", gpus=1), opts, "dtvg-stage2")
    assert params["partition"] == "gpu" and params["account"] == "proj" and params["time"] == 600
    assert params["gpus_per_node"] == 1 and params["nodes"] == 1 and params["ntasks_per_node"] == 1
    assert params["qos"] == "high"  # a submitit parameter
    extra = params["additional_parameters"]
    assert extra["reservation"] == "r1" and extra["mem_gb"] == "64"  # passed through to sbatch
    assert extra["signal"] == "USR1@120" and extra["requeue"] is True
    assert extra["kill_on_invalid_dep"] == "yes"
    assert params["setup"] == ["export SUBMITIT_PREEMPT_SIGNAL=USR1"]
    # the sbatch lines submitit writes from them
    from submitit.slurm.slurm import _make_sbatch_string

    text = _make_sbatch_string(command="python -m submitit.core._submit X", folder="/tmp/f/%j",
                               **{k: v for k, v in params.items()})
    for line in ("#SBATCH --partition=gpu", "#SBATCH --account=proj", "#SBATCH --time=600",
                 "#SBATCH --gpus-per-node=1", "#SBATCH --signal=USR1@120", "#SBATCH --qos=high",
                 "#SBATCH --requeue", "#SBATCH --reservation=r1"):
        assert line in text.splitlines(), (line, text)


def test_the_queue_is_looked_at_as_often_as_asked() -> None:
    import argparse

    from dtvg_dist.grid.slurm import SlurmExecutor

    parser = argparse.ArgumentParser()
    SlurmExecutor.add_arguments(parser)
    assert SlurmExecutor.from_args(parser.parse_args([])).poll_s == 3.0
    assert SlurmExecutor.from_args(parser.parse_args(["--slurm-poll-s", "0.5"])).poll_s == 0.5
    with pytest.raises(ValueError, match="--slurm-poll-s must be above 0 \\(got 0.0\\)"):
        SlurmExecutor.from_args(parser.parse_args(["--slurm-poll-s", "0"]))


def test_a_short_time_limit_signals_before_it() -> None:
    pytest.importorskip("submitit", reason="submitit is not installed (pip install submitit)")
    params = submitit_parameters(_job("pt/1"), SlurmOptions(time_min=2), "x")
    assert params["additional_parameters"]["signal"] == "USR1@30"  # a quarter of 2 min


def test_runs_bigger_than_a_node_span_whole_nodes() -> None:
    opts = SlurmOptions(gpus_per_node=8)
    assert nodes_for(_job("a", gpus=0), opts) == (1, 0)
    assert nodes_for(_job("a", gpus=4), opts) == (1, 4)
    assert nodes_for(_job("a", gpus=16), opts) == (2, 8)
    with pytest.raises(ValueError, match="not a multiple of --slurm-gpus-per-node 8"):
        nodes_for(_job("a", gpus=12), opts)


def test_each_node_launches_with_its_machine_rank(monkeypatch) -> None:
    pytest.importorskip("submitit", reason="submitit is not installed (pip install submitit)")
    from dtvg_dist.grid.slurm_job import launch_port, node_command, this_node

    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "2")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "gpu[07-08]")
    monkeypatch.setenv("SLURM_NODEID", "1")
    monkeypatch.setenv("SLURM_PROCID", "1")
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    # gpu07 resolves, as on a cluster with DNS (node_address keeps the name; the
    # NodeAddr fallback runs against the real cluster in the two-node test)
    monkeypatch.setattr("dtvg_dist.grid.slurm_job.socket.getaddrinfo", lambda host, port: [])
    node = this_node()
    assert (node.rank, node.count, node.main_host) == (1, 2, "gpu07")
    job = _job("t5/22", gpus=16)
    cmd = node_command(job, node)
    head = cmd[:cmd.index("-m")]
    assert head[:2] == ["accelerate", "launch"]
    flags = dict(zip(head[2::2], head[3::2], strict=False))
    assert flags["--num_machines"] == "2" and flags["--machine_rank"] == "1"
    assert flags["--main_process_ip"] == "gpu07" and flags["--num_processes"] == "16"
    assert flags["--main_process_port"] == str(launch_port("4242"))
    assert flags["--config_file"] == "x.yaml"
    assert head.count("--num_processes") == 1
    assert cmd[cmd.index("-m"):] == ["-m", "dtvg_dist.train", "recipe=demo"]
    single = node_command(job, type(node)(0, 1, "gpu07", "4242", 0))
    assert single == job.command


def test_a_cpu_only_cluster_gets_processes_not_gpus(monkeypatch) -> None:
    """--gpus-per-run 2 --slurm-gpus-per-node 1 where no node has a GPU:
    two nodes, no GPU asked for (sbatch would refuse it), and a launcher
    dying on one node ends the whole job (srun --kill-on-bad-exit)."""
    pytest.importorskip("submitit", reason="submitit is not installed (pip install submitit)")
    # no scontrol here: the real cluster answers it in the slow SLURM tests
    monkeypatch.setattr("dtvg_dist.grid.slurm.partition_time", lambda partition: 60)
    job = _job("pt/1", gpus=2)
    params = submitit_parameters(job, SlurmOptions(gpus_per_node=1, cpu_only=True), "x")
    assert params["nodes"] == 2 and params["ntasks_per_node"] == 1
    assert "gpus_per_node" not in params
    assert params["srun_args"] == ["--kill-on-bad-exit=1"]
    params = submitit_parameters(job, SlurmOptions(gpus_per_node=1), "x")
    assert params["gpus_per_node"] == 1 and params["nodes"] == 2
    assert "srun_args" not in submitit_parameters(_job("pt/1", gpus=1), SlurmOptions(), "x")


@pytest.mark.slow  # runs a stand-in doctor process
def test_preflight_runs_the_doctor_as_training_runs_and_fails_with_its_lines(
        monkeypatch, tmp_path) -> None:
    """--preflight: the doctor gets the same launch as the trainer (only the
    module differs); its exit 2 fails the job with its one-line messages
    (the doctor's CLI contract: exit 0 all pass, exit 2 one stderr line per
    failing check), its exit 0 lets training start."""
    pytest.importorskip("submitit", reason="submitit is not installed (pip install submitit)")
    from dtvg_dist.grid import slurm_job

    node = slurm_job.Node(1, 2, "127.0.0.1", "77", 0)
    job = _job("dtvg/1", gpus=2)
    train, doctor = (slurm_job.node_command(job, node),
                     slurm_job.node_command(job, node, module=slurm_job.DOCTOR_MODULE))
    at = train.index("dtvg_dist.train")
    assert doctor == [*train[:at], "dtvg_dist.doctor", *train[at + 1:]]
    assert "--machine_rank" in doctor and doctor[doctor.index("--machine_rank") + 1] == "1"
    failing = ("import sys; print('table'); "
               "print('error: rank 1 (host n2): output_dir /x is not writable; fix it', file=sys.stderr); "
               "print('error: rank 1 (host n2): bank incomplete; run stage 1', file=sys.stderr); "
               "sys.exit(2)")
    run = slurm_job.TrainerRun(job, str(tmp_path), preflight=True)
    log = tmp_path / "run.node1.log"
    monkeypatch.setattr(slurm_job, "node_command",
                        lambda job, node, module=None: [sys.executable, "-c", failing])
    with pytest.raises(RuntimeError) as err:
        run._preflight(node, dict(os.environ), log)
    text = str(err.value)
    assert "preflight failed on node 1 (exit 2), not trained" in text
    assert "output_dir /x is not writable" in text and "bank incomplete" in text
    assert "table" in log.read_text() and "preflight exit 2" in log.read_text()
    monkeypatch.setattr(slurm_job, "node_command",
                        lambda job, node, module=None: [sys.executable, "-c", "print('all pass')"])
    run._preflight(node, dict(os.environ), log)  # no error
    assert log.read_text().rstrip().endswith("preflight exit 0")


def test_arrays_group_by_what_they_wait_for() -> None:
    jobs = [_job("stage1/1", stage1=True), _job("stage1/2", stage1=True)]
    jobs += [_job(f"{m}/{s}", needs=(f"stage1/{s}",)) for s in (1, 2) for m in ("pt", "dtvg")]
    groups = submission_groups(jobs, (), SlurmOptions())
    assert [[j.name for j in g.jobs] for g in groups] == [
        ["stage1/1", "stage1/2"], ["pt/1", "dtvg/1"], ["pt/2", "dtvg/2"]]
    assert [g.needs for g in groups] == [(), ("stage1/1",), ("stage1/2",)]
    # stage 1 already done (not in the submission): stage 2 waits for nothing
    groups = submission_groups(jobs[2:], (), SlurmOptions())
    assert [g.needs for g in groups] == [()] and len(groups[0].jobs) == 4
    # stage 1 still queued from an earlier submission: waited for
    groups = submission_groups(jobs[2:4], ("stage1/1",), SlurmOptions())
    assert [g.needs for g in groups] == [("stage1/1",)]



@pytest.mark.slow
def test_the_job_wrapper_starts_without_torch() -> None:
    """What submitit unpickles on every node of every job (and again on each
    requeue) imports neither torch nor transformers: the trainer it starts
    does, once."""
    code = ("import sys, dtvg_dist.grid.slurm_job; "
            "print(sorted(m for m in ('torch', 'transformers', 'deepspeed') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=120, check=True)
    assert proc.stdout.strip() == "[]", proc.stdout + proc.stderr

# ---------------------------------------------------------- on the cluster
def _plain_env(**extra: str) -> dict[str, str]:
    """This environment without any thread count pinned: each executor must
    give the run the same one by itself."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    return {**env, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", **extra}


def _env(cluster, **extra: str) -> dict[str, str]:
    return {**_plain_env(), "SLURM_CONF": str(cluster.conf), **extra}


def _reproduce(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen | warm_python.WarmProcess:
    """reproduce in the background, its output in <cwd>/reproduce.out (a
    pipe could fill while the test waits on another process). Warm
    (tests/warm_python.py), and so are the serial and local executors'
    runs; SLURM's jobs start theirs cold, on the nodes."""
    path = cwd / "reproduce.out"
    with path.open("w") as out:
        proc = warm_python.popen([sys.executable, "-m", "dtvg_dist.reproduce", *args], cwd=cwd,
                                 env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
    proc.output = path  # type: ignore[attr-defined]
    return proc


def _finish(proc: subprocess.Popen, cluster, timeout: int = 600) -> str:
    proc.wait(timeout=timeout)
    out = proc.output.read_text()  # type: ignore[attr-defined]
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out[-6000:]}\n{cluster.log_tail()}"
    return out


def _records(runs: Path) -> dict:
    return json.loads((runs / ".slurm" / "submitted.json").read_text())


def _scontrol(job_id: str, cluster) -> str:
    return subprocess.run(["scontrol", "show", "job", job_id], env=cluster.env(),
                          capture_output=True, text=True, check=False).stdout


def _wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = predicate()
        if got:
            return got
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"reproduce ended before {what}: "
                                 f"{proc.output.read_text()[-4000:]}")  # type: ignore[attr-defined]
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _demos(slurm_cluster, mktemp):
    """The grid run by the serial executor, the local one and, at the same
    time, through SLURM, none with a thread count in its environment;
    `scontrol show job` of every SLURM job read while stage 2 still waits.
    Returns (serial runs dir, (slurm runs dir, output, records, shown),
    local runs dir)."""
    serial_root = mktemp("serial")
    serial = _reproduce([*GRID, "--runs-dir", "runs", "--executor", "serial"], serial_root,
                        _plain_env())
    local_root = mktemp("local")
    local = _reproduce([*GRID, "--runs-dir", "runs", "--executor", "local", "--max-parallel", "1"],
                       local_root, _plain_env())
    root = mktemp("slurm")
    runs = root / "runs"
    proc = _reproduce([*GRID, "--runs-dir", "runs", "--executor", "slurm", *WAIT], root,
                      _env(slurm_cluster))
    try:
        records = _wait_for(lambda: (runs / ".slurm" / "submitted.json").is_file()
                            and len(_records(runs)) == len(RUNS) and _records(runs), 300,
                            "the submission", proc)
        shown = {name: _scontrol(rec["job_id"], slurm_cluster) for name, rec in records.items()}
        again = subprocess.run([sys.executable, "-m", "dtvg_dist.reproduce", *GRID, "--runs-dir",
                                "runs", "--executor", "slurm"], cwd=root, env=_env(slurm_cluster),
                               capture_output=True, text=True, timeout=300)
        out = _finish(proc, slurm_cluster)
        _finish(serial, slurm_cluster)
        _finish(local, slurm_cluster)
    finally:
        for p in (proc, serial, local):
            if p.poll() is None:
                p.kill()
    return serial_root / "runs", (runs, out, records, shown, again), local_root / "runs"


# The cluster's grids in the background (tests/background.py), after the
# cluster: each is work a fixture would otherwise wait on with a core idle.
BACKGROUND.offer("demos", lambda: _demos(BACKGROUND.done("slurm_cluster"), BACKGROUND.folder),
                 after=("slurm_cluster",))


@pytest.fixture(scope="module")
def demos(slurm_cluster, tmp_path_factory):
    return BACKGROUND.result("demos", lambda: _demos(slurm_cluster, tmp_path_factory.mktemp))


@pytest.fixture(scope="module")
def serial_demo(demos):
    return demos[0]


@pytest.fixture(scope="module")
def slurm_demo(demos):
    return demos[1]


def _same_run(a: Path, b: Path) -> None:
    """Prompt tensors, per-step losses and scores of two runs are identical."""
    ta, tb = load_file(str(a / "prompt.safetensors")), load_file(str(b / "prompt.safetensors"))
    assert set(ta) == set(tb)
    for key in ta:
        assert torch.equal(ta[key], tb[key]), (a, key)
    losses = [[json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()
               if '"loss"' in line] for run in (a, b)]
    assert losses[0] == losses[1] and len(losses[0]) == 4
    ra, rb = (json.loads((run / "results.json").read_text()) for run in (a, b))
    assert ra["test"] == rb["test"] and ra["best_validation"] == rb["best_validation"]


@pytest.mark.slow
def test_demo_on_slurm_reports_what_serial_reports(serial_demo, slurm_demo) -> None:
    runs, out, *_ = slurm_demo
    assert (runs / "demo" / "demo.txt").read_text() == (serial_demo / "demo" / "demo.txt").read_text()
    a = json.loads((serial_demo / "demo" / "demo.json").read_text())
    b = json.loads((runs / "demo" / "demo.json").read_text())
    for table in (a, b):
        for key in ("wall_time_s", "executor", "out"):
            table.pop(key, None)
    assert json.dumps(a, sort_keys=True).replace("runs/demo", "") == \
        json.dumps(b, sort_keys=True).replace("runs/demo", "")
    for name in STAGE2:
        _same_run(serial_demo / "demo" / name, runs / "demo" / name)
    for seed_bank in (serial_demo / "demo" / "bank").iterdir():
        for entry in seed_bank.glob("*.safetensors"):
            other = load_file(str(runs / "demo" / "bank" / seed_bank.name / entry.name))
            mine = load_file(str(entry))
            assert all(torch.equal(mine[k], other[k]) for k in mine), entry.name
    assert "# follow: squeue -j" in out


@pytest.mark.slow
def test_every_executor_gives_the_same_runs_without_pinned_threads(demos) -> None:
    """serial (no OMP_NUM_THREADS: torch's default, a thread per core),
    local (OMP_NUM_THREADS=cores // 2) and slurm (OMP_NUM_THREADS from
    --cpus-per-task 1) start the runs with other thread counts in their
    environment; each run pins its own (distributed.threads, default 1), so
    the numbers are the same."""
    serial, (slurm, *_), local = demos
    envs = {}
    for root, executor in ((serial, "serial"), (local, "local"), (slurm, "slurm")):
        for name in RUNS[1:]:
            results = json.loads((root / "demo" / name / "results.json").read_text())
            assert results["threads"] == 1, (executor, name, results["threads"])
            envs[executor] = results["omp_num_threads_env"]
            config = (root / "demo" / name / "config.yaml").read_text()
            assert re.search(r"^  threads: 1$", config, re.MULTILINE), config
        if root is not serial:
            for name in STAGE2:
                _same_run(serial / "demo" / name, root / "demo" / name)
    assert envs == {"serial": None, "local": str(len(os.sched_getaffinity(0))), "slurm": "1"}


@pytest.mark.slow
def test_stage2_array_waits_for_stage1(slurm_demo) -> None:
    runs, out, records, shown, _ = slurm_demo
    stage1 = records["stage1/1"]["job_id"]
    array = {records[name]["job_id"].split("_")[0] for name in STAGE2}
    assert len(array) == 1 and all("_" in records[name]["job_id"] for name in STAGE2)  # one array
    for name in STAGE2:
        dependency = re.search(r"Dependency=(\S+)", shown[name])
        assert dependency and dependency.group(1).startswith(f"afterok:{stage1}"), shown[name]
        assert "JobName=dtvg-stage2" in shown[name]
    assert f"# submitted dtvg-stage2 array {array.pop()}: 2 run(s), after {stage1}" in out
    # and it ran after: every stage-2 start is later than stage 1's exit
    stamps = {name: re.findall(r"^# (\S+) .*(?:start|exit)", (runs / "demo" / name / "run.log")
                               .read_text(), re.MULTILINE) for name in RUNS}
    for name in STAGE2:
        assert stamps[name][0] >= stamps["stage1/1"][-1], stamps


@pytest.mark.slow
def test_the_same_command_again_submits_nothing_queued(slurm_demo) -> None:
    runs, _, records, _, again = slurm_demo
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "# submitted dtvg-" not in again.stdout
    for name in STAGE2:
        assert f"# {name}: already queued as SLURM job {records[name]['job_id']}" in again.stdout
    assert json.loads((runs / ".slurm" / "submitted.json").read_text()) == records


@pytest.mark.slow
def test_preempted_run_is_requeued_and_resumes_exactly(slurm_cluster, serial_demo, slurm_demo,
                                                       tmp_path) -> None:
    """SIGTERM through `scancel --signal=TERM` at the start of step 3: the
    trainer checkpoints and exits 75, submitit requeues the job, and the
    requeued job resumes to the uninterrupted run's result."""
    runs = tmp_path / "runs"
    shutil.copytree(slurm_demo[0] / "demo", runs / "demo", symlinks=True)
    shutil.rmtree(runs / "demo" / "dtvg")  # only this run is left to do
    marker = tmp_path / "paused"
    env = _env(slurm_cluster, DTVG_FAULT_STEP=str(PAUSE_STEP), DTVG_FAULT_KIND="pause",
               DTVG_FAULT_FILE=str(marker), DTVG_FAULT_PAUSE_S="120")
    proc = _reproduce([*GRID, "--runs-dir", "runs", "--executor", "slurm", *WAIT],
                      tmp_path, env)
    _wait_for(marker.is_file, 300, "the run to reach step 3", proc)
    job_id = _records(runs)["dtvg/1"]["job_id"]
    assert set(_records(runs)) == {"dtvg/1"}  # stage 1 and PT were done: not submitted
    subprocess.run(["scancel", "--signal=TERM", job_id], env=slurm_cluster.env(), check=True)
    out = _finish(proc, slurm_cluster)
    log = (runs / "demo" / "dtvg" / "1" / "run.log").read_text()
    assert f"stopped by SIGTERM after step {PAUSE_STEP}" in log
    assert "exit 75" in log
    assert re.search(r"restart 1 \(resume\) start: .* resume=true", log), log[-3000:]
    assert f"resumed from {Path('runs/demo/dtvg/1/checkpoint')} at step {PAUSE_STEP}" in log
    assert "Restarts=1" in _scontrol(job_id, slurm_cluster)  # one job, requeued once
    assert f"# {job_id} dtvg/1: COMPLETED" in out
    _same_run(serial_demo / "demo" / "dtvg" / "1", runs / "demo" / "dtvg" / "1")


@pytest.mark.slow
def test_a_failed_stage1_cancels_the_runs_that_need_it(slurm_cluster, tmp_path) -> None:
    proc = _reproduce([*GRID, "--runs-dir", "runs", "--executor", "slurm", *WAIT], tmp_path,
                      _env(slurm_cluster, DTVG_FAULT_STEP="1", DTVG_FAULT_KIND="raise"))
    proc.wait(timeout=600)
    out = proc.output.read_text()  # type: ignore[attr-defined]
    assert proc.returncode != 0, out[-3000:]
    records = _records(tmp_path / "runs")
    stage1 = records["stage1/1"]["job_id"]
    assert f"# {stage1} stage1/1: FAILED" in out
    for name in STAGE2:
        assert f"# {records[name]['job_id']} {name}: CANCELLED" in out
        assert not (tmp_path / "runs" / "demo" / name / "run.log").exists()  # never started
    assert "injected fault at step 1" in (tmp_path / "runs" / "demo" / "stage1" / "1" /
                                          "run.log").read_text()


# ------------------------------------------------------------ on two nodes
TWO_NODES = ["--gpus-per-run", "2", "--slurm-gpus-per-node", "1"]
# Stage 1 and DTVG only: PT under both launches is a matrix cell
# (tests/distributed/test_matrix.py); what two nodes add is the same here.
TWO_NODE_GRID = ["demo", "--seeds", "1", "--variants", "dtvg", *TINY]
TWO_NODE_RUNS = ("stage1/1", "dtvg/1")
RECORDS_FILE = "submitted.json"
AUDIT = Path(__file__).resolve().parent / "write_audit"  # its sitecustomize logs every write


def _zero3_launcher(folder: Path) -> str:
    """The packaged 2-process CPU ZeRO-3 launch config with its DeepSpeed
    JSON as an absolute path (the jobs run in the grid's folder)."""
    configs = REPO / "dtvg_dist" / "launch_configs"
    text = (configs / "cpu_zero3_2proc.yaml").read_text()
    text = text.replace("launch_configs/ds_zero3_cpu.json", str(configs / "ds_zero3_cpu.json"))
    path = folder / "zero3.yaml"
    path.write_text(text)
    return f"accelerate launch --config_file {path}"


def _while_running(grids: dict[str, tuple[Path, subprocess.Popen]], cluster,
                   names) -> dict[str, dict[str, str]]:
    """`scontrol show job` of each job in `names` of each grid (its runs dir
    and its reproduce), read while the job runs."""
    shown: dict[str, dict[str, str]] = {mode: {} for mode in grids}
    deadline = time.time() + 1200
    while time.time() < deadline:
        busy = False
        for mode, (runs, proc) in grids.items():
            if len(shown[mode]) == len(names) or proc.poll() is not None:
                continue
            busy = True
            records = _records(runs) if (runs / ".slurm" / RECORDS_FILE).is_file() else {}
            for name in names:
                if name in records and name not in shown[mode]:
                    text = _scontrol(records[name]["job_id"], cluster)
                    if "JobState=RUNNING" in text:
                        shown[mode][name] = text
        if not busy:
            return shown
        time.sleep(0.5)
    return shown


def _two_nodes(slurm_cluster, mktemp):
    """The grid with 2 processes per run on 2 nodes, once under DDP and once
    under ZeRO-3, both grids at once, every write logged (write_audit).
    Returns {mode: (runs dir, output, `scontrol show job` of each run while
    it ran, audit folder)}."""
    out = {}
    procs = {}
    for mode in ("ddp", "zero3"):
        root = mktemp(f"two-{mode}")
        audit = root / "audit"
        audit.mkdir()
        launcher = ["--launcher", _zero3_launcher(root)] if mode == "zero3" else []
        env = _env(slurm_cluster, DTVG_WRITE_AUDIT=str(audit),
                   PYTHONPATH=f"{AUDIT}{os.pathsep}{REPO}",
                   DTVG_DATA_CACHE=str(root / "runs" / ".cache" / "tokenized"))  # built here
        procs[mode] = (root, audit, _reproduce([*TWO_NODE_GRID, "--runs-dir", "runs", "--executor",
                                                "slurm", *WAIT, *TWO_NODES, *launcher],
                                               root, env))
    try:
        shown = _while_running({mode: (root / "runs", proc) for mode, (root, _, proc)
                                in procs.items()}, slurm_cluster, TWO_NODE_RUNS)
        for mode, (root, audit, proc) in procs.items():
            out[mode] = (root / "runs", _finish(proc, slurm_cluster, timeout=900), shown[mode],
                         audit)
    finally:
        for _, _, proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    return out


BACKGROUND.offer("two_nodes", lambda: _two_nodes(BACKGROUND.done("slurm_cluster"), BACKGROUND.folder),
                 after=("slurm_cluster",))


@pytest.fixture(scope="module")
def two_nodes(slurm_cluster, tmp_path_factory):
    return BACKGROUND.result("two_nodes", lambda: _two_nodes(slurm_cluster, tmp_path_factory.mktemp))


def _close_tensors(a: Path, b: Path, atol: float) -> None:
    ta, tb = load_file(str(a)), load_file(str(b))
    assert set(ta) == set(tb), (a, b)
    for key in ta:
        assert torch.allclose(ta[key].double(), tb[key].double(), rtol=0, atol=atol), (a, key)


@pytest.mark.slow
def test_a_run_on_two_nodes_equals_one_process(two_nodes, serial_demo) -> None:
    """DDP and ZeRO-3 over 2 nodes: one launcher per node with machine ranks
    0 and 1, both nodes in `scontrol show job`, world size 2, and stage 1
    (bank entries) and stage 2 (prompt within 1e-5, the same test metrics)
    as one process has them."""
    for mode, (runs, out, shown, _) in two_nodes.items():
        assert "a run's GPUs are CPU processes over gloo" in out
        for name in TWO_NODE_RUNS:
            assert "NumNodes=2 " in shown[name] and "NodeList=n[1-2]" in shown[name], shown[name]
            logs = [runs / "demo" / name / "run.log", runs / "demo" / name / "run.node1.log"]
            for rank, log in enumerate(logs):
                text = log.read_text()
                assert f"node {rank}/2 (n{rank + 1})" in text and f"--machine_rank {rank} " in text
                assert "--num_machines 2 " in text and "--num_processes 2 " in text
        for name in TWO_NODE_RUNS[1:]:
            ours = json.loads((runs / "demo" / name / "results.json").read_text())
            one = json.loads((serial_demo / "demo" / name / "results.json").read_text())
            assert ours["world_size"] == 2 and one["world_size"] == 1
            assert ours["zero_stage"] == (3 if mode == "zero3" else 0), ours["zero_stage"]
            assert ours["test"] == one["test"], (mode, name)
            _close_tensors(serial_demo / "demo" / name / "prompt.safetensors",
                           runs / "demo" / name / "prompt.safetensors", 1e-5)
        for entry in (serial_demo / "demo" / "bank" / "seed1").glob("*.safetensors"):
            _close_tensors(entry, runs / "demo" / "bank" / "seed1" / entry.name, 1e-5)


@pytest.mark.slow
def test_shared_files_are_written_by_node_0_only(two_nodes) -> None:
    """Both nodes see one folder (a cluster's shared home): every bank
    entry, tokenized cache file and checkpoint is written by one process of
    node 0, none by node 1."""
    for mode, (runs, _, _, audit) in two_nodes.items():
        events = [json.loads(line) for f in audit.glob("*.jsonl") for line in f.read_text().splitlines()]
        kinds = {"bank": f"{runs}/demo/bank/", "tokenized": f"{runs}/.cache/tokenized/",
                 "checkpoint": "/checkpoint"}
        for kind, marker in kinds.items():
            writes = [e for e in events if marker in e["path"] and e["path"].startswith(str(runs))]
            assert writes, (mode, kind, "nothing written?")
            writers = {(e["node"], e["rank"]) for e in writes}
            assert writers <= {("0", "0"), ("0", None)}, (mode, kind, writers)
            by_path: dict[str, set[int]] = {}
            for e in writes:
                by_path.setdefault(e["path"], set()).add(e["pid"])
            assert all(len(pids) == 1 for pids in by_path.values()), (mode, kind, by_path)


def _rerun_dtvg_on_two_nodes(two_nodes, tmp_path: Path, env: dict[str, str]):
    """The DDP two-node grid copied with its DTVG run removed, that run
    submitted again (in the background)."""
    runs = tmp_path / "runs"
    shutil.copytree(two_nodes["ddp"][0] / "demo", runs / "demo", symlinks=True)
    shutil.rmtree(runs / "demo" / "dtvg")
    return runs, _reproduce([*TWO_NODE_GRID, "--runs-dir", "runs", "--executor", "slurm",
                             *WAIT, *TWO_NODES], tmp_path, env)


def _requeued_on_usr1(cluster, two_nodes, root: Path) -> dict:
    """`scancel --signal=USR1` at the start of step 3 of the DTVG run on two
    nodes; returns what test_two_node_run_requeued_on_usr1_resumes_exactly reads."""
    marker = root / "paused"
    env = _env(cluster, DTVG_FAULT_STEP=str(PAUSE_STEP), DTVG_FAULT_KIND="pause",
               DTVG_FAULT_FILE=str(marker), DTVG_FAULT_PAUSE_S="120")
    runs, proc = _rerun_dtvg_on_two_nodes(two_nodes, root, env)
    try:
        _wait_for(marker.is_file, 300, "the run to reach step 3", proc)
        job_id = _records(runs)["dtvg/1"]["job_id"]
        subprocess.run(["scancel", "--signal=USR1", job_id], env=cluster.env(), check=True)
        out = _finish(proc, cluster)
    finally:
        if proc.poll() is None:
            proc.kill()
    return {"runs": runs, "job_id": job_id, "out": out, "shown": _scontrol(job_id, cluster)}


def _one_node_dies(cluster, two_nodes, root: Path) -> dict:
    """Rank 1 (node n2) killed by SIGKILL at step 3 while rank 0 waits for it
    in a collective, then the same command again; returns what
    test_one_node_dying_ends_the_job_then_a_rerun_resumes reads."""
    marker = root / "paused"
    env = _env(cluster, DTVG_FAULT_STEP=str(PAUSE_STEP), DTVG_FAULT_KIND="pause",
               DTVG_FAULT_RANK="1", DTVG_FAULT_FILE=str(marker), DTVG_FAULT_PAUSE_S="300")
    runs, proc = _rerun_dtvg_on_two_nodes(two_nodes, root, env)
    try:
        _wait_for(marker.is_file, 300, "rank 1 to reach step 3", proc)
        pid = int(re.search(r"pid (\d+)", marker.read_text()).group(1))
        job_id = _records(runs)["dtvg/1"]["job_id"]
        os.kill(pid, signal.SIGKILL)
        killed = time.time()
        _wait_for(lambda: "JobState=RUNNING" not in _scontrol(job_id, cluster), 90, "the job to end")
        ended_after = time.time() - killed
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    again = _reproduce([*TWO_NODE_GRID, "--runs-dir", "runs", "--executor", "slurm",
                        *WAIT, *TWO_NODES], root, _env(cluster))
    _finish(again, cluster)
    return {"runs": runs, "ended_after": ended_after, "first_exit": proc.returncode}


def _two_node_faults(slurm_cluster, two_nodes, mktemp) -> dict[str, dict]:
    """Both fault scenarios on two nodes side by side (each its own copy of
    the DDP grid and its own SLURM job; the cluster holds both): most of
    either is waiting on the scheduler or on a paused rank. Its threads
    count as the background's when it runs there (their processes get the
    session's environment)."""
    roots = {name: mktemp(name) for name in ("usr1", "dies")}
    with Background.pool(2, "faults") as pool:
        usr1 = pool.submit(_requeued_on_usr1, slurm_cluster, two_nodes, roots["usr1"])
        dies = pool.submit(_one_node_dies, slurm_cluster, two_nodes, roots["dies"])
        return {"usr1": usr1.result(), "dies": dies.result()}


BACKGROUND.offer("two_node_faults", lambda: _two_node_faults(
    BACKGROUND.done("slurm_cluster"), BACKGROUND.done("two_nodes"), BACKGROUND.folder),
    after=("slurm_cluster", "two_nodes"))


@pytest.fixture(scope="module")
def two_node_faults(slurm_cluster, two_nodes, tmp_path_factory) -> dict[str, dict]:
    return BACKGROUND.result("two_node_faults", lambda: _two_node_faults(slurm_cluster, two_nodes,
                                                                         tmp_path_factory.mktemp))


@pytest.mark.slow
def test_two_node_run_requeued_on_usr1_resumes_exactly(two_nodes, two_node_faults) -> None:
    """`scancel --signal=USR1` at the start of step 3: both ranks stop, rank
    0 checkpoints, the trainer exits 75, the job is requeued, resumes on both
    nodes and ends bit for bit where the uninterrupted two-node run ends."""
    fault = two_node_faults["usr1"]
    run = fault["runs"] / "demo" / "dtvg" / "1"
    log, log1 = (run / "run.log").read_text(), (run / "run.node1.log").read_text()
    assert f"stopped by SIGUSR1 after step {PAUSE_STEP}" in log
    assert "exitcode  : 75" in log  # the trainer's exit, as torchrun reports it
    for rank, text in enumerate((log, log1)):
        assert re.search(rf"node {rank}/2 \(n{rank + 1}\), restart 1 \(resume\) start: .*"
                         rf"--machine_rank {rank} .* resume=true", text), text[-3000:]
    assert f"at step {PAUSE_STEP} (stopped there by SIGUSR1)" in log
    assert "Restarts=1" in fault["shown"]
    assert f"# {fault['job_id']} dtvg/1: COMPLETED" in fault["out"]
    _same_run(two_nodes["ddp"][0] / "demo" / "dtvg" / "1", run)


@pytest.mark.slow
def test_one_node_dying_ends_the_job_then_a_rerun_resumes(two_nodes, two_node_faults) -> None:
    """Rank 1 (node n2) killed at step 3 while rank 0 waits for it in a
    collective: the job leaves the running state within 60 s (no hang), and
    the same command again resumes from the last checkpoint to the
    uninterrupted run's result."""
    fault = two_node_faults["dies"]
    assert fault["ended_after"] < 60
    assert fault["first_exit"] != 0
    run = fault["runs"] / "demo" / "dtvg" / "1"
    assert re.search(r"resumed from \S+ at step 2", (run / "run.log").read_text())
    _same_run(two_nodes["ddp"][0] / "demo" / "dtvg" / "1", run)
