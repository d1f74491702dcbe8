"""The method x backbone x launch matrix, every cell listed in CELLS.

Every method on both tiny backbone families, evaluated by generation and by
rank classification, under 2-process DDP and 2-process DeepSpeed ZeRO-3
(CPU, gloo), equals the same run on one process: per-step losses, the
trained tensors, the grouping (DTVG) and every evaluation row. Gradient
checkpointing (non-reentrant, the transformers default) under both launches
equals one process without it.

Cheap by construction: the 28 one-process references run in two driver
processes, and each launch runs all its cells one after another in ONE
`accelerate launch` (tests/distributed/matrix_driver.py); the four drivers
run at once.
Stage 2 trains against the bank of the session's references (conftest.py);
each MPT cell gets its own copy of it, so its shared-prompt entry is
trained by that run, not read from another's.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from background import BACKGROUND
from dist_runs import (
    COMMON,
    CONFIGS,
    check,
    evals,
    free_port,
    groups,
    jsonl,
    losses,
    prompt,
    results,
    run,
    start,
    tail,
    wait,
)

from dtvg_dist.model.methods import method_names
from dtvg_dist.store.bank import load_mpt_shared

pytestmark = pytest.mark.distributed

DRIVER = Path(__file__).with_name("matrix_driver.py")
METHODS = ("pt", "spot", "tpv", "dtvg", "attempt", "mpt", "dept")
BACKBONES = ("tiny-t5", "tiny-llama")
EVALS = ("generate", "rank")
LAUNCHES = {"ddp": "cpu_ddp_2proc.yaml", "zero3": "cpu_zero3_2proc.yaml"}

# 4 steps, checkpoint and validation at step 2 and 4; 15 evaluation examples
# in batches of 4, so the 2-rank shards are uneven (8 + 7).
STEPS = 4
CELL_ARGS = ["optim.max_steps=4", "eval.every_steps=2"]
# Small enough for the tiny models (r = 8, d = 32); every tensor still trains.
METHOD_ARGS = {
    "pt": ["method=pt"],
    "spot": ["method=spot"],
    "tpv": ["method=tpv"],
    "dtvg": ["method=dtvg"],
    "attempt": ["method=attempt", "attempt.attention_dim=4"],
    "mpt": ["method=mpt", "mpt.source_max_steps=4", "mpt.lam=0.5", "mpt.temperature=2.0"],
    "dept": ["method=dept", "dept.prompt_length=4", "dept.rank=2", "dept.max_length=64"],
}
EVAL_ARGS = {"generate": ["eval.rank_classification=false"], "rank": ["eval.rank_classification=true"]}
LOSS_ATOL = 1e-4
# ATTEMPT's attention module starts small (W_down, W_up ~ N(0, 0.01)), so
# Adam's normalised step turns the ~1e-7 relative differences of fp32 sums
# taken in another order into ~2e-5 (measured: DDP 1e-5, ZeRO-3 2.3e-5); a
# wrong reduction would be off by the learning rate (0.3). The others stay
# within 1e-5.
PROMPT_ATOL = {**dict.fromkeys(METHODS, 1e-5), "attempt": 1e-4}


@dataclass(frozen=True)
class Cell:
    method: str
    backbone: str
    evaluation: str
    launch: str  # "one" (the reference), "ddp", "zero3"
    checkpointing: bool = False

    @property
    def name(self) -> str:
        return f"{self.launch}-{self.backbone}-{self.method}-{self.evaluation}" + (
            "-gradckpt" if self.checkpointing else ""
        )

    @property
    def reference(self) -> Cell:
        """The one-process run this cell must equal (without checkpointing)."""
        return Cell(self.method, self.backbone, self.evaluation, "one")


# Every cell, explicitly. Gradient checkpointing: DTVG on both backbones
# under both launches (its grouping reads per-step gradients of every source).
CELLS = [
    Cell(m, b, e, launch) for launch in LAUNCHES for b in BACKBONES for m in METHODS for e in EVALS
] + [Cell("dtvg", b, "generate", launch, checkpointing=True) for launch in LAUNCHES for b in BACKBONES]
REFERENCES = sorted({c.reference for c in CELLS}, key=lambda c: c.name)


def test_matrix_has_no_hole():
    """Every registered method x backbone x launch x evaluation mode is a
    cell, and both launches run gradient checkpointing on both backbones."""
    assert set(METHODS) == set(method_names()), "a method without matrix cells"
    plain = {(c.method, c.backbone, c.launch, c.evaluation) for c in CELLS if not c.checkpointing}
    assert len(plain) == len(METHODS) * len(BACKBONES) * len(LAUNCHES) * len(EVALS)
    ckpt = {(c.backbone, c.launch) for c in CELLS if c.checkpointing}
    assert ckpt == {(b, launch) for b in BACKBONES for launch in LAUNCHES}


@dataclass
class Matrix:
    out: dict[Cell, Path]
    bank: dict[Cell, Path]
    log: dict[str, Path]  # launch -> driver log (references: "one-0", "one-1")


def cell_args(cell: Cell, ref, out: Path, bank: Path) -> list[str]:
    args = [*COMMON, *CELL_ARGS, f"recipe={ref.recipe}", "stage=2", f"bank_dir={bank}",
            f"output_dir={out}", *METHOD_ARGS[cell.method], *EVAL_ARGS[cell.evaluation]]
    if cell.checkpointing:
        args.append("backbone.gradient_checkpointing=true")
    return args


def _bank_for(cell: Cell, ref_bank: Path, root: Path) -> Path:
    if cell.method != "mpt":
        return ref_bank
    dest = root / "banks" / cell.name
    dest.mkdir(parents=True)
    for entry in ref_bank.glob("*.safetensors"):
        shutil.copy(entry, dest / entry.name)
    return dest


def _driver(plan: list[dict], root: Path, name: str, config: str | None) -> tuple[list[str], Path]:
    plan_file = root / f"{name}.json"
    plan_file.write_text(json.dumps(plan))
    if config is None:
        return [sys.executable, str(DRIVER), str(plan_file)], root / f"{name}.log"
    return [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / config),
        "--main_process_port", str(free_port()), str(DRIVER), str(plan_file),
    ], root / f"{name}.log"


def _matrix(root: Path, references, at_once: bool) -> Matrix:
    """All cells: the references in two processes, then each launch in one
    `accelerate launch`; the four drivers at once when `at_once`, else one
    after another. A failing launch is not raised here: its cells fail, each
    with its part of the log."""
    m = Matrix({}, {}, {})
    plans: dict[str, list[dict]] = {"one-0": [], "one-1": [], **{k: [] for k in LAUNCHES}}
    for i, cell in enumerate(REFERENCES + CELLS):
        ref = references[cell.backbone]
        m.out[cell], m.bank[cell] = root / cell.name, _bank_for(cell, ref.bank, root)
        args = cell_args(cell, ref, m.out[cell], m.bank[cell])
        if cell.name == "zero3-tiny-t5-pt-generate":  # the first ZeRO-3 cell builds its own cache
            args.append(f"data.cache_dir={root / 'fresh-cache'}")
        key = f"one-{i % 2}" if cell.launch == "one" else cell.launch
        plans[key].append({"name": cell.name, "args": args})
    # At once: 6 processes on the 2 cores. No cell reads another's output,
    # and each launch waits on collectives and on its rank 0 often enough
    # that the others fill the gaps.
    procs: list[tuple[subprocess.Popen, Path]] = []
    for key, config in (("one-0", None), ("one-1", None), *LAUNCHES.items()):
        cmd, m.log[key] = _driver(plans[key], root, key, config)
        procs.append((start(cmd, m.log[key]), m.log[key]))
        if not at_once:
            wait(*procs.pop(), timeout=900)
    for proc, log in procs:
        wait(proc, log, timeout=900)
    return m


# in the background after the references (tests/background.py): the drivers
# one after another there, beside the tests
BACKGROUND.offer("matrix", lambda: _matrix(BACKGROUND.folder("matrix"), BACKGROUND.done("references"),
                                           at_once=False), after=("references",))


@pytest.fixture(scope="session")
def matrix(references, tmp_path_factory) -> Matrix:
    return BACKGROUND.result("matrix", lambda: _matrix(tmp_path_factory.mktemp("matrix"), references,
                                                       at_once=True))


def _segment(log: Path, name: str) -> str:
    """The driver log from this run's marker to the next run's."""
    text = log.read_text(errors="replace")
    marker = f"=== matrix run {name} ==="
    if marker not in text:
        return f"(run {name} never started)\n" + tail(log, 3000)
    after = text.split(marker, 1)[1]
    # Both ranks print the marker: the segment ends at another run's.
    for match in re.finditer(r"=== matrix run (\S+) ===", after):
        if match.group(1) != name:
            return after[: match.start()]
    return after


def _log_of(m: Matrix, cell: Cell) -> Path:
    if cell.launch != "one":
        return m.log[cell.launch]
    return m.log[f"one-{REFERENCES.index(cell) % 2}"]


def _finished(m: Matrix, cell: Cell) -> Path:
    out = m.out[cell]
    assert (out / "results.json").is_file(), f"{cell.name} did not finish:\n{_segment(_log_of(m, cell), cell.name)[-6000:]}"
    return out


def assert_same(ref_dir: Path, run_dir: Path, method: str) -> None:
    ref_losses, got = losses(ref_dir), losses(run_dir)
    assert len(got) == len(ref_losses) == STEPS
    worst = max(abs(a - b) for a, b in zip(ref_losses, got, strict=True))
    assert worst <= LOSS_ATOL, f"losses differ by {worst}: {ref_losses} vs {got}"
    a, b = prompt(ref_dir), prompt(run_dir)
    assert sorted(a) == sorted(b)
    for key, value in a.items():
        torch.testing.assert_close(b[key], value, atol=PROMPT_ATOL[method], rtol=0, msg=key)
    if (ref_dir / "grouping.jsonl").is_file():
        assert groups(run_dir) == groups(ref_dir)
        for ref_row, got_row in zip(jsonl(ref_dir / "grouping.jsonl"), jsonl(run_dir / "grouping.jsonl"), strict=True):
            for name, sim in ref_row["sims"].items():
                assert got_row["sims"][name] == pytest.approx(sim, abs=1e-4)
    # Uneven shards: every example is scored exactly once, with the single
    # process's scores (2 validations and the test).
    ref_evals, got_evals = evals(ref_dir), evals(run_dir)
    assert [r["num_examples"] for r in got_evals] == [15] * len(ref_evals) == [15] * 3
    assert got_evals == ref_evals


def assert_mpt_same(m: Matrix, ref: Cell, cell: Cell) -> None:
    """MPT's source training (distillation into the bank's shared entry)
    equals one process too, and moved u."""
    a, b = losses(m.out[ref] / "mpt-source"), losses(m.out[cell] / "mpt-source")
    assert len(a) == len(b) == 4
    assert max(abs(x - y) for x, y in zip(a, b, strict=True)) <= LOSS_ATOL, (a, b)
    (ref_entry,) = (m.bank[ref] / "mpt").glob("*.safetensors")
    (got_entry,) = (m.bank[cell] / "mpt").glob("*.safetensors")
    assert ref_entry.name == got_entry.name
    e_ref, e_got = load_mpt_shared(ref_entry), load_mpt_shared(got_entry)
    for key in ("shared", "u", "v"):
        torch.testing.assert_close(getattr(e_got, key), getattr(e_ref, key), atol=PROMPT_ATOL["mpt"], rtol=0)
    assert not torch.equal(e_ref.u, torch.ones_like(e_ref.u))


@pytest.mark.slow
@pytest.mark.parametrize("cell", CELLS, ids=lambda c: c.name)
def test_cell_matches_one_process(matrix, cell):
    out, ref_out = _finished(matrix, cell), _finished(matrix, cell.reference)
    assert_same(ref_out, out, cell.method)
    facts, ref_facts = results(out), results(ref_out)
    assert facts["method"] == cell.method and facts["world_size"] == 2
    assert facts["zero_stage"] == (3 if cell.launch == "zero3" else 0)
    assert facts["prompt_replica_max_abs_diff"] == 0.0  # identical prompt on every rank
    assert facts["test"] == ref_facts["test"]
    total, per_rank = facts["backbone_param_elements"], facts["backbone_param_elements_per_rank"]
    if cell.launch == "zero3":  # each rank holds about half the backbone
        assert all(0.95 <= held / (total / 2) <= 1.05 for held in per_rank), (per_rank, total)
    else:
        assert per_rank == [total, total]
    if cell.method == "mpt":
        assert_mpt_same(matrix, cell.reference, cell)


@pytest.mark.slow
def test_checkpointing_was_on(matrix):
    """The checkpointing cells really ran with it (and the others without)."""
    for cell in CELLS:
        if cell.method == "dtvg" and cell.evaluation == "generate":
            cfg = (_finished(matrix, cell) / "config.yaml").read_text()
            assert f"gradient_checkpointing: {str(cell.checkpointing).lower()}" in cfg, cell.name
            log = _segment(matrix.log[cell.launch], cell.name)
            assert f"grad_ckpt={cell.checkpointing}" in log, cell.name


@pytest.mark.slow
def test_zero3_on_cpu_compiles_no_deepspeed_op(matrix):
    """Every rank of the ZeRO-3 launch started DeepSpeed's process group
    without compiling or loading its CPU inference op
    (training.distributed.skip_deepspeed_cpu_inference_op): DeepSpeed prints
    this line on every rank that loads it, cached or built (comm/torch.py).
    That the launch ran ZeRO-3 is test_cell_matches_one_process's check."""
    cells = [c for c in CELLS if c.launch == "zero3"]
    for cell in cells:
        _finished(matrix, cell)
    text = matrix.log["zero3"].read_text(errors="replace")
    assert all(f"=== matrix run {cell.name} ===" in text for cell in cells)
    assert "deepspeed_shm_comm_op built successfully" not in text


@pytest.mark.slow
def test_zero3_main_process_builds_the_cache_once(matrix):
    """The main process built the target's tokenized splits; rank 1 waited
    and read them; no temporary folder is left."""
    cell = next(c for c in CELLS if c.name == "zero3-tiny-t5-pt-generate")
    _finished(matrix, cell)
    text = _segment(matrix.log["zero3"], cell.name)
    assert text.count("cache miss, building") == 1 and "builds the tokenized splits" not in text
    cache = matrix.out[cell].parent / "fresh-cache"
    assert [p.name.split("-")[0] for p in cache.iterdir()] == ["syn_target"]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["attempt", "dept", "pt"])
def test_one_process_trains_every_tensor(matrix, method):
    for backbone in BACKBONES:
        out = _finished(matrix, Cell(method, backbone, "generate", "one"))
        facts = results(out)
        assert facts["trainable_parameters"] == sum(
            v.numel() for k, v in prompt(out).items() if k not in ("soft_prompt", "source_prompts")
        ), (backbone, method)
        assert losses(out)[-1] != losses(out)[0]


KILLED = (("tiny-t5", "attempt"), ("tiny-llama", "dept"))


def _killed_and_resumed(root: Path, references, at_once: bool) -> dict[tuple[str, str], tuple[Path, int, Path]]:
    """Each KILLED one-process cell killed by SIGKILL at step 3, then the
    same command with resume=true; the cases side by side when `at_once`.
    Returns {case: (output_dir, the first exit code, the resume's log)}."""
    def case(backbone: str, method: str) -> tuple[Path, int, Path]:
        folder = root / f"{backbone}-{method}"
        out, log, log2 = folder / "run", folder / "log.txt", folder / "resume.txt"
        folder.mkdir(parents=True)
        cmd = [sys.executable, "-m", "dtvg_dist.train", *cell_args(
            Cell(method, backbone, "generate", "one"), references[backbone], out, references[backbone].bank)]
        code = run(cmd, log, DTVG_FAULT_STEP="3", DTVG_FAULT_KIND="sigkill")
        assert code == -9 and not (out / "results.json").exists(), tail(log)
        check(run([*cmd, "resume=true"], log2), log2)
        return out, code, log2

    if not at_once:
        return {killed: case(*killed) for killed in KILLED}
    with ThreadPoolExecutor(max_workers=len(KILLED)) as pool:
        futures = {killed: pool.submit(case, *killed) for killed in KILLED}
        return {killed: future.result() for killed, future in futures.items()}


# in the background after the references, one case at a time (tests/background.py)
BACKGROUND.offer("killed_and_resumed", lambda: _killed_and_resumed(
    BACKGROUND.folder("killed"), BACKGROUND.done("references"), at_once=False), after=("references",))


@pytest.fixture(scope="module")
def killed_and_resumed(references, tmp_path_factory):
    return BACKGROUND.result("killed_and_resumed", lambda: _killed_and_resumed(
        tmp_path_factory.mktemp("killed"), references, at_once=True))


@pytest.mark.slow
@pytest.mark.parametrize(("backbone", "method"), KILLED)
def test_resume_after_sigkill_is_bit_exact(matrix, killed_and_resumed, backbone, method):
    """A one-process cell killed by SIGKILL at step 3 (checkpoint of step 2 on
    disk) resumes to its uninterrupted run bit for bit."""
    ref = _finished(matrix, Cell(method, backbone, "generate", "one"))
    out, code, log2 = killed_and_resumed[(backbone, method)]
    assert code == -9
    assert "resumed from" in log2.read_text()
    assert losses(out) == losses(ref)
    a, b = prompt(ref), prompt(out)
    assert set(a) == set(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert results(out)["test"] == results(ref)["test"]
