"""MPT under DDP and ZeRO-3: source training (distillation from the bank's
stage-1 prompts) and target adaptation on 2 CPU processes equal 1 process.

Each run gets its own copy of the reference bank's task entries, so the
shared-prompt entry is trained by that run (not read from another's).
Tolerances as the other distributed tests: losses 1e-4, tensors 1e-5.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from dist_runs import check, launch_cmd, losses, prompt, results, run, single_cmd

from dtvg_dist.store.bank import load_mpt_shared

pytestmark = pytest.mark.distributed

LOSS_ATOL = 1e-4
PROMPT_ATOL = 1e-5
MPT_ARGS = ("method=mpt", "mpt.source_max_steps=4", "optim.max_steps=4", "eval.every_steps=2",
            "mpt.lam=0.5", "mpt.temperature=2.0")


def _bank_copy(ref_bank: Path, dest: Path) -> Path:
    dest.mkdir(parents=True)
    for entry in ref_bank.glob("*.safetensors"):
        shutil.copy(entry, dest / entry.name)
    return dest


def _mpt_run(ref, root: Path, launcher: str | None) -> tuple[Path, Path]:
    bank, out = _bank_copy(ref.bank, root / "bank"), root / "run"
    args = [f"recipe={ref.recipe}", "stage=2", f"bank_dir={bank}", f"output_dir={out}", *MPT_ARGS]
    cmd = single_cmd(*args) if launcher is None else launch_cmd(launcher, *args)
    log = root / "log.txt"
    check(run(cmd, log), log)
    return bank, out


def _assert_same(ref_root: tuple[Path, Path], got_root: tuple[Path, Path]) -> None:
    (ref_bank, ref_out), (got_bank, got_out) = ref_root, got_root
    for sub in ("mpt-source", "."):
        a, b = losses(ref_out / sub), losses(got_out / sub)
        assert len(a) == len(b) == 4
        worst = max(abs(x - y) for x, y in zip(a, b, strict=True))
        assert worst <= LOSS_ATOL, f"{sub}: losses differ by {worst}: {a} vs {b}"
    (ref_entry,), (got_entry,) = list((ref_bank / "mpt").glob("*.safetensors")), list((got_bank / "mpt").glob("*.safetensors"))
    assert ref_entry.name == got_entry.name
    e_ref, e_got = load_mpt_shared(ref_entry), load_mpt_shared(got_entry)
    for key in ("shared", "u", "v"):
        torch.testing.assert_close(getattr(e_got, key), getattr(e_ref, key), atol=PROMPT_ATOL, rtol=0)
    assert not torch.equal(e_ref.u, torch.ones_like(e_ref.u))  # source training moved u
    p_ref, p_got = prompt(ref_out), prompt(got_out)
    assert sorted(p_ref) == sorted(p_got) == ["shared", "soft_prompt", "u", "v"]
    for key, value in p_ref.items():
        torch.testing.assert_close(p_got[key], value, atol=PROMPT_ATOL, rtol=0, msg=key)


@pytest.fixture(scope="module")
def mpt_single(references, tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    return {recipe: _mpt_run(references[recipe], tmp_path_factory.mktemp(f"mpt1-{recipe}"), None)
            for recipe in ("tiny-llama", "tiny-t5")}


def test_mpt_ddp_two_processes_match_one(references, mpt_single, tmp_path):
    got = _mpt_run(references["tiny-llama"], tmp_path, "cpu_ddp_2proc.yaml")
    _assert_same(mpt_single["tiny-llama"], got)
    assert results(got[1])["world_size"] == 2


def test_mpt_zero3_two_processes_match_one(references, mpt_single, tmp_path):
    got = _mpt_run(references["tiny-t5"], tmp_path, "cpu_zero3_2proc.yaml")
    _assert_same(mpt_single["tiny-t5"], got)
    facts = results(got[1])
    assert facts["world_size"] == 2 and facts["zero_stage"] == 3
    assert facts["prompt_replica_max_abs_diff"] == 0.0
