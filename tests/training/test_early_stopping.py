"""eval.early_stopping_patience: a run whose validation score stops improving
ends with stop_reason early_stopping, and a run that crashed on the way
resumes with its count of evaluations without improvement (so it stops at
the same step as the uninterrupted run, not `patience` evaluations later)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from cli_runs import jsonl

from dtvg_dist.store.checkpoint import load_latest
from dtvg_dist.train import main
from dtvg_dist.training.early_stopping import count_evaluation, should_stop
from dtvg_dist.training.faults import InjectedFault

# A learning rate too small to change any prediction: every validation after the
# first scores the same, which is no improvement.
ARGS = ["recipe=tiny-llama", "method=pt", "stage=1", "source_tasks=[]", "target_task=syn_target",
        "stage1.max_steps=12", "stage1.lr=1e-12", "eval.every_steps=2", "logging.every_steps=2",
        "eval.early_stopping_patience=2", "logging.progress_bar=false"]


def test_patience_counts_evaluations_in_a_row():
    state = SimpleNamespace(evals_without_improvement=0)
    assert not should_stop(state, None) and not should_stop(state, 1)
    for improved, count in ((False, 1), (False, 2), (True, 0), (False, 1)):
        count_evaluation(state, improved)
        assert state.evals_without_improvement == count
    assert should_stop(state, 1) and not should_stop(state, 2) and not should_stop(state, None)


def _train(out, monkeypatch, *extra, fault_step=None):
    with monkeypatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        if fault_step is not None:
            mp.setenv("DTVG_FAULT_STEP", str(fault_step))
            mp.setenv("DTVG_FAULT_KIND", "raise")
        return main([*ARGS, f"output_dir={out}", f"bank_dir={out / 'bank'}", *extra])


def _losses(run_dir):
    return [(r["step"], r.get("split"), r.get("loss"), r.get("accuracy")) for r in jsonl(run_dir / "metrics.jsonl")]


@pytest.mark.slow
def test_early_stopping_ends_the_run_and_resumes_with_its_count(tmp_path, monkeypatch):
    whole = tmp_path / "whole"
    assert _train(whole, monkeypatch) == 0
    run = whole / "stage1" / "syn_target"
    results = json.loads((run / "results.json").read_text())
    # validations at steps 2 (the first: best), 4 and 6 (no better: 1, 2 = patience)
    assert (results["stop_reason"], results["steps"], results["best_step"]) == ("early_stopping", 6, 2)
    assert [r["step"] for r in jsonl(run / "metrics.jsonl") if r.get("split") == "validation"] == [2, 4, 6]

    crashed = tmp_path / "crashed"
    with pytest.raises(InjectedFault):  # at step 5, after the checkpoint of step 4
        _train(crashed, monkeypatch, fault_step=5)
    run_b = crashed / "stage1" / "syn_target"
    state = load_latest(run_b).state  # what the resume reads
    assert (state.step, state.evals_without_improvement) == (4, 1)
    assert not (run_b / "results.json").exists()
    assert _train(crashed, monkeypatch, "resume=true") == 0
    resumed = json.loads((run_b / "results.json").read_text())
    # A count started afresh on resume would stop at step 8.
    assert (resumed["stop_reason"], resumed["steps"], resumed["best_step"]) == ("early_stopping", 6, 2)
    assert _losses(run_b) == _losses(run)
