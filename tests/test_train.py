"""The training CLI end to end on the tiny offline recipes: the output
contract, loss going down, resume after SIGKILL, NaN handling, and the
errors a user sees."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import warm_python
from background import BACKGROUND
from cli_runs import check_ok, finish, jsonl, losses, prompt_tensors, results, run_cli, start_cli

from dtvg_dist.store.bank import entry_path, load_bank, load_entry, save_entry
from dtvg_dist.train import main

SOURCES = ["syn_same", "syn_same_b", "syn_flip", "syn_topic"]
TARGET = "syn_target"


def _full_runs(folder: Callable[[str], Path], at_once: bool) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    """stage=all (stage 1 for five tasks, then DTVG) of each tiny recipe, as a user
    runs it (a fresh interpreter, one core each); side by side when `at_once`."""
    procs, done = {}, {}
    for recipe in ("tiny-t5", "tiny-llama"):
        out = folder(recipe)
        procs[recipe] = (out, start_cli(f"recipe={recipe}", f"output_dir={out}", f"bank_dir={out / 'bank'}",
                                        env={"OMP_NUM_THREADS": "1"}, warm=False))
        if not at_once:
            done[recipe] = (out, check_ok(finish(procs.pop(recipe)[1])))
    return {**done, **{recipe: (out, check_ok(finish(proc))) for recipe, (out, proc) in procs.items()}}


# one run at a time in the background (tests/background.py), else both at once here
BACKGROUND.offer("full_runs", lambda: _full_runs(BACKGROUND.folder, at_once=False))


@pytest.fixture(scope="session")
def full_runs(tmp_path_factory) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    return BACKGROUND.result("full_runs", lambda: _full_runs(tmp_path_factory.mktemp, at_once=True))


@pytest.fixture(params=["tiny-t5", "tiny-llama"])
def full_run(request, full_runs):
    out, proc = full_runs[request.param]
    return request.param, out, proc


@pytest.fixture(scope="session")
def t5_bank(full_runs):
    """The bank stage 1 of the tiny-t5 full run wrote (stage 2 only reads it)."""
    return full_runs["tiny-t5"][0] / "bank"


def train(*args: str) -> int:
    """The training command in this process: what a subprocess would add (a fresh
    interpreter) is covered by the full runs, and costs seconds per run."""
    return main([*args, "logging.progress_bar=false"])


def _copy_bank(bank: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "bank"
    shutil.copytree(bank, dst)
    return dst


def test_output_contract(full_run):
    recipe, out, proc = full_run
    for name in ("config.yaml", "metrics.jsonl", "grouping.jsonl", "results.json", "prompt.safetensors"):
        assert (out / name).is_file(), name
    res = results(out)
    assert res["method"] == "dtvg" and res["task"] == TARGET and res["steps"] == 12
    assert res["world_size"] == 1 and res["zero_stage"] == 0
    assert res["attn_implementation"] in ("sdpa", "eager")
    assert res["primary_metric"] == "accuracy" and "accuracy" in res["test"]
    # best validation in results.json is the best of the logged evaluations
    evals = [r for r in jsonl(out / "metrics.jsonl") if r.get("split") == "validation"]
    assert [r["step"] for r in evals] == [6, 12]
    assert res["best_validation"]["accuracy"] == max(r["accuracy"] for r in evals)
    # one grouping entry per step, naming only known sources, sims for every source
    grouping = jsonl(out / "grouping.jsonl")
    assert [g["step"] for g in grouping] == list(range(1, 13))
    for row in grouping:
        assert set(row["group"]) <= set(SOURCES) and set(row["sims"]) == set(SOURCES)
        # the chosen sources never include one with a negative similarity (greedy)
        assert all(row["sims"][name] >= 0 for name in row["group"])
    tensors = prompt_tensors(out)
    assert set(tensors) >= {"target_tpv", "alpha_t", "alpha_s", "soft_prompt"}
    assert tensors["alpha_s"].shape == (4, 8) and tensors["soft_prompt"].dtype == torch.float32
    # stage 1 wrote one run and one bank entry per task, all from one P_init
    bank = load_bank(out / "bank", [*SOURCES, TARGET])
    assert len({entry.p_init_sha256 for entry in bank.values()}) == 1
    for task in [*SOURCES, TARGET]:
        assert (out / "stage1" / task / "results.json").is_file()
        assert bank[task].steps == 12
    assert "PT (stage 1)" in proc.stdout and "DTVG (stage 2)" in proc.stdout


def test_loss_decreases(full_run):
    _, out, _ = full_run
    for task in SOURCES:
        trace = losses(out / "stage1" / task)
        assert len(trace) == 12
        assert sum(trace[-3:]) / 3 < sum(trace[:3]) / 3, (task, trace)


def test_real_model_pt_and_dtvg_losses_fall(smollm2_run):
    """SmolLM2-135M (tests/real_model.py), `stage=all method=dtvg`, 8 steps a
    stage, every step logged: each stage-1 PT prompt and the stage-2 DTVG prompt
    learn (measured: stage 1 from about 10 to under 0.6, DTVG 2.6 to 0.33)."""
    traces = {task: losses(smollm2_run / "stage1" / task) for task in ("syn_target", "syn_same", "syn_flip")}
    traces["dtvg"] = losses(smollm2_run)
    for name, trace in traces.items():
        assert len(trace) == 8, name
        assert sum(trace[-3:]) / 3 < 0.5 * sum(trace[:3]) / 3, (name, trace)
    assert results(smollm2_run)["method"] == "dtvg"


def test_a_warm_start_trains_as_a_fresh_interpreter(full_runs, tmp_path):
    """tests/warm_python.py forks the training command from a server that has
    imported torch, transformers and datasets; the other CLI tests rely on it
    giving what a fresh interpreter gives: the same run, bit for bit, with the
    same thread count (OMP_NUM_THREADS=1 applied in the child)."""
    cold_out, cold = full_runs["tiny-t5"]
    out = tmp_path / "warm"
    warm = start_cli("recipe=tiny-t5", f"output_dir={out}", f"bank_dir={out / 'bank'}",
                     env={"OMP_NUM_THREADS": "1"})
    assert isinstance(warm, warm_python.WarmProcess)
    check_ok(finish(warm))
    assert losses(out) == losses(cold_out)
    assert jsonl(out / "grouping.jsonl") == jsonl(cold_out / "grouping.jsonl")
    a, b = prompt_tensors(out), prompt_tensors(cold_out)
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    for key in ("test", "best_validation", "threads", "omp_num_threads_env", "steps", "trainable_parameters"):
        assert results(out)[key] == results(cold_out)[key], key


def test_stage2_from_bank_never_resamples_p_init(t5_bank, tmp_path):
    bank = _copy_bank(t5_bank, tmp_path)
    before = load_entry(entry_path(bank, "syn_same")).p_init_sha256
    entry_path(bank, TARGET).unlink()
    assert train("recipe=tiny-t5", "stage=1", "prompt.init_seed=99",
                 f"output_dir={tmp_path / 'run'}", f"bank_dir={bank}") == 0
    assert load_entry(entry_path(bank, TARGET)).p_init_sha256 == before


def test_resume_after_sigkill_matches_uninterrupted(t5_bank, tmp_path):
    bank = _copy_bank(t5_bank, tmp_path)
    common = ["recipe=tiny-t5", "stage=2", f"bank_dir={bank}", "optim.max_steps=9", "eval.every_steps=3"]
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    # the uninterrupted and the killed run side by side (independent folders)
    whole_proc = start_cli(*common, f"output_dir={whole}")
    killed = finish(start_cli(*common, f"output_dir={broken}",
                              env={"DTVG_FAULT_STEP": "8", "DTVG_FAULT_KIND": "sigkill"}))
    check_ok(finish(whole_proc))
    assert killed.returncode == -9
    assert not (broken / "results.json").exists()
    assert (broken / "checkpoint" / "state.json").is_file()
    check_ok(run_cli(*common, f"output_dir={broken}", "resume=true"))
    a, b = prompt_tensors(whole), prompt_tensors(broken)
    assert set(a) == set(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    ra, rb = results(whole), results(broken)
    assert ra["best_validation"] == rb["best_validation"] and ra["test"] == rb["test"]
    assert losses(whole) == losses(broken)
    assert jsonl(whole / "grouping.jsonl") == jsonl(broken / "grouping.jsonl")


def test_nan_loss_stops_naming_the_step_and_keeps_checkpoint(t5_bank, tmp_path):
    bank = _copy_bank(t5_bank, tmp_path)
    out = tmp_path / "nan"
    proc = run_cli("recipe=tiny-t5", "stage=2", f"bank_dir={bank}", f"output_dir={out}",
                   "optim.max_steps=9", "eval.every_steps=3",
                   env={"DTVG_FAULT_STEP": "5", "DTVG_FAULT_KIND": "nan"})
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "loss is nan at step 5" in proc.stderr
    from dtvg_dist.store.checkpoint import load_checkpoint
    from dtvg_dist.store.checkpoint_slots import find_checkpoint

    ckpt = load_checkpoint(find_checkpoint(out))
    assert ckpt.state.step == 3
    assert all(torch.isfinite(t.float()).all() for t in ckpt.trainable.values())


def test_spot_picks_the_planted_most_similar_source(t5_bank, tmp_path):
    bank = _copy_bank(t5_bank, tmp_path)
    target = load_entry(entry_path(bank, TARGET))
    planted = load_entry(entry_path(bank, "syn_topic"))
    # The target's own TPV: SPoT's cosine of mean-pooled prompts (P_init + TPV) is
    # 1, its maximum, only for this one (a scaled TPV moves away from it along
    # P_init's offset, and a source of the target's rule may then come closer).
    save_entry(bank, "syn_topic", target.tpv.clone(), planted.p_init, backbone=planted.backbone,
               init_seed=planted.init_seed, steps=planted.steps, best_score=planted.best_score)
    out = tmp_path / "spot"
    assert train("recipe=tiny-t5", "stage=2", "method=spot", f"bank_dir={bank}",
                 f"output_dir={out}", "optim.max_steps=2", "eval.every_steps=2") == 0
    assert results(out)["spot_source"] == "syn_topic"


def test_stage2_refuses_a_bank_of_another_backbone(t5_bank, tmp_path, capsys):
    bank = _copy_bank(t5_bank, tmp_path)
    assert train("recipe=tiny-t5", "stage=2", "backbone.init_seed=1", f"bank_dir={bank}",
                 f"output_dir={tmp_path / 'other'}") == 2
    err = capsys.readouterr().err
    assert "bank entry" in err and "backbone is 'config:t5-" in err
    assert "but this run uses 'config:t5-" in err


def test_unknown_key_names_the_closest(capsys):
    assert main(["recipe=tiny-t5", "optim.lrr=0.1"]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'optim.lrr'" in err and "'optim.lr'" in err


def test_unknown_recipe_and_bad_value(capsys):
    assert main(["recipe=tiny-t55"]) == 2
    err = capsys.readouterr().err
    assert "recipe 'tiny-t55' not found" in err and "tiny-t5" in err
    assert main(["recipe=tiny-t5", "grouping.rule=best"]) == 2
    assert "grouping.rule='best' is not one of" in capsys.readouterr().err
    assert main(["recipe=tiny-t5", "stage=3"]) == 2
    assert "stage='3'" in capsys.readouterr().err


def test_missing_local_data_file_is_named(tmp_path, capsys):
    assert train("recipe=tiny-t5", "target_task=rte", "method=pt", "stage=1", "source_tasks=[]",
                 f"data.local_dir={tmp_path / 'nowhere'}", f"output_dir={tmp_path / 'o'}",
                 f"bank_dir={tmp_path / 'b'}") == 2
    err = capsys.readouterr().err
    assert "rte" in err and "nowhere" in err


def test_help_lists_recipes(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("tiny-t5", "tiny-llama", "demo"):
        assert name in out


def test_rank_classification_scores_only_label_words(t5_bank, tmp_path):
    bank = _copy_bank(t5_bank, tmp_path)
    out = tmp_path / "rank"
    assert train("recipe=tiny-t5", "stage=2", "method=pt", f"bank_dir={bank}", f"output_dir={out}",
                 "optim.max_steps=2", "eval.every_steps=2", "eval.rank_classification=true") == 0
    res = results(out)
    assert res["test"]["invalid"] == 0 and res["best_validation"]["invalid"] == 0
    assert res["test"]["num_examples"] == res["test_examples"] == 16


@pytest.mark.slow
def test_uncached_hub_backbone_offline_is_one_line_error(tmp_path) -> None:
    """The issue's reproduction: HF_HUB_OFFLINE=1 python -m dtvg_dist.train recipe=t5-base-dtvg-rte stage=2."""
    proc = run_cli("recipe=t5-base-dtvg-rte", "stage=2", f"output_dir={tmp_path / 'out'}",
                   env={"HF_HUB_CACHE": str(tmp_path / "empty-cache")})
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    error = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "backbone.name_or_path='t5-base'" in error[0]
    assert "huggingface-cli download t5-base --local-dir DIR" in error[0]
