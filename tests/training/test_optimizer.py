"""The AdamW each stage builds: stage 1 with C.2's weight decay, stage 2 with
the released stage 2's transformers.AdamW defaults (weight decay 0, eps 1e-6)
where the recipe says so (the paper recipes do)."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from dtvg_dist.model.prompt import DTVGPrompt, SoftPrompt
from dtvg_dist.orchestration.config import load_recipe
from dtvg_dist.orchestration.pipeline import Pipeline
from dtvg_dist.tasks import get_task
from dtvg_dist.training.trainer import RunSpec, Trainer, adamw_settings


def _optim(**values):
    base = {"weight_decay": 1e-5, "eps": 1e-8, "stage2_weight_decay": None, "stage2_eps": None}
    return OmegaConf.create({**base, **values})


def test_stage2_takes_its_own_values_only_where_set() -> None:
    assert adamw_settings(_optim(), 1) == (1e-5, 1e-8)
    assert adamw_settings(_optim(), 2) == (1e-5, 1e-8)  # unset: stage 1's
    released = _optim(stage2_weight_decay=0.0, stage2_eps=1e-6)
    assert adamw_settings(released, 1) == (1e-5, 1e-8)
    assert adamw_settings(released, 2) == (0.0, 1e-6)


@pytest.mark.parametrize("recipe", ["t5-base-dtvg-rte", "t5-base-nlg-e2e_nlg", "llama3.2-1b-rte",
                                    "t5-base-fewshot-k16-cb", "t5-large-dtvg-boolq"])
def test_paper_recipes_run_the_released_stage2_adamw(recipe: str) -> None:
    c = load_recipe(recipe)
    assert adamw_settings(c.optim, 2) == (0.0, 1e-6)
    assert adamw_settings(c.optim, 1) == (pytest.approx(1e-5), 1e-8)


def test_the_trainer_builds_those_groups(tmp_path) -> None:
    cfg = load_recipe("tiny-t5", [f"output_dir={tmp_path / 'run'}", f"bank_dir={tmp_path / 'bank'}",
                                  "logging.progress_bar=false", "optim.stage2_weight_decay=0.0",
                                  "optim.stage2_eps=1e-6"])
    pipe = Pipeline(cfg)
    r, d = cfg.prompt.length, pipe.backbone.hidden_size
    gen = torch.Generator().manual_seed(0)
    prompts = {
        1: SoftPrompt(torch.randn(r, d, generator=gen)),
        2: DTVGPrompt(torch.zeros(r, d), torch.randn(r, d, generator=gen),
                      torch.randn(2, r, d, generator=gen), ["a", "b"]),
    }
    seen = {}
    for stage, prompt in prompts.items():
        spec = RunSpec(name=f"s{stage}", task=get_task("syn_target"), method="dtvg", prompt=prompt,
                       run_dir=tmp_path / f"s{stage}", max_steps=2, lr=0.3, source_lr=0.4,
                       train=[{"labels": [1]}], validation=[], test=[], stage=stage)
        trainer = Trainer(cfg, spec, pipe.backbone, pipe.acc)
        trainer.build()
        seen[stage] = {(g["weight_decay"], g["eps"]) for g in trainer.optimizer.param_groups}
    assert seen == {1: {(1e-5, 1e-8)}, 2: {(0.0, 1e-6)}}
