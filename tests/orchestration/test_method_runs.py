"""Finished ATTEMPT and DePT runs through the commands that read runs:
`predict` rebuilds the method's module and predicts what the run's own test
evaluation scored, `export --peft` refuses with the reason, and TensorBoard
holds every step of both param groups' rates."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import warm_python
from background import BACKGROUND
from cli_runs import REPO, jsonl, prompt_tensors, results
from omegaconf import OmegaConf
from trained_prompts import run_config

from dtvg_dist.data import load_splits
from dtvg_dist.tasks import get_task

TARGET = "syn_target"
RUNS = {  # name -> (recipe, method overrides)
    "t5-attempt": ("tiny-t5", ["method=attempt", "attempt.attention_dim=4"]),
    "llama-dept": ("tiny-llama", ["method=dept", "dept.prompt_length=4", "dept.rank=2",
                                  "dept.max_length=64"]),
}
GROUPS = {"t5-attempt": ("prompt", "attention"), "llama-dept": ("prompt", "embedding_update")}


def _method_runs(folder: Callable[[str], Path], at_once: bool) -> dict[str, Path]:
    """name -> output_dir of a finished stage=all run (4 stage-2 steps); side
    by side when `at_once`."""
    procs, outs = {}, {}
    for name, (recipe, extra) in RUNS.items():
        out = outs[name] = folder(name)
        cmd = [sys.executable, "-m", "dtvg_dist.train", f"recipe={recipe}", f"output_dir={out}",
               f"bank_dir={out / 'bank'}", "logging.progress_bar=false",
               "source_tasks=[syn_same,syn_flip]", "stage1.max_steps=2", "optim.max_steps=4",
               "eval.every_steps=2", "logging.every_steps=2", "logging.trackers=[tensorboard]",
               *extra]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        procs[name] = warm_python.popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
        if not at_once:
            _finished(name, procs.pop(name))
    for name, proc in procs.items():
        _finished(name, proc)
    return outs


def _finished(name: str, proc: subprocess.Popen) -> None:
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, f"{name}: exit {proc.returncode}\n{output[-6000:]}"


# one run at a time in the background (tests/background.py), else both at once here
BACKGROUND.offer("method_runs", lambda: _method_runs(BACKGROUND.folder, at_once=False))


@pytest.fixture(scope="module")
def method_runs(tmp_path_factory) -> dict[str, Path]:
    return BACKGROUND.result("method_runs", lambda: _method_runs(tmp_path_factory.mktemp, at_once=True))


@pytest.mark.parametrize("name", list(RUNS))
def test_predict_rebuilds_the_method_and_scores_what_the_run_scored(method_runs, name, tmp_path):
    import json

    from dtvg_dist.predict import main

    torch.set_num_threads(1)
    run = method_runs[name]
    cfg = run_config(run)
    rows = load_splits(get_task(TARGET), OmegaConf.to_container(cfg.data, resolve=True),
                       seed=cfg.seed)["test"]
    source = tmp_path / "test.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out.jsonl"
    assert main([str(run), "--input", str(source), "--output", str(out)]) == 0
    got = jsonl(out)
    assert len(got) == len(rows)
    accuracy = 100 * sum(p["label"] == r["label"] for p, r in zip(got, rows, strict=True)) / len(rows)
    assert accuracy == pytest.approx(results(run)["test"]["accuracy"])
    # What predict rebuilt from: the trainable tensors plus what the method needs.
    saved = prompt_tensors(run)
    if name == "t5-attempt":
        assert saved["source_prompts"].shape == (2, 8, 32)
        assert torch.equal(saved["soft_prompt"], saved["target_prompt"])
    else:
        assert saved["input_update.lora_a"].shape == (64, 2)
        assert saved["soft_prompt"].shape == (4, 32)


@pytest.mark.parametrize(("name", "says"), [
    ("t5-attempt", "PEFT has no adapter type for ATTEMPT"),
    ("llama-dept", "PEFT has no adapter type for DePT"),
])
def test_peft_export_is_refused_with_the_reason(method_runs, name, says, tmp_path, capsys):
    from dtvg_dist.export import main

    assert main([str(method_runs[name]), "--peft", str(tmp_path / "adapter")]) == 2
    err = capsys.readouterr().err
    assert says in err and "dtvg_dist.predict" in err
    assert not (tmp_path / "adapter").exists()


@pytest.mark.parametrize("name", list(RUNS))
def test_tensorboard_has_both_learning_rates_every_step(method_runs, name):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = method_runs[name]
    recipe, _ = RUNS[name]
    reader = EventAccumulator(str(run / recipe), size_guidance={"scalars": 0})
    reader.Reload()
    tags = set(reader.Tags()["scalars"])
    method = results(run)["method"]
    for group in GROUPS[name]:
        assert len(reader.Scalars(f"stage2/{method}/lr/{group}")) == 4
    assert len(reader.Scalars(f"stage2/{method}/loss")) == 4
    assert f"stage2/{method}/test/accuracy" in tags
    facts = results(run)
    # ATTEMPT: target prompt, W_down, W_up; the layer norm frozen as in the release
    assert facts["trainable_parameters"] == {"t5-attempt": 8 * 32 + 2 * 4 * 32,
                                             "llama-dept": 4 * 32 + 64 * 2 + 2 * 32}[name]
