"""A finished run read back from its folder, for the commands that use a
trained prompt outside training (`dtvg_dist.export`, `dtvg_dist.predict`).

What a run leaves (docs/outputs.md): `config.yaml` (the resolved recipe, in the
output dir; a stage-1 run `<output_dir>/stage1/<task>/` uses its parent's),
`results.json` (task, method, backbone) and `prompt.safetensors`, whose
`soft_prompt` is the final [r, d] prompt of the best checkpoint: for DTVG the
merged P_mix with that checkpoint's group and alphas (`Trainer._finish`
loads the best state and evaluates the prompt module once more). For a
method whose prompt depends on the input (ATTEMPT) or that also changes the
input embeddings (DePT) `soft_prompt` is only part of it: the method rebuilds
its module from the other tensors of the file (`TrainedRun.prompt_module`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from dtvg_dist.model.methods import Method, get_method
from dtvg_dist.orchestration.config import RecipeError, load_run_config
from dtvg_dist.store.run_files import CONFIG, PROMPT, RESULTS, STAGE1, load_tensors

SOFT_PROMPT = "soft_prompt"


class RunDirError(RecipeError):
    """A run folder that cannot be used; the message names the folder and the file."""


@dataclass
class TrainedRun:
    run_dir: Path
    root: Path  # the folder holding config.yaml (the run's output_dir)
    cfg: DictConfig
    results: dict[str, Any]
    soft_prompt: torch.Tensor  # [r, d], fp32
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)  # all of prompt.safetensors

    @property
    def task(self) -> str:
        return str(self.results["task"])

    @property
    def method(self) -> str:
        return str(self.results.get("method", "?"))

    def method_spec(self) -> Method:
        """The registered method the run trained (its results.json says which)."""
        try:
            return get_method(self.method)
        except KeyError as err:
            raise RunDirError(f"{self.run_dir}: {err.args[0]}") from None

    def prompt_module(self) -> torch.nn.Module:
        """The trained prompt module, rebuilt by its method from prompt.safetensors."""
        try:
            return self.method_spec().rebuild(self.tensors, self.cfg)
        except KeyError as err:
            raise RunDirError(
                f"{self.run_dir}: prompt.safetensors lacks {err} that method {self.method} needs"
            ) from None


def _config_path(run_dir: Path) -> Path:
    candidates = [run_dir / CONFIG]
    if run_dir.parent.name == STAGE1:  # <output_dir>/stage1/<task>
        candidates.append(run_dir.parent.parent / CONFIG)
    for path in candidates:
        if path.is_file():
            return path
    raise RunDirError(
        f"{run_dir}: no {CONFIG} (looked in {', '.join(str(p.parent) for p in candidates)}); "
        "give the output_dir of a training run, or its stage1/<task> folder"
    )


def open_run(run_dir: str | Path, overrides: list[str] | None = None) -> TrainedRun:
    """Read a finished run; `overrides` (`key=value`) change its recipe (e.g. eval.batch_size)."""
    run_dir = Path(run_dir).expanduser()
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: no such run folder")
    results_path, prompt_path = run_dir / RESULTS, run_dir / PROMPT
    for path in (prompt_path, results_path):
        if not path.is_file():
            raise RunDirError(
                f"{run_dir}: no {path.name}; a run writes it when it finishes (after its test "
                "evaluation). Finish the run first (rerun its command with resume=true)"
            )
    config_path = _config_path(run_dir)
    try:
        results = json.loads(results_path.read_text())
    except json.JSONDecodeError as err:
        raise RunDirError(f"{results_path}: invalid JSON ({err.msg})") from None
    if "task" not in results:
        raise RunDirError(f"{results_path}: no 'task' entry")
    tensors = load_tensors(prompt_path)
    if SOFT_PROMPT not in tensors:
        raise RunDirError(f"{prompt_path}: no {SOFT_PROMPT!r} tensor (found {sorted(tensors)})")
    soft_prompt = tensors[SOFT_PROMPT].float()
    if soft_prompt.dim() != 2:
        raise RunDirError(f"{prompt_path}: {SOFT_PROMPT} has shape {tuple(soft_prompt.shape)}, not [r, d]")
    cfg = load_run_config(config_path, overrides)
    return TrainedRun(run_dir, config_path.parent, cfg, results, soft_prompt, dict(tensors))
