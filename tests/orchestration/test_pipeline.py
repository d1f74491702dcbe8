"""Stage-2 method wiring of the pipeline on tiny-t5 with planted bank
entries: which source SPoT and TPV start from, what DTVG is built with, and
`grouping.fixed` through a killed and resumed run."""

from __future__ import annotations

import pytest
import torch
from cli_runs import jsonl, results
from omegaconf import OmegaConf

from dtvg_dist.core import select_group
from dtvg_dist.model.backbone import config_name
from dtvg_dist.model.prompt import DTVGPrompt, SoftPrompt
from dtvg_dist.orchestration.config import load_recipe
from dtvg_dist.orchestration.pipeline import Pipeline
from dtvg_dist.store.bank import BankError, save_entry
from dtvg_dist.store.checkpoint import load_checkpoint
from dtvg_dist.store.checkpoint_slots import find_checkpoint

SOURCES = ["syn_same", "syn_same_b", "syn_flip", "syn_topic"]
TARGET = "syn_target"
R, D = 8, 32  # tiny-t5: prompt.length, d_model


def _plant(bank, backbone: str, init_seed: int = 7) -> dict[str, torch.Tensor]:
    """P_init = 0, so prompts equal TPVs. syn_same_b points exactly along the
    target but is short (cosine 1, small Eq. 2); syn_topic is long and only
    roughly along it (largest Eq. 2, smaller cosine)."""
    gen = torch.Generator().manual_seed(0)
    target = torch.randn(R, D, generator=gen)
    tpvs = {
        TARGET: target,
        "syn_same": torch.randn(R, D, generator=gen),
        "syn_same_b": 0.1 * target,
        "syn_flip": -target,
        "syn_topic": 3.0 * target + 2.0 * torch.randn(R, D, generator=gen),
    }
    for task, tpv in tpvs.items():
        save_entry(bank, task, tpv, torch.zeros(R, D), backbone=backbone, init_seed=init_seed,
                   steps=1, best_score=None)
    return tpvs


@pytest.fixture(scope="module")
def pipeline_for(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    built: dict[tuple[str, ...], Pipeline] = {}

    def build(*overrides: str) -> tuple[Pipeline, dict[str, torch.Tensor]]:
        cfg = load_recipe("tiny-t5", [f"output_dir={root / 'run'}", f"bank_dir={root / 'bank'}",
                                      "stage=2", "logging.progress_bar=false", *overrides])
        pipe = built.setdefault(tuple(overrides), Pipeline(cfg))
        return pipe, _plant(root / "bank", pipe.backbone.name)

    return build


@pytest.mark.parametrize(("method", "source"), [("spot", "syn_same_b"), ("tpv", "syn_topic")])
def test_single_source_methods_start_from_the_source_their_metric_picks(pipeline_for, method, source):
    pipe, tpvs = pipeline_for(f"method={method}")
    module, facts = pipe.stage2_prompt()
    assert isinstance(module, SoftPrompt)
    assert torch.equal(module.prompt.detach().cpu(), tpvs[source])  # P_init (0) + its TPV
    assert facts[f"{method}_source"] == source
    assert facts["p_init_seed"] == 7 and facts["bank_dir"].endswith("bank")


@pytest.mark.parametrize("rule", ["greedy", "first-drop", "prefix-argmax"])
def test_dtvg_gets_the_rule_and_the_fixed_switch(pipeline_for, rule):
    pipe, tpvs = pipeline_for(f"grouping.rule={rule}", "grouping.fixed=true")
    module, facts = pipe.stage2_prompt()
    assert isinstance(module, DTVGPrompt) and module.rule == rule and module.fixed
    assert module.source_names == SOURCES
    assert torch.equal(module.source_tpvs.cpu(), torch.stack([tpvs[s] for s in SOURCES]))
    assert (facts["grouping_rule"], facts["grouping_fixed"]) == (rule, True)


def test_a_target_among_its_sources_brings_its_own_tpv(pipeline_for):
    pipe, tpvs = pipeline_for("target_as_source=true", f"source_tasks=[syn_same,{TARGET}]")
    assert pipe.stage1_tasks() == ["syn_same", TARGET]  # trained once
    module, facts = pipe.stage2_prompt()
    assert module.source_names == ["syn_same", TARGET]
    assert torch.equal(module.source_tpvs[1].cpu(), tpvs[TARGET])
    assert torch.equal(module.target_tpv.detach().cpu(), tpvs[TARGET])


def test_fixed_group_survives_a_resume_and_a_changed_bank_is_refused(tmp_path):
    """Train 3 steps with grouping.fixed (first-drop), then swap the bank's
    sources so that the rule would now pick another group: the resume is
    refused naming the changed entry. With the bank rewritten as it was, the
    resumed steps keep the checkpointed step-0 group."""
    bank, out = tmp_path / "bank", tmp_path / "run"
    cfg = load_recipe("tiny-t5", [
        "stage=2", f"bank_dir={bank}", f"output_dir={out}", "optim.max_steps=3",
        "eval.every_steps=3", "grouping.rule=first-drop", "grouping.fixed=true",
        "logging.progress_bar=false", "data.max_eval_examples=4"])
    name = config_name(OmegaConf.to_container(cfg.backbone.config), cfg.backbone.init_seed)
    target = 10 * torch.randn(R, D, generator=torch.Generator().manual_seed(1))

    def bank_with(aligned: str) -> None:  # large TPVs: 3 steps cannot flip a sign
        for task in [TARGET, *SOURCES]:
            tpv = target if task == TARGET else (0.5 * target if task == aligned else -target)
            save_entry(bank, task, tpv, torch.zeros(R, D), backbone=name, init_seed=7, steps=1,
                       best_score=None)

    bank_with("syn_same")
    Pipeline(cfg).run()
    ckpt = load_checkpoint(find_checkpoint(out))
    assert ckpt.trainable["fixed_mask"].tolist() == [True, False, False, False]
    bank_with("syn_topic")
    moved = select_group(ckpt.trainable["target_tpv"], torch.stack(
        [(0.5 if s == "syn_topic" else -1.0) * target for s in SOURCES]), "first-drop")
    assert moved.tolist() == [False, False, False, True]  # what the rule picks now
    cfg.optim.max_steps, cfg.resume = 6, True
    with pytest.raises(BankError, match=f"bank entry {bank / 'syn_same.safetensors'} changed since"):
        Pipeline(cfg).run()
    bank_with("syn_same")  # the same entries again (the files' bytes may differ)
    Pipeline(cfg).run()
    rows = jsonl(out / "grouping.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 7))
    assert all(r["group"] == ["syn_same"] for r in rows)
    res = results(out)
    assert (res["grouping_rule"], res["grouping_fixed"], res["p_init_seed"]) == ("first-drop", True, 7)
