"""Several processes on CPU (gloo): two "nodes" on localhost, a rank that
fails, and 8-bit (with gradient checkpointing under DDP). Every method x
backbone x launch cell is in test_matrix.py.

Every multi-process run trains stage 2 against the bank of the session's
single-process reference (conftest.py) and must reproduce its per-step
losses, prompt tensors and grouping.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
import torch
from dist_runs import (
    check,
    evals,
    free_port,
    groups,
    jsonl,
    launch_cmd,
    losses,
    prompt,
    results,
    run,
    single_cmd,
    start,
    tail,
    wait,
)

pytestmark = pytest.mark.distributed

LOSS_ATOL = 1e-4
PROMPT_ATOL = 1e-5


def stage2_args(ref, out: Path) -> list[str]:
    return [f"recipe={ref.recipe}", "stage=2", f"bank_dir={ref.bank}", f"output_dir={out}"]


def assert_same_training(ref_dir: Path, run_dir: Path) -> None:
    """Per-step losses, final prompt tensors, groups and scores equal the reference."""
    ref_losses, got_losses = losses(ref_dir), losses(run_dir)
    assert len(got_losses) == len(ref_losses) == 6
    worst = max(abs(a - b) for a, b in zip(ref_losses, got_losses, strict=True))
    assert worst <= LOSS_ATOL, f"losses differ by {worst}: {ref_losses} vs {got_losses}"
    ref_prompt, got_prompt = prompt(ref_dir), prompt(run_dir)
    assert sorted(ref_prompt) == sorted(got_prompt)
    for key, value in ref_prompt.items():
        torch.testing.assert_close(got_prompt[key], value, atol=PROMPT_ATOL, rtol=0, msg=key)
    assert groups(run_dir) == groups(ref_dir)
    ref_rows, got_rows = jsonl(ref_dir / "grouping.jsonl"), jsonl(run_dir / "grouping.jsonl")
    for ref_row, got_row in zip(ref_rows, got_rows, strict=True):
        for name, sim in ref_row["sims"].items():
            assert got_row["sims"][name] == pytest.approx(sim, abs=1e-4)
    # Uneven shards (15 examples on 2 ranks, batches of 4): every example is
    # scored exactly once, and the scores are the single process's.
    ref_evals, got_evals = evals(ref_dir), evals(run_dir)
    assert [r["num_examples"] for r in got_evals] == [15] * len(ref_evals)
    assert got_evals == ref_evals
    # The gradient norm before clipping is the whole gradient's (under ZeRO-3
    # DeepSpeed's global norm over the partitions), as one process has it.
    ref_norms = [r["grad_norm"] for r in jsonl(ref_dir / "metrics.jsonl") if "grad_norm" in r]
    got_norms = [r["grad_norm"] for r in jsonl(run_dir / "metrics.jsonl") if "grad_norm" in r]
    assert len(got_norms) == len(ref_norms) > 0
    assert got_norms == pytest.approx(ref_norms, rel=1e-3, abs=1e-6)


def assert_sharded(run_dir: Path, world: int, stage: int) -> dict:
    facts = results(run_dir)
    assert facts["world_size"] == world
    assert facts["zero_stage"] == stage
    assert facts["prompt_replica_max_abs_diff"] == 0.0  # identical prompt on every rank
    total, per_rank = facts["backbone_param_elements"], facts["backbone_param_elements_per_rank"]
    assert len(per_rank) == world
    if stage == 3:  # each rank holds about 1/world of the backbone
        for held in per_rank:
            assert 0.95 <= held / (total / world) <= 1.05, (held, total)
    else:
        assert per_rank == [total] * world
    return facts


def test_two_nodes_on_localhost(references, tmp_path):
    """Two launchers, as on two machines: num_machines=2, machine ranks 0 and
    1, main process address 127.0.0.1, one process each."""
    ref = references["tiny-llama"]
    out = tmp_path / "run"
    port = free_port()
    procs = []
    for machine_rank in (0, 1):
        log = tmp_path / f"node{machine_rank}.txt"
        launcher = [
            "--num_machines", "2", "--num_processes", "2", "--machine_rank", str(machine_rank),
            "--main_process_ip", "127.0.0.1",
        ]
        cmd = launch_cmd("cpu_zero3_2proc.yaml", *stage2_args(ref, out), launcher_args=launcher,
                         port=port)
        procs.append((start(cmd, log), log))
    for proc, log in procs:
        check(wait(proc, log), log)
    assert_same_training(ref.out, out)
    assert_sharded(out, world=2, stage=3)


def test_failing_rank_ends_job_and_resume_completes(references, tmp_path):
    """Rank 1 raises before step 4 (the checkpoint of step 3 is on disk): the
    whole job exits non-zero within 60 s of it, the checkpoint is intact, and
    a resumed ZeRO-3 run finishes with the uninterrupted run's losses."""
    from dtvg_dist.store.checkpoint import load_checkpoint
    from dtvg_dist.store.checkpoint_slots import find_checkpoint

    ref = references["tiny-llama"]
    out = tmp_path / "run"
    log = tmp_path / "fault.txt"
    proc = start(launch_cmd("cpu_zero3_2proc.yaml", *stage2_args(ref, out)), log,
                 DTVG_FAULT_STEP="4", DTVG_FAULT_RANK="1", DTVG_FAULT_KIND="raise")
    code = wait(proc, log, timeout=300)
    ended = time.time()
    assert code != 0, tail(log)
    assert "injected fault at step 4 on rank 1" in log.read_text()
    ckpt = find_checkpoint(out)
    assert ckpt is not None
    assert ended - (ckpt / "state.json").stat().st_mtime < 60, "the job outlived its failed rank"
    assert load_checkpoint(ckpt).state.step == 3  # whole and readable

    log2 = tmp_path / "resume.txt"
    check(run(launch_cmd("cpu_zero3_2proc.yaml", *stage2_args(ref, out), "resume=true"), log2), log2)
    assert "resumed from" in log2.read_text()
    assert_same_training(ref.out, out)


# --------------------------------------------------------------------- 8-bit
@pytest.fixture(scope="module")
def llama_checkpoint(tmp_path_factory) -> Path:
    """The tiny-llama recipe's random-weight model saved as a checkpoint
    (8-bit loading needs one), with the synthetic tokenizer."""
    from omegaconf import OmegaConf

    from dtvg_dist.model.backbone import BackboneSettings, load_backbone
    from dtvg_dist.model.synthetic import ensure_tokenizer
    from dtvg_dist.orchestration.config import load_recipe

    root = tmp_path_factory.mktemp("ckpt")
    cfg = load_recipe("tiny-llama")
    settings = BackboneSettings(**OmegaConf.to_container(cfg.backbone, resolve=True))
    settings.tokenizer = str(ensure_tokenizer(root / "tokenizer"))
    backbone = load_backbone(settings, device="cpu")
    path = root / "tiny-llama-ckpt"
    backbone.model.save_pretrained(str(path))
    backbone.tokenizer.save_pretrained(str(path))
    return path


def checkpoint_args(path: Path) -> list[str]:
    return [
        "recipe=tiny-llama", "backbone.config=null", f"backbone.name_or_path={path}",
        f"backbone.tokenizer={path}", "backbone.load_in_8bit=true",
    ]


@pytest.fixture(scope="module")
def bank_8bit(references, llama_checkpoint, tmp_path_factory) -> Path:
    """The reference bank re-keyed to the checkpoint's backbone name (same
    weights as the reference's config-built model, so its TPVs are valid)."""
    from dtvg_dist.store.bank import load_entry, save_entry

    bank = tmp_path_factory.mktemp("bank8")
    for entry_file in sorted(references["tiny-llama"].bank.glob("*.safetensors")):
        entry = load_entry(entry_file)
        save_entry(bank, entry.task, entry.tpv, entry.p_init, backbone=llama_checkpoint.name,
                   init_seed=entry.init_seed, steps=entry.steps, best_score=entry.best_score)
    return bank


def args_8bit(checkpoint: Path, bank: Path, out: Path) -> list[str]:
    # The whole training set every step: the objective is fixed, so the loss
    # must go down.
    return [*checkpoint_args(checkpoint), "stage=2", f"bank_dir={bank}", f"output_dir={out}",
            "optim.batch_size=48", "optim.warmup_steps=0"]


# The other prompt methods on the 8-bit backbone, at the sizes their
# distributed tests use (tests/distributed/test_matrix.py).
METHOD_ARGS_8BIT = {
    "attempt": ["method=attempt", "attempt.attention_dim=4"],
    "dept": ["method=dept", "dept.prompt_length=4", "dept.rank=2", "dept.max_length=64"],
    # MPT adapts P* and the rank-one part multiplicatively: at the recipe's lr its
    # loss rises over these few steps, so it trains at a lower one.
    "mpt": ["method=mpt", "mpt.source_max_steps=4", "optim.lr=0.01"],
}


@pytest.fixture(scope="module")
def runs_8bit(llama_checkpoint, bank_8bit, tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """One-process 8-bit runs, DTVG (the recipe's method) and each of
    METHOD_ARGS_8BIT, side by side (one thread each, own folders; MPT writes
    its shared entry into a bank of its own)."""
    root = tmp_path_factory.mktemp("run8")
    procs = {}
    for name in ("dtvg", *sorted(METHOD_ARGS_8BIT)):
        bank = bank_8bit
        if name == "mpt":
            bank = root / "bank-mpt"
            shutil.copytree(bank_8bit, bank)
        out, log = root / name, root / f"{name}.txt"
        procs[name] = (out, log, start(single_cmd(*args_8bit(llama_checkpoint, bank, out),
                                                  *METHOD_ARGS_8BIT.get(name, [])), log))
    for _, log, proc in procs.values():
        check(wait(proc, log, timeout=600), log)
    return {name: (out, log) for name, (out, log, _) in procs.items()}


@pytest.fixture(scope="module")
def run_8bit(runs_8bit) -> tuple[Path, Path]:
    return runs_8bit["dtvg"]


def test_8bit_stage2_trains(run_8bit):
    out, log = run_8bit
    text = log.read_text()
    assert "8bit=True" in text and "MatMul8bitLt" in text  # bitsandbytes really ran
    trained = losses(out)
    assert trained[-1] < trained[0] - 5e-3, trained
    assert results(out)["world_size"] == 1


@pytest.mark.parametrize("method", sorted(METHOD_ARGS_8BIT))
def test_8bit_other_methods_train(method, runs_8bit):
    out, log = runs_8bit[method]
    assert "MatMul8bitLt" in log.read_text()  # bitsandbytes really ran under this method
    trained = losses(out)
    assert trained[-1] < trained[0] - 5e-3, trained
    assert results(out)["method"] == method


def test_8bit_ddp_with_checkpointing_matches_one_process(run_8bit, llama_checkpoint, bank_8bit,
                                                         tmp_path):
    """8-bit under DDP with gradient checkpointing equals one process without it."""
    ref_out, _ = run_8bit
    out, log = tmp_path / "run", tmp_path / "log.txt"
    args = [*args_8bit(llama_checkpoint, bank_8bit, out), "backbone.gradient_checkpointing=true"]
    check(run(launch_cmd("cpu_ddp_2proc.yaml", *args), log), log)
    text = log.read_text()
    assert "MatMul8bitLt" in text and "8bit=True grad_ckpt=True" in text, tail(log)
    ref_losses, got_losses = losses(ref_out), losses(out)
    assert max(abs(a - b) for a, b in zip(ref_losses, got_losses, strict=True)) <= LOSS_ATOL
    for key, value in prompt(ref_out).items():
        torch.testing.assert_close(prompt(out)[key], value, atol=PROMPT_ATOL, rtol=0, msg=key)
    assert_sharded(out, world=2, stage=0)


def test_8bit_refused_under_zero3(llama_checkpoint, tmp_path):
    out = tmp_path / "run"
    log = tmp_path / "log.txt"
    code = run(launch_cmd("cpu_zero3_2proc.yaml", *checkpoint_args(llama_checkpoint), "stage=2",
                          f"output_dir={out}", f"bank_dir={tmp_path / 'bank'}"), log)
    text = log.read_text()
    assert code != 0
    assert "backbone.load_in_8bit=true is refused under DeepSpeed ZeRO-3" in text
    assert "not supported by ZeRO-3's zero.Init" in text
    assert "single_gpu_8bit.yaml" in text and "multi_gpu_zero3.yaml" in text
    assert "dtvg_dist.model.backbone: backbone" not in text  # refused before anything loaded
    assert not os.path.exists(out / "results.json")
