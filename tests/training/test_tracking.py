"""Experiment tracking: TensorBoard's event files, read back with TensorBoard's
own reader, hold per step the loss and learning rate, per evaluation every
metric, and per DTVG step the group size and every source's similarity, equal
to metrics.jsonl and grouping.jsonl; a tracker whose package is missing is an
error before anything loads."""

from __future__ import annotations

import math

import pytest
from cli_runs import jsonl
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import dtvg_dist.training.tracking as tracking
from dtvg_dist.train import main
from dtvg_dist.training.tracking import flat_config

STAGE1 = ["syn_same", "syn_flip", "syn_target"]
SOURCES = ["syn_same", "syn_flip"]


def _events(run_dir, recipe: str) -> dict[str, dict[int, float]]:
    """tag -> {step: value} of the scalars in the run's event file."""
    reader = EventAccumulator(str(run_dir / recipe), size_guidance={"scalars": 0})
    reader.Reload()
    return {tag: {e.step: e.value for e in reader.Scalars(tag)} for tag in reader.Tags()["scalars"]}


def _close(a: float, b: float) -> bool:
    """TensorBoard stores scalars as float32."""
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6)


@pytest.mark.parametrize("recipe", ["tiny-t5", "tiny-llama"])
def test_events_hold_what_the_run_files_hold(tiny_runs, recipe):
    out = tiny_runs[recipe]
    events = _events(out, recipe)
    runs = [(f"stage1/{t}", out / "stage1" / t, "prompt") for t in STAGE1]
    runs.append(("stage2/dtvg", out, "target"))
    for name, run_dir, first_group in runs:
        rows = jsonl(run_dir / "metrics.jsonl")
        steps = [r for r in rows if "loss" in r]
        assert steps and len(events[f"{name}/loss"]) == len(steps)
        for row in steps:
            assert _close(events[f"{name}/loss"][row["step"]], row["loss"]), (name, row)
            if "lr" in row:
                assert _close(events[f"{name}/lr/{first_group}"][row["step"]], row["lr"]), (name, row)
        # The learning rate is there every step, not only every logging.every_steps.
        assert sorted(events[f"{name}/lr/{first_group}"]) == [r["step"] for r in steps]
        evaluations = [r for r in rows if "split" in r]
        validations = len(steps) // 2  # eval.every_steps=2
        assert [r["split"] for r in evaluations] == ["validation"] * validations + ["test"]
        for row in evaluations:
            metrics = {k: v for k, v in row.items() if k not in ("step", "split")}
            assert set(metrics) >= {"accuracy", "invalid", "num_examples"}
            for key, value in metrics.items():
                assert _close(events[f"{name}/{row['split']}/{key}"][row["step"]], value), (name, key)
    # DTVG: every step's group size and similarities, as grouping.jsonl has them.
    grouping = jsonl(out / "grouping.jsonl")
    assert [g["step"] for g in grouping] == sorted(events["stage2/dtvg/group_size"])
    for row in grouping:
        assert events["stage2/dtvg/group_size"][row["step"]] == len(row["group"])
        for source in SOURCES:
            assert _close(events[f"stage2/dtvg/similarity/{source}"][row["step"]], row["sims"][source])
    assert "stage2/dtvg/lr/source_alphas" in events
    # Stage-1 runs have no grouping.
    assert not any(tag.startswith("stage1/") and "similarity" in tag for tag in events)


def test_missing_tracker_package_is_an_error_before_loading(monkeypatch, capsys):
    real = tracking.importlib.util.find_spec
    monkeypatch.setattr(
        tracking.importlib.util, "find_spec",
        lambda name, *a: None if name in ("tensorboard", "tensorboardX") else real(name, *a),
    )

    def no_loading(*_a, **_k):
        raise AssertionError("a backbone was loaded")

    # pipeline bound the name at import: patch it where it is called, too
    monkeypatch.setattr("dtvg_dist.model.backbone.load_backbone", no_loading)
    monkeypatch.setattr("dtvg_dist.orchestration.pipeline.load_backbone", no_loading)
    assert main(["recipe=tiny-t5", "logging.trackers=[tensorboard]"]) == 2
    err = capsys.readouterr().err
    assert "logging.trackers: 'tensorboard' needs the package tensorboard" in err
    assert "dtvg-dist[tracking]" in err
    assert main(["recipe=tiny-t5", "logging.trackers=[comet]"]) == 2
    assert "'comet' is not one of tensorboard, wandb, mlflow" in capsys.readouterr().err


def test_flat_config_has_only_values_tensorboard_takes():
    flat = flat_config({"a": {"b": 1, "c": None, "d": [1, "x"]}, "e": True, "f": 0.5, "g": "s"})
    assert flat == {"a.b": 1, "a.c": "null", "a.d": '[1, "x"]', "e": True, "f": 0.5, "g": "s"}
