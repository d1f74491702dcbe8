"""MPT through the training CLI on tiny T5: source training once into the
bank (reused by later targets), resume after SIGKILL bit-exact in both the
source training and the target adaptation, a corrupt shared entry refused,
predict on the trained run, TensorBoard events of the source training.

Marked slow: eight tiny CLI runs, about two minutes on two cores."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from background import BACKGROUND
from cli_runs import check_ok, finish, jsonl, losses, prompt_tensors, results, run_cli, start_cli
from omegaconf import OmegaConf
from trained_prompts import run_config

from dtvg_dist.data import load_splits
from dtvg_dist.predict import main as predict_main
from dtvg_dist.store.bank import load_mpt_shared
from dtvg_dist.tasks import get_task
from dtvg_dist.train import main as train_main

pytestmark = pytest.mark.slow

SOURCES = "source_tasks=[syn_same,syn_flip]"
COMMON = ("recipe=tiny-t5", SOURCES, "method=mpt", "mpt.source_max_steps=6", "mpt.lam=0.5",
          "mpt.temperature=2.0", "eval.every_steps=3", "optim.max_steps=6", "logging.progress_bar=false")


def _teacher_bank(out: Path) -> Path:
    check_ok(run_cli("recipe=tiny-t5", SOURCES, "stage=1", "stage1.max_steps=3",
                     f"output_dir={out}", f"bank_dir={out / 'bank'}"))
    return out / "bank"


def _source_args(root: Path, teacher_bank: Path) -> tuple[str, ...]:
    """stage=pre into `root` (run/ and its own copy of the teachers' bank)."""
    shutil.copytree(teacher_bank, root / "bank")
    return (*COMMON, "stage=pre", f"bank_dir={root / 'bank'}", f"output_dir={root / 'run'}")


def _source_runs(teacher_bank: Path, folder: Callable[[str], Path], at_once: bool) -> dict[str, Path]:
    """stage=pre uninterrupted and the same run killed by SIGKILL at step 5
    (side by side when `at_once`: independent folders): {"whole": root,
    "killed": root, "killed_exit": code}; each root holds bank/ and run/."""
    whole, broken = folder("mpt-pre"), folder("mpt-pre-killed")
    whole_proc = start_cli(*_source_args(whole, teacher_bank), "logging.trackers=[tensorboard]")
    whole_done = None if at_once else check_ok(finish(whole_proc))
    killed = finish(start_cli(*_source_args(broken, teacher_bank),
                              env={"DTVG_FAULT_STEP": "5", "DTVG_FAULT_KIND": "sigkill"}))
    if whole_done is None:
        check_ok(finish(whole_proc))
    return {"whole": whole, "killed": broken, "killed_exit": killed.returncode}


# in the background (tests/background.py): the teachers, then one run at a time
BACKGROUND.offer("teacher_bank", lambda: _teacher_bank(BACKGROUND.folder("mpt-teachers")))
BACKGROUND.offer("source_runs", lambda: _source_runs(BACKGROUND.done("teacher_bank"), BACKGROUND.folder,
                                                     at_once=False), after=("teacher_bank",))


@pytest.fixture(scope="module")
def teacher_bank(tmp_path_factory) -> Path:
    return BACKGROUND.result("teacher_bank", lambda: _teacher_bank(tmp_path_factory.mktemp("mpt-teachers")))


@pytest.fixture(scope="module")
def source_runs(teacher_bank, tmp_path_factory) -> dict[str, Path]:
    return BACKGROUND.result("source_runs", lambda: _source_runs(teacher_bank, tmp_path_factory.mktemp,
                                                                 at_once=True))


@pytest.fixture(scope="module")
def source_run(source_runs) -> tuple[Path, Path]:
    """stage=pre uninterrupted: (bank with the shared entry, output dir)."""
    return source_runs["whole"] / "bank", source_runs["whole"] / "run"


def _shared(bank: Path):
    (path,) = list((bank / "mpt").glob("*.safetensors"))
    return load_mpt_shared(path)


def test_source_training_writes_a_verified_shared_entry(source_run):
    bank, out = source_run
    entry = _shared(bank)
    assert entry.sources == ["syn_same", "syn_flip"] and entry.steps == 6
    assert entry.settings["lam"] == 0.5 and entry.settings["temperature"] == 2.0
    assert entry.u.shape == (2, 8) and entry.v.shape == (2, 32)
    assert not torch.equal(entry.u, torch.ones_like(entry.u))  # trained
    assert len(losses(out / "mpt-source")) == 6
    assert not (out / "results.json").exists()  # stage=pre trains no target
    assert list((out / "tiny-t5").rglob("events.out.tfevents.*")), "no TensorBoard events"


def test_source_training_resume_after_sigkill_is_bit_exact(source_runs, source_run):
    killed = source_runs["killed"]
    bank = killed / "bank"
    assert source_runs["killed_exit"] == -9
    assert not (bank / "mpt").exists()  # nothing half-written
    check_ok(run_cli(*COMMON, "stage=pre", f"bank_dir={bank}", f"output_dir={killed / 'run'}", "resume=true"))
    a, b = _shared(source_run[0]), _shared(bank)
    for key in ("shared", "u", "v"):
        assert torch.equal(getattr(a, key), getattr(b, key)), key
    assert losses(source_run[1] / "mpt-source") == losses(killed / "run" / "mpt-source")


def test_target_reuses_the_entry_and_resumes_bit_exact(source_run, tmp_path):
    bank = tmp_path / "bank"
    shutil.copytree(source_run[0], bank)
    args = (*COMMON, "stage=2", f"bank_dir={bank}")
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    # the uninterrupted and the killed run side by side (independent folders)
    whole_proc = start_cli(*args, f"output_dir={whole}")
    killed = finish(start_cli(*args, f"output_dir={broken}",
                              env={"DTVG_FAULT_STEP": "5", "DTVG_FAULT_KIND": "sigkill"}))
    proc = check_ok(finish(whole_proc))
    assert "MPT: shared prompt from" in proc.stderr and not (whole / "mpt-source").exists()
    res = results(whole)
    assert res["method"] == "mpt" and res["trainable_parameters"] == 8 * 32 + 8 + 32
    assert res["mpt_shared"].endswith(".safetensors") and res["source_tasks"] == ["syn_same", "syn_flip"]
    assert killed.returncode == -9
    check_ok(run_cli(*args, f"output_dir={broken}", "resume=true"))
    a, b = prompt_tensors(whole), prompt_tensors(broken)
    assert set(a) == set(b) == {"shared", "u", "v", "soft_prompt"}
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert losses(whole) == losses(broken)
    assert results(whole)["test"] == results(broken)["test"]
    # predict rebuilds P* o (u v^T) and scores the test rows as the run did
    cfg = run_config(whole)
    rows = load_splits(get_task("syn_target"), OmegaConf.to_container(cfg.data, resolve=True),
                       seed=cfg.seed)["test"]
    source = tmp_path / "rows.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    torch.set_num_threads(1)
    assert predict_main([str(whole), "--input", str(source), "--output", str(tmp_path / "p.jsonl")]) == 0
    got = jsonl(tmp_path / "p.jsonl")
    accuracy = 100 * sum(p["label"] == r["label"] for p, r in zip(got, rows, strict=True)) / len(rows)
    assert accuracy == pytest.approx(res["test"]["accuracy"])


def test_corrupt_shared_entry_is_refused(source_run, tmp_path, capsys):
    bank = tmp_path / "bank"
    shutil.copytree(source_run[0], bank)
    (path,) = list((bank / "mpt").glob("*.safetensors"))
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    # in this process: the refusal comes before any training, a subprocess adds nothing
    code = train_main([*COMMON, "stage=2", f"bank_dir={bank}", f"output_dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err
    assert code == 2, err[-3000:]
    assert "does not match its stored sha256" in err
