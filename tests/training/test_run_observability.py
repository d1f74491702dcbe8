"""What a researcher watches on a run (issue 24), on one tiny-llama run with
logging.every_steps=1, trained in this process: every step row holds the
speed, memory and gradient keys, results.json their summary and its stop
reason, TensorBoard and mlflow hold the same scalars, and the profiler's
trace is written and reads back."""

from __future__ import annotations

import json
import math
import statistics

import pytest
from cli_runs import jsonl

from dtvg_dist.train import main
from dtvg_dist.training import tracking

STEP_KEYS = {"step", "loss", "lr", "step_time_s", "samples_per_s", "tokens_per_s", "peak_memory_mb",
             "grad_norm"}
MAX_STEPS = 6


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    pytest.importorskip("mlflow")
    out = tmp_path_factory.mktemp("observe")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", "")  # unset: the default, <output_dir>/mlflow.db
        mp.setenv("OMP_NUM_THREADS", "1")
        code = main([
            "recipe=tiny-llama", f"output_dir={out}", f"bank_dir={out / 'bank'}",
            "logging.progress_bar=false", "source_tasks=[syn_same,syn_flip]", "stage1.max_steps=2",
            f"optim.max_steps={MAX_STEPS}", "eval.every_steps=3", "logging.every_steps=1",
            "logging.trackers=[tensorboard,mlflow]", "logging.profile=true",
        ])
        assert code == 0
        # the default store, set for the run's process (the context then restores the variable)
        assert tracking.os.environ["MLFLOW_TRACKING_URI"] == f"sqlite:///{out.resolve() / 'mlflow.db'}"
    return out


def _rows(run_dir):
    rows = jsonl(run_dir / "metrics.jsonl")
    return [r for r in rows if "split" not in r], [r for r in rows if "split" in r]


@pytest.mark.slow
def test_every_step_row_and_results_hold_every_key(run):
    steps, evaluations = _rows(run)
    assert [r["step"] for r in steps] == list(range(1, MAX_STEPS + 1))
    for row in steps:
        assert set(row) >= STEP_KEYS | {"lr/target", "lr/source_alphas", "group_size"}, row
        assert row["samples_per_s"] > 0 and row["tokens_per_s"] > row["samples_per_s"]
        assert row["peak_memory_mb"] > 0 and math.isfinite(row["grad_norm"]) and row["grad_norm"] > 0
        # samples/s is the global batch over the step's time
        assert row["samples_per_s"] * row["step_time_s"] == pytest.approx(8, rel=1e-6)
        assert 1 <= row["group_size"] <= 2
    for row in evaluations:
        assert row["eval_time_s"] > 0
        assert row["eval_examples_per_s"] == pytest.approx(row["num_examples"] / row["eval_time_s"], rel=1e-2)
    results = json.loads((run / "results.json").read_text())
    assert results["stop_reason"] == "max_steps"
    assert results["samples_per_s"] == pytest.approx(statistics.median(r["samples_per_s"] for r in steps), abs=1e-3)
    assert results["tokens_per_s"] == pytest.approx(statistics.median(r["tokens_per_s"] for r in steps), abs=1e-3)
    assert results["peak_memory_mb"] == max(r["peak_memory_mb"] for r in steps)
    stage1 = run / "stage1" / "syn_same"
    assert all(set(r) >= STEP_KEYS for r in _rows(stage1)[0])
    assert json.loads((stage1 / "results.json").read_text())["stop_reason"] == "max_steps"


def _tensorboard(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    reader = EventAccumulator(str(run / "tiny-llama"), size_guidance={"scalars": 0})
    reader.Reload()
    return {tag: {e.step: e.value for e in reader.Scalars(tag)} for tag in reader.Tags()["scalars"]}


def _mlflow(run):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{run / 'mlflow.db'}")
    (experiment,) = client.search_experiments(filter_string="name = 'tiny-llama'")
    (mlrun,) = client.search_runs([experiment.experiment_id])
    return {
        key: {m.step: m.value for m in client.get_metric_history(mlrun.info.run_id, key)}
        for key in mlrun.data.metrics
    }


@pytest.mark.slow
def test_tensorboard_and_mlflow_hold_the_same_scalars(run):
    board, flow = _tensorboard(run), _mlflow(run)
    assert set(board) == set(flow)
    for key in ("step_time_s", "samples_per_s", "tokens_per_s", "peak_memory_mb", "grad_norm", "loss",
                "lr/target", "group_size"):
        assert f"stage2/dtvg/{key}" in board, key
    assert "stage2/dtvg/validation/eval_time_s" in board
    for tag, series in board.items():
        assert set(series) == set(flow[tag]), tag
        for step, value in series.items():  # TensorBoard stores float32
            assert flow[tag][step] == pytest.approx(value, rel=1e-6, abs=1e-6), (tag, step)
    steps, _ = _rows(run)
    for row in steps:
        assert flow["stage2/dtvg/samples_per_s"][row["step"]] == pytest.approx(row["samples_per_s"])


@pytest.mark.slow
def test_profile_trace_is_written_and_reads_back(run):
    traces = sorted((run / "profile").glob("*.pt.trace.json"))
    assert len(traces) == 1
    events = json.loads(traces[0].read_text())["traceEvents"]
    names = {e.get("name", "") for e in events}
    assert any(n.startswith("ProfilerStep#") for n in names)  # the recorded optimizer steps
    assert any(n.startswith("aten::") for n in names)  # operators, with times
    assert all("dur" in e for e in events if e.get("name", "").startswith("aten::mm"))
    assert "aten::" in (run / "profile" / "top_operators.txt").read_text()


def test_missing_mlflow_names_the_extra(monkeypatch):
    monkeypatch.setattr(tracking.importlib.util, "find_spec", lambda name: None)
    message = tracking.missing_tracker_package("mlflow")
    assert "pip install 'dtvg-dist[mlflow]'" in message and "logging.trackers" in message
    assert "\n" not in message


def test_profiling_off_builds_no_profiler(tmp_path):
    from dtvg_dist.training.profiling import NoProfiler, step_profiler

    off = step_profiler(False, tmp_path, 100, "stage2/dtvg", main=True)
    other_rank = step_profiler(True, tmp_path, 100, "stage2/dtvg", main=False)
    assert isinstance(off, NoProfiler) and isinstance(other_rank, NoProfiler)
    off.step()
    off.close()
    assert not (tmp_path / "profile").exists()
