"""A finished run's prompt module rebuilt from its files (bank entries plus the
trainable tensors of the best checkpoint), independently of the run's
`soft_prompt`, and the backbone it was trained on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from dtvg_dist.data import DataSettings
from dtvg_dist.data.module import TaskData
from dtvg_dist.model.prompt import DTVGPrompt, SoftPrompt
from dtvg_dist.orchestration.config import load_run_config
from dtvg_dist.orchestration.pipeline import backbone_settings, check_tasks
from dtvg_dist.store.bank import load_bank


def run_root(run_dir: Path) -> Path:
    """The folder with config.yaml: the run itself, or two up for stage1/<task>."""
    return run_dir if (run_dir / "config.yaml").is_file() else run_dir.parent.parent


def run_config(run_dir: Path) -> Any:
    cfg = load_run_config(run_root(run_dir) / "config.yaml")
    check_tasks(cfg)
    return cfg


def rebuilt_prompt(run_dir: Path) -> torch.nn.Module:
    """PT/SPoT: the tuned prompt; DTVG: a DTVGPrompt from the bank with the saved trainables."""
    cfg = run_config(run_dir)
    tensors = load_file(str(run_dir / "prompt.safetensors"))
    state = {k: v for k, v in tensors.items() if k != "soft_prompt"}
    if "prompt" in state:
        return SoftPrompt(state["prompt"])
    names = list(cfg.source_tasks)
    bank = load_bank(Path(cfg.bank_dir), [cfg.target_task, *names])
    module = DTVGPrompt(
        bank[cfg.target_task].p_init, bank[cfg.target_task].tpv,
        torch.stack([bank[n].tpv for n in names]), names, rule=cfg.grouping.rule,
        fixed=cfg.grouping.fixed,
    )
    module.load_trainable_state(state)
    return module


def run_backbone(run_dir: Path) -> Any:
    from dtvg_dist.model.backbone import load_backbone

    return load_backbone(backbone_settings(run_config(run_dir), run_root(run_dir)), device="cpu")


def run_data(run_dir: Path, backbone: Any = None) -> TaskData:
    """The run's target data exactly as its training built it (same settings,
    seed and, given the backbone, tokenizer)."""
    cfg = run_config(run_dir)
    settings = DataSettings.coerce(OmegaConf.to_container(cfg.data, resolve=True))
    if backbone is None:
        return TaskData(cfg.target_task, settings, seed=cfg.seed)
    return TaskData(cfg.target_task, settings, backbone.tokenizer, backbone.family, seed=cfg.seed)
