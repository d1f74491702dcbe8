"""The files of one run (config.yaml, metrics.jsonl, grouping.jsonl,
results.json, prompt.safetensors) and where runs live on disk, in one place.
Only the main process writes; every write of a whole file goes through a
temporary name."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

# torch and safetensors are imported where tensors are read or written: the
# SLURM job wrapper reads this module's layout on every node and needs neither
if TYPE_CHECKING:
    import torch

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
GROUPING = "grouping.jsonl"
RESULTS = "results.json"
PROMPT = "prompt.safetensors"

# ---- the run-folder layout: every command and report reads it from here ----
RUNS_DIR = Path("runs")
STAGE1 = "stage1"  # <output_dir>/stage1/<task>: the stage-1 runs of a pipeline
CACHE_ENV = "DTVG_CACHE"  # the root of the caches (synthetic backbones, tokenized splits)


def cache_root() -> Path:
    """$DTVG_CACHE, else runs/.cache: synthetic backbones and (unless
    $DTVG_DATA_CACHE or data.cache_dir) tokenized splits live under it."""
    return Path(os.environ.get(CACHE_ENV) or RUNS_DIR / ".cache").expanduser()


def run_dir(runs_dir: Path | str, recipe: str, seed: int, variant: str | None = None) -> Path:
    """<runs>/<recipe>/<seed>, or <runs>/<recipe>@<variant>/<seed> for a
    baseline or an ablation of the recipe."""
    name = recipe if variant is None else f"{recipe}@{variant}"
    return Path(runs_dir) / name / str(seed)


def stage1_dir(output_dir: Path | str, task: str) -> Path:
    """A stage-1 run of `task` inside its pipeline's output_dir."""
    return Path(output_dir) / STAGE1 / task


def default_bank_dir(backbone_name: str) -> Path:
    """The bank a recipe without bank_dir shares with every recipe of its backbone."""
    return RUNS_DIR / "bank" / backbone_name


def seed_bank_dir(bank: Path | str, seed: int) -> Path:
    """One bank per seed inside `bank` (P_init drawn under that seed)."""
    return Path(bank) / f"seed{seed}"


def entry_path(bank_dir: str | os.PathLike, task: str) -> Path:
    """A task's bank entry (dtvg_dist/store/bank.py writes and reads it)."""
    return Path(bank_dir) / f"{task}.safetensors"


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def _clean(value: Any) -> Any:
    """JSON has no NaN or inf: write them as strings so the file stays valid."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


class RunFiles:
    """Append-only logs plus whole-file results for one run directory."""

    def __init__(self, run_dir: Path, enabled: bool = True) -> None:
        self.dir = run_dir
        self.enabled = enabled
        if enabled:
            run_dir.mkdir(parents=True, exist_ok=True)

    def write_config(self, yaml_text: str) -> None:
        if self.enabled:
            atomic_write_text(self.dir / CONFIG, yaml_text)

    def _append(self, name: str, rows: list[dict[str, Any]]) -> None:
        """Rows reach the OS at once (a crashed process loses none of them)
        and the disk at the next :meth:`sync`."""
        if not self.enabled or not rows:
            return
        with open(self.dir / name, "a") as handle:
            for row in rows:
                handle.write(json.dumps(_clean(row)) + "\n")

    def sync(self) -> None:
        """Put the logs on disk; called with every checkpoint, so the rows a
        checkpoint covers outlive a machine crash, and a resume keeps just
        those (:meth:`truncate_after`). Once per checkpoint rather than once
        per row: an append's fsync took 2-8 ms here while other runs wrote
        (cProfile of a tiny-t5 run: 94 of them, 0.7 s)."""
        if not self.enabled:
            return
        for name in (METRICS, GROUPING):
            path = self.dir / name
            if path.is_file():
                with open(path, "rb") as handle:
                    os.fsync(handle.fileno())

    def log_metrics(self, row: dict[str, Any]) -> None:
        self._append(METRICS, [row])

    def log_grouping(self, rows: list[dict[str, Any]]) -> None:
        self._append(GROUPING, rows)

    def truncate_after(self, step: int) -> None:
        """On resume: drop log lines written after the checkpoint's step, so
        the logs read as if the run had never stopped."""
        if not self.enabled:
            return
        for name in (METRICS, GROUPING):
            path = self.dir / name
            if not path.is_file():
                continue
            kept = [
                line for line in path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step
            ]
            atomic_write_text(path, "".join(line + "\n" for line in kept))

    def write_results(self, results: dict[str, Any]) -> None:
        if self.enabled:
            atomic_write_text(self.dir / RESULTS, json.dumps(_clean(results), indent=2) + "\n")

    def write_prompt(self, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
        if self.enabled:
            save_tensors(self.dir / PROMPT, tensors, metadata)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
