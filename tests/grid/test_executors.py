"""The grid's job graph and its executors, with a fake trainer (a script
that writes what a run writes): dependencies from the banks, a failed
stage-1 run failing only the runs that need it, device packing, per-run
threads and logs, skipping done runs, never starting a held one, the
planner's GPU count against an explicit one, and --status."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest

from dtvg_dist import reproduce
from dtvg_dist.grid import status as grid_status
from dtvg_dist.grid.build import experiment_jobs
from dtvg_dist.grid.executors import (
    BLOCKED,
    DONE,
    FAILED,
    SKIPPED,
    LocalExecutor,
    SerialExecutor,
    make_executor,
)
from dtvg_dist.grid.jobs import Job, Launch, check, dependents, link_stage1
from dtvg_dist.reporting.paper_results import EXPERIMENTS
from dtvg_dist.store.locks import run_lock
from dtvg_dist.store.run_files import RESULTS

FAKE = """
import json, os, pathlib, sys, time
args = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
out = pathlib.Path(args["output_dir"])
record = pathlib.Path(args["record"])
start = time.time()
print("fake trainer", out, flush=True)
time.sleep(float(args.get("sleep", "0")))
if args.get("fail"):
    print("Traceback (most recent call last):")
    print("  File 'x', line 1")
    print(f"ValueError: {args['fail']}", flush=True)
    code = 2
else:
    code = 0
    if args.get("tasks"):
        bank = pathlib.Path(args["bank_dir"])
        bank.mkdir(parents=True, exist_ok=True)
        for task in args["tasks"].split(","):
            (bank / f"{task}.safetensors").write_bytes(b"x")
    else:
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps({"test": {"accuracy": 1.0}}))
with open(record, "a") as f:
    f.write(json.dumps({"run": str(out), "start": start, "end": time.time(), "code": code,
                        "gpus": os.environ.get("CUDA_VISIBLE_DEVICES"),
                        "threads": os.environ.get("OMP_NUM_THREADS")}) + "\\n")
sys.exit(code)
"""


@pytest.fixture
def fake(tmp_path) -> Path:
    path = tmp_path / "fake_train.py"
    path.write_text(FAKE)
    return path


def _job(root: Path, fake: Path, name: str, *, stage1: bool = False, bank: str = "bank",
         gpus: int = 0, fail: str = "", sleep: float = 0.0) -> Job:
    out = root / name
    args = [f"output_dir={out}", f"bank_dir={root / bank}", f"record={root / 'record.jsonl'}",
            f"sleep={sleep}"]
    if stage1:
        args.append("tasks=a,b")
    if fail:
        args.append(f"fail={fail}")
    return Job(name=name, run_dir=out, recipe=name.split("/")[0], args=args,
               launch=Launch(prefix=(sys.executable, str(fake)), gpus=gpus), stage1=stage1,
               bank=root / bank, bank_tasks=("a", "b") if stage1 else ())


def _grid(root: Path, fake: Path, fail_seed: int | None = None, sleep: float = 0.0) -> list[Job]:
    """Two seeds: each a stage-1 run filling bank<seed> and two runs reading it."""
    jobs = []
    for seed in (1, 2):
        jobs.append(_job(root, fake, f"stage1/{seed}", stage1=True, bank=f"bank{seed}",
                         fail="no TPV for you" if seed == fail_seed else "", sleep=sleep))
        jobs += [_job(root, fake, f"{m}/{seed}", bank=f"bank{seed}", sleep=sleep) for m in ("pt", "dtvg")]
    link_stage1(jobs)
    return jobs


def _records(root: Path) -> list[dict]:
    path = root / "record.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def test_stage2_runs_need_the_stage1_runs_of_their_bank(tmp_path, fake) -> None:
    jobs = _grid(tmp_path, fake)
    needs = {j.name: j.needs for j in jobs}
    assert needs == {"stage1/1": (), "pt/1": ("stage1/1",), "dtvg/1": ("stage1/1",),
                     "stage1/2": (), "pt/2": ("stage1/2",), "dtvg/2": ("stage1/2",)}
    assert dependents(jobs, "stage1/1") == ["pt/1", "dtvg/1"]
    check(jobs)
    with pytest.raises(ValueError, match="needs 'stage1/2', which is not before it"):
        check([jobs[4], jobs[3]])


def test_paper_grids_depend_on_their_own_banks() -> None:
    """table5: a Llama-3-8B row needs the 8B stage-1 run of its seed only;
    table3 (few-shot): a row needs the full-data source runs it copies from."""
    jobs = experiment_jobs(EXPERIMENTS["table5"], seeds=(22, 32), variants=("dtvg", "pt"),
                           overrides=[], runs_dir=Path("runs"), recipes=("llama3-8b-cb",))
    by = {j.name: j for j in jobs}
    assert by["llama3-8b-cb/32"].needs == ("llama3-8b-stage1/32",)
    assert by["llama3-8b-cb@pt/22"].needs == ("llama3-8b-stage1/22",)
    few = experiment_jobs(EXPERIMENTS["table3"], seeds=(22,), variants=("dtvg",), overrides=[],
                          runs_dir=Path("runs"), recipes=("t5-base-fewshot-k4-cb",))
    row = next(j for j in few if not j.stage1)
    assert set(row.needs) == {f"t5-base-stage1-{t}/22" for t in
                              ("mnli", "qnli", "qqp", "sst2", "record", "squad")}


@pytest.mark.parametrize("executor", ["serial", "local"])
def test_a_failed_stage1_run_fails_only_the_runs_that_need_it(tmp_path, fake, capsys, executor) -> None:
    jobs = _grid(tmp_path, fake, fail_seed=1)
    ex = SerialExecutor() if executor == "serial" else LocalExecutor(max_parallel=2, devices=[])
    results = ex.run(jobs)
    assert {n: r.state for n, r in results.items()} == {
        "stage1/1": FAILED, "pt/1": BLOCKED, "dtvg/1": BLOCKED,
        "stage1/2": DONE, "pt/2": DONE, "dtvg/2": DONE}
    assert results["stage1/1"].code == 2 and "exit status 2" in results["stage1/1"].detail
    ran = {Path(r["run"]).relative_to(tmp_path).as_posix() for r in _records(tmp_path)}
    assert ran == {"stage1/1", "stage1/2", "pt/2", "dtvg/2"}
    assert "2 job(s) that need it will not start: pt/1, dtvg/1" in capsys.readouterr().err
    # one log per run, with the run's own output
    assert "ValueError: no TPV for you" in (tmp_path / "stage1/1/run.log").read_text()
    assert "fake trainer" in (tmp_path / "pt/2/run.log").read_text()


def test_local_packs_runs_on_their_own_gpus(tmp_path, fake) -> None:
    """Three devices, runs needing 2, 1, 1, 2, 1 GPUs: never a device shared
    by two runs at once, never more than max_parallel runs."""
    jobs = [_job(tmp_path, fake, f"r{i}/1", gpus=g, sleep=0.6) for i, g in enumerate((2, 1, 1, 2, 1))]
    results = LocalExecutor(max_parallel=3, devices=["0", "1", "2"]).run(jobs)
    assert all(r.state == DONE for r in results.values())
    records = _records(tmp_path)
    assert len(records) == 5
    by_run = {Path(r["run"]).parent.name: r for r in records}
    for job in jobs:
        assert len(by_run[job.name.split("/")[0]]["gpus"].split(",")) == job.gpus
    for a in records:
        for b in records:
            if a is not b and a["start"] < b["end"] and b["start"] < a["end"]:
                assert not set(a["gpus"].split(",")) & set(b["gpus"].split(",")), (a, b)
    events = sorted([(r["start"], 1) for r in records] + [(r["end"], -1) for r in records])
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    assert 2 <= peak <= 3  # they did run side by side


def test_local_on_cpu_gives_each_run_its_share_of_the_cores(tmp_path, fake) -> None:
    jobs = [_job(tmp_path, fake, f"r{i}/1") for i in range(2)]
    LocalExecutor(max_parallel=2, devices=[], cores=4).run(jobs)
    assert [r["threads"] for r in _records(tmp_path)] == ["2", "2"]
    LocalExecutor(max_parallel=4, devices=[], cores=2).run(
        [_job(tmp_path, fake, "r9/1")])
    assert _records(tmp_path)[-1]["threads"] == "1"


def test_a_run_needing_more_gpus_than_visible_fails_alone(tmp_path, fake) -> None:
    jobs = [_job(tmp_path, fake, "big/1", gpus=4), _job(tmp_path, fake, "small/1", gpus=1)]
    results = LocalExecutor(max_parallel=2, devices=["0", "1"]).run(jobs)
    assert results["big/1"].state == FAILED and "needs 4 GPUs, 2 visible" in results["big/1"].detail
    assert results["small/1"].state == DONE


@pytest.mark.parametrize("executor", ["serial", "local"])
def test_rerunning_starts_only_what_is_missing_or_failed(tmp_path, fake, executor) -> None:
    make = (lambda: SerialExecutor()) if executor == "serial" else (
        lambda: LocalExecutor(max_parallel=2, devices=[]))
    jobs = _grid(tmp_path, fake, fail_seed=1)
    make().run(jobs)
    first = len(_records(tmp_path))
    fixed = _grid(tmp_path, fake)  # the stage-1 run of seed 1 now succeeds
    results = make().run(fixed)
    assert {n: r.state for n, r in results.items()} == {
        "stage1/1": DONE, "pt/1": DONE, "dtvg/1": DONE,
        "stage1/2": SKIPPED, "pt/2": SKIPPED, "dtvg/2": SKIPPED}
    again = {Path(r["run"]).relative_to(tmp_path).as_posix() for r in _records(tmp_path)[first:]}
    assert again == {"stage1/1", "pt/1", "dtvg/1"}
    assert all(r.state == SKIPPED for r in make().run(fixed).values())


def _hold(folder: Path):
    """Hold a run folder's lock as a live trainer does."""
    return run_lock(folder)


@pytest.mark.parametrize("executor", ["serial", "local"])
def test_a_run_held_by_another_process_is_waited_for_never_started(tmp_path, fake, executor) -> None:
    jobs = _grid(tmp_path, fake)
    held = tmp_path / "pt/1"
    release = threading.Event()

    def other_process() -> None:
        with _hold(held):
            release.wait(10)
            (held / RESULTS).write_text("{}")  # it finished

    thread = threading.Thread(target=other_process)
    thread.start()
    while (grid_status.lock_holder(held) or {}).get("pid") is None:  # locked and its holder written
        time.sleep(0.05)
    ex = SerialExecutor() if executor == "serial" else LocalExecutor(max_parallel=2, devices=[])
    ex.poll_s = 0.1
    rows = {r["job"]: r for r in grid_status.status(jobs)}
    assert rows["pt/1"]["state"] == "running" and f"pid {os.getpid()}" in rows["pt/1"]["detail"]
    threading.Timer(1.0, release.set).start()
    results = ex.run(jobs)
    thread.join()
    assert results["pt/1"].state == SKIPPED and "finished elsewhere" in results["pt/1"].detail
    ran = {Path(r["run"]).relative_to(tmp_path).as_posix() for r in _records(tmp_path)}
    assert "pt/1" not in ran and {"dtvg/1", "pt/2"} <= ran


def test_status_states_and_the_last_error_line(tmp_path, fake, capsys) -> None:
    jobs = _grid(tmp_path, fake, fail_seed=1)
    SerialExecutor().run(jobs)
    (tmp_path / "dtvg/2" / RESULTS).unlink()  # as if never run: no results
    (tmp_path / "dtvg/2/run.log").unlink()
    (tmp_path / "pt/2" / RESULTS).unlink()  # its log stays: it failed
    with (tmp_path / "pt/2/run.log").open("a") as log:
        log.write("step 3 loss 0.4\nerror: bank entry a.safetensors: checksum mismatch\nbye\n"
                  "# 2026 exit 2\n")
    rows = grid_status.status(jobs, scheduler={"dtvg/2": "pending"})
    states = {r["job"]: (r["state"], r["detail"]) for r in rows}
    assert states["stage1/1"] == ("failed", "ValueError: no TPV for you")
    assert states["pt/1"] == ("missing", "waits for stage1/1 (failed)")
    assert states["stage1/2"] == ("done", "")
    assert states["pt/2"] == ("failed", "error: bank entry a.safetensors: checksum mismatch")
    assert states["dtvg/2"] == ("pending", "")
    assert grid_status.status(jobs)[-1]["state"] == "missing"
    text = grid_status.render(rows)
    assert text.splitlines()[0].split() == ["run", "state", "detail"]
    assert text.splitlines()[-1] == "1 done, 1 pending, 2 failed, 2 missing"


def test_reproduce_status_of_the_demo_grid(tmp_path, capsys) -> None:
    out = tmp_path / "demo"
    (out / "pt/1").mkdir(parents=True)
    (out / "pt/1" / RESULTS).write_text("{}")
    (out / "spot/1").mkdir(parents=True)
    (out / "spot/1/run.log").write_text("loading\nRuntimeError: CUDA out of memory\n")
    assert reproduce.main(["demo", "--status", "--runs-dir", str(tmp_path), "--seeds", "1",
                           "--variants", "pt,spot,all,dtvg"]) == 0
    lines = capsys.readouterr().out.splitlines()
    table = {line.split()[0]: line.split(None, 2)[1:] for line in lines[1:-1]}
    assert table == {"stage1/1": ["missing"], "pt/1": ["done"],
                     "spot/1": ["failed", "RuntimeError: CUDA out of memory"],
                     "all/1": ["missing"], "dtvg/1": ["missing"]}
    assert lines[-1] == "1 done, 1 failed, 3 missing"


def test_gpus_per_run_from_the_planner_or_explicit(monkeypatch) -> None:
    """auto: the planner's fewest GPUs that keep the numerics and split the
    recipe's batch (Llama-3-8B on 16 GiB cards: ZeRO-3 on 4 once the batch is
    4; at the recipe's batch of 2, 8-bit on one; T5-base: one, this python);
    a number overrides."""
    auto = reproduce.launch_for("auto", None, 16.0, devices=[])
    paper_batch = auto("llama3-8b-cb", [])
    assert (paper_batch.gpus, paper_batch.mode) == (1, "ddp8")
    big = auto("llama3-8b-cb", ["optim.batch_size=4"])
    assert big.gpus == 4 and big.mode == "zero3"
    assert big.prefix[:3] == ("accelerate", "launch", "--config_file")
    assert big.prefix[3].endswith("launch_configs/multi_gpu_zero3.yaml") and Path(big.prefix[3]).is_file()
    assert big.prefix[-2:] == ("--num_processes", "4")
    small = auto("t5-base-dtvg-cb", [])
    assert (small.gpus, small.prefix) == (1, (sys.executable,))
    two = reproduce.launch_for("2", None, 80.0, devices=[])("t5-base-dtvg-cb", [])
    assert two.gpus == 2 and two.prefix[-1] == "2" and two.prefix[3].endswith("multi_gpu_ddp.yaml")
    one_8bit = reproduce.launch_for("1", None, 16.0, devices=[])("llama3-8b-cb", [])
    assert one_8bit.gpus == 1 and one_8bit.extra == ("backbone.load_in_8bit=true",)
    cpu = reproduce.launch_for("auto", None, None, devices=[])("llama3-8b-cb", [])
    assert (cpu.gpus, cpu.prefix) == (0, (sys.executable,))
    # 8 GPUs asked, but a batch of 2 splits over at most 2: the error names those
    with pytest.raises(ValueError, match="no launch mode fits 2 GPU"):
        reproduce.launch_for("auto", None, 8.0, devices=[])("llama3-8b-cb", [])


def test_dry_run_prints_the_planners_launch_line(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert reproduce.main(["table5", "--recipes", "llama3-8b-cb", "--seeds", "42", "--no-stage1",
                           "--gpu-memory", "16", "--dry-run", "--executor", "local"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if "-m dtvg_dist.train" in ln)
    assert line.startswith("accelerate launch --config_file ")
    # the recipe's batch of 2 cannot feed ZeRO-3's 4 processes: 8-bit on one GPU
    assert "single_gpu_8bit.yaml -m dtvg_dist.train recipe=llama3-8b-cb seed=42" in line
    assert line.endswith("backbone.load_in_8bit=true")


def test_unknown_executor_and_bad_gpus_per_run_are_refused(capsys) -> None:
    with pytest.raises(ValueError, match="'nosuch' is not one of serial, local"):
        make_executor("nosuch")
    with pytest.raises(SystemExit):
        reproduce.main(["demo", "--gpus-per-run", "many"])
    assert "give auto or a number of GPUs" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        reproduce.main(["demo", "--executor", "nosuch"])


def test_a_run_refused_because_another_took_its_folder_first_is_waited_for(tmp_path, fake) -> None:
    """Both saw the folder free; the other process locked it first, so ours
    exited 2 (RunLocked). The executor waits for the holder, then finds the
    run done: not a failure, and not started a second time."""
    job = _job(tmp_path, fake, "pt/1", fail="RunLocked: run folder in use", sleep=0.5)
    release = threading.Event()

    def other_process() -> None:
        while not job.log.is_file():  # our run has started
            time.sleep(0.01)
        with _hold(job.run_dir):
            release.wait(10)
            (job.run_dir / RESULTS).write_text("{}")

    thread = threading.Thread(target=other_process)
    thread.start()
    threading.Timer(1.5, release.set).start()
    ex = SerialExecutor()
    ex.poll_s = 0.1
    result = ex.run([job])["pt/1"]
    thread.join()
    assert result.state == SKIPPED and "finished elsewhere" in result.detail
    assert len(_records(tmp_path)) == 1  # ours ran once and was refused
