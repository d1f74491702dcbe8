"""The paper recipes: every file loads and validates, names itself, and the
leaves carry the hyperparameters of the paper's appendix C."""

from __future__ import annotations

import os
from functools import cache

import pytest
from omegaconf import DictConfig, OmegaConf

from dtvg_dist.orchestration.config import list_recipes, load_recipe, recipe_path
from dtvg_dist.reporting.paper_results import (
    EXPERIMENTS,
    GLUE,
    MRQA,
    NLG,
    OTHER,
    SOURCES,
    SUPERGLUE,
)
from dtvg_dist.tasks import TASKS, get_task

TINY = {"tiny-t5", "tiny-llama", "demo", "demo-stage1", "demo-one-source", "demo-one-source-stage1", "demo-immature",
        "demo-immature-stage1"}  # offline recipes owned elsewhere
PAPER_RECIPES = [name for name in list_recipes() if name not in TINY]
TARGETS = GLUE + SUPERGLUE + MRQA + OTHER  # Tables 2 and 7


@cache
def cfg(name: str) -> DictConfig:
    """Each recipe is loaded once per session (OmegaConf merges are slow)."""
    return load_recipe(name)


def test_there_is_a_recipe_per_experiment_of_the_paper() -> None:
    assert len(PAPER_RECIPES) > 100
    expected = (
        [f"t5-base-dtvg-{t}" for t in TARGETS]
        + [f"t5-base-stage1-{t}" for t in dict.fromkeys(SOURCES + TARGETS + NLG)]
        + [f"t5-base-fewshot-k{k}-{t}" for k in (4, 16, 32) for t in (*GLUE, *SUPERGLUE, "scitail")]
        + [f"t5-{s}-dtvg-{t}" for s in ("small", "large") for t in ("boolq", "multirc", "wic")]
        + [f"t5-base-nlg-{t}" for t in NLG]
        + [f"{b}-{t}" for b in ("llama3.2-1b", "llama3.2-3b", "llama3-8b") for t in ("rte", "cola", "cb", "wsc")]
    )
    assert len(TARGETS) == 21
    missing = sorted(set(expected) - set(PAPER_RECIPES))
    assert not missing


@pytest.mark.parametrize("name", PAPER_RECIPES)
def test_recipe_loads_validates_and_names_itself(name: str) -> None:
    c = cfg(name)
    assert c.recipe == name  # output_dir defaults to runs/<recipe>/<seed>
    raw = OmegaConf.load(recipe_path(name))
    assert str(raw.get("description", "")).strip(), f"{name} needs its own description"
    assert c.target_task in TASKS
    assert all(t in TASKS for t in c.source_tasks)
    assert all(t in TASKS for t in c.stage1.tasks)
    assert (c.target_task in c.source_tasks) == c.target_as_source
    assert c.bank_dir, "every paper recipe names its bank"
    # The paper's numbers come from the released code's grouping rule.
    assert c.grouping.rule == "prefix-argmax" and not c.grouping.fixed
    # ... and its checkpoint choice: the mean of the task's metrics ("average_metric").
    assert c.data.select_by == "mean"
    assert c.prompt.length == 100 and c.prompt.init_top_k == 5000


@pytest.mark.parametrize("name", sorted(TINY & set(list_recipes())))
def test_offline_recipes_load_too(name: str) -> None:
    assert cfg(name).target_task and str(OmegaConf.load(recipe_path(name)).get("description", ""))


def test_every_experiment_recipe_exists_and_targets_its_row() -> None:
    names = set(list_recipes())
    for exp in EXPERIMENTS.values():
        assert set(exp.recipes) <= names, exp.name
        assert set(exp.prerequisites) <= names, exp.name
        for row in exp.rows:
            assert cfg(row.recipe).target_task == row.task, (exp.name, row.recipe)
        for recipe in exp.prerequisites:
            assert cfg(recipe).stage == "1"


def test_experiments_cover_the_paper() -> None:
    assert {"table2", "table3", "table4", "table5", "table7", "table8", "figure6"} <= set(EXPERIMENTS)
    assert EXPERIMENTS["table2"].seeds == (22, 32, 42, 52)  # section 4.1, Figure 11
    assert EXPERIMENTS["table7"].seeds == (22, 32, 42, 52)
    assert len(EXPERIMENTS["table3"].seeds) == 3  # C.3
    assert len(EXPERIMENTS["table8"].seeds) == 3
    assert len(EXPERIMENTS["table2"].recipes) + len(EXPERIMENTS["table7"].recipes) == 21
    assert EXPERIMENTS["table4"].split == "validation"  # C.6: best validation


def test_llama3_8b_cb_matches_c5() -> None:
    c = cfg("llama3-8b-cb")
    assert c.backbone.name_or_path == "meta-llama/Meta-Llama-3-8B"
    assert c.optim.batch_size == 2
    assert c.optim.lr == pytest.approx(1e-4) and c.optim.source_lr == pytest.approx(1e-4)
    assert c.stage1.lr is None  # stage 1 uses optim.lr as well
    assert c.backbone.dtype == "bf16" and c.prompt.length == 100
    assert c.target_task == "cb" and list(c.source_tasks) == list(SOURCES)
    assert c.bank_dir == "runs/bank/llama3-8b"


@pytest.mark.parametrize(
    ("prefix", "hub", "batch", "lr"),
    [
        ("llama3.2-1b", "meta-llama/Llama-3.2-1B", 16, 1e-3),
        ("llama3.2-3b", "meta-llama/Llama-3.2-3B", 4, 1e-3),
        ("llama3-8b", "meta-llama/Meta-Llama-3-8B", 2, 1e-4),
    ],
)
def test_table5_leaves(prefix: str, hub: str, batch: int, lr: float) -> None:
    for task in ("rte", "cola", "cb", "wsc"):
        c = cfg(f"{prefix}-{task}")
        assert (c.backbone.name_or_path, c.optim.batch_size, c.target_task) == (hub, batch, task)
        assert c.optim.lr == pytest.approx(lr) and c.optim.source_lr == pytest.approx(lr)
        assert c.bank_dir == f"runs/bank/{prefix}" and c.stage == "2"
    stage1 = cfg(f"{prefix}-stage1")
    assert stage1.bank_dir == f"runs/bank/{prefix}"
    assert set(stage1.stage1.tasks) == set(SOURCES) | {"rte", "cola", "cb", "wsc"}
    assert set(stage1.source_tasks) == set(SOURCES)  # so the sources get 300k steps


def test_table2_leaf_matches_appendix_c() -> None:
    c = cfg("t5-base-dtvg-rte")
    assert c.backbone.name_or_path == "t5-base" and c.stage == "2" and c.method == "dtvg"
    assert list(c.source_tasks) == list(SOURCES)
    assert (c.optim.lr, c.optim.source_lr) == (pytest.approx(0.3), pytest.approx(0.4))
    assert c.optim.warmup_steps == 500 and c.optim.weight_decay == pytest.approx(1e-5)
    assert (c.optim.batch_size, c.optim.grad_accum) == (32, 1)
    assert c.optim.max_steps == 30_000 and c.stage1.source_max_steps == 300_000
    assert c.eval.every_steps == 1000 and c.grouping.rule == "prefix-argmax"
    assert c.bank_dir == "runs/bank/t5-base"


@pytest.mark.parametrize("task", SOURCES[:4])
def test_a_source_as_full_data_target_keeps_all_six_as_the_authors_ran(task: str) -> None:
    c = cfg(f"t5-base-dtvg-{task}")
    assert list(c.source_tasks) == list(SOURCES) and c.target_as_source  # scripts/dtvg_nlu.sh
    assert c.optim.max_steps == 300_000  # section 4.1: high-resource tasks, both stages
    other = load_recipe(f"t5-base-dtvg-{task}", [
        "target_as_source=false", f"source_tasks=[{','.join(s for s in SOURCES if s != task)}]"])
    assert task not in other.source_tasks


def test_target_among_sources_needs_the_switch() -> None:
    from dtvg_dist.orchestration.config import RecipeError

    with pytest.raises(RecipeError, match="target_as_source=true"):
        load_recipe("t5-base-dtvg-mnli", ["target_as_source=false"])
    with pytest.raises(RecipeError, match="not in source_tasks"):
        load_recipe("t5-base-dtvg-rte", ["target_as_source=true"])
    with pytest.raises(RecipeError, match="names a task twice"):
        load_recipe("t5-base-dtvg-rte", ["source_tasks=[mnli,mnli]"])


def test_grouping_fixed_is_a_switch_for_any_rule() -> None:
    from dtvg_dist.orchestration.config import RecipeError

    for rule in ("greedy", "first-drop", "prefix-argmax", "exhaustive-kc"):
        c = load_recipe("t5-base-dtvg-cb", [f"grouping.rule={rule}", "grouping.fixed=true"])
        assert c.grouping.rule == rule and c.grouping.fixed
    with pytest.raises(RecipeError, match="grouping.fixed=true"):
        load_recipe("t5-base-dtvg-cb", ["grouping.rule=fixed"])


def test_llama_recipes_use_the_released_input_format() -> None:
    from dtvg_dist.orchestration.config import RecipeError

    for prefix in ("llama3.2-1b", "llama3.2-3b", "llama3-8b"):
        for name in (f"{prefix}-stage1", *(f"{prefix}-{t}" for t in ("rte", "cola", "cb", "wsc"))):
            c = cfg(name)
            assert c.data.template == "dtvg-release" and c.eval.max_new_tokens == 20, name
    assert cfg("t5-base-dtvg-rte").data.template == "default"
    with pytest.raises(RecipeError, match="rank_classification"):
        load_recipe("llama3-8b-cb", ["eval.rank_classification=true"])
    with pytest.raises(RecipeError, match="data.template='chat' is not one of default, dtvg-release"):
        load_recipe("llama3-8b-cb", ["data.template=chat"])


def test_mrqa_uses_batch_16_with_accumulation_2() -> None:
    for name in [f"t5-base-dtvg-{t}" for t in MRQA] + [f"t5-base-stage1-{t}" for t in (*MRQA, "squad")]:
        c = cfg(name)
        assert (c.optim.batch_size, c.optim.grad_accum) == (16, 2), name
        assert get_task(c.target_task).max_source_length == 512


def test_stage1_recipes_train_one_task_each() -> None:
    for task in dict.fromkeys(SOURCES + TARGETS + NLG):
        c = cfg(f"t5-base-stage1-{task}")
        assert c.stage == "1" and list(c.stage1.tasks) == [task] and c.target_task == task
        assert c.bank_dir == "runs/bank/t5-base"
        steps = c.stage1.max_steps or c.optim.max_steps
        assert steps == (300_000 if task in SOURCES else 30_000), task


@pytest.mark.parametrize("k", [4, 16, 32])
def test_fewshot_leaves(k: int) -> None:
    banks = set()
    for task in (*GLUE, *SUPERGLUE, "scitail"):
        c = cfg(f"t5-base-fewshot-k{k}-{task}")
        assert c.data.k_shot == k and c.target_task == task and c.stage == "all"
        # C.8: a GLUE source as target never sees its own full-data TPV
        assert task not in c.source_tasks
        assert list(c.source_tasks) == [s for s in SOURCES if s != task]
        assert list(c.stage1.tasks) == [task]  # only the target TPV is learned (k rows)
        assert c.optim.max_steps == 1000 and c.stage1.max_steps == 1000  # C.3
        assert c.eval.every_steps == 50
        assert (c.optim.lr, c.optim.source_lr) == (pytest.approx(0.3), pytest.approx(0.4))
        assert c.bank_dir != "runs/bank/t5-base"
        banks.add(c.bank_dir)
    assert len(banks) == 14  # a bank per target, so a k-shot TPV never meets a full one
    seeded = load_recipe(f"t5-base-fewshot-k{k}-cb", ["seed=22"])
    assert seeded.bank_dir == f"runs/bank/t5-base-fewshot/k{k}/cb/seed22"


@pytest.mark.parametrize(("size", "batch"), [("small", 100), ("large", 16)])
def test_scaling_recipes(size: str, batch: int) -> None:
    for task in ("boolq", "multirc", "wic"):
        c = cfg(f"t5-{size}-dtvg-{task}")
        assert c.backbone.name_or_path == f"t5-{size}" and c.optim.batch_size == batch  # C.4
        assert c.bank_dir == f"runs/bank/t5-{size}"
    stage1 = cfg(f"t5-{size}-stage1")
    assert set(stage1.stage1.tasks) == set(SOURCES) | {"boolq", "multirc", "wic"}


def test_nlg_recipes_use_128_tokens_and_the_t5_base_bank() -> None:
    for task in NLG:
        c = cfg(f"t5-base-nlg-{task}")
        spec = get_task(task)
        assert (spec.max_source_length, spec.max_target_length) == (128, 128)  # C.6
        assert c.bank_dir == "runs/bank/t5-base" and list(c.source_tasks) == list(SOURCES)


def test_help_lists_the_paper_recipes() -> None:
    from dtvg_dist.train import _recipe_listing

    listing = _recipe_listing()
    assert "llama3-8b-cb" in listing and "Table 5" in listing


def _paper_count(text: str) -> float:
    """'232K' / '76.8k' -> thousands."""
    return float(text.rstrip("Kk"))


@pytest.mark.parametrize(("name", "d"), [("t5-base-attempt", 768), ("t5-base-dept", 768),
                                         ("llama3.2-1b-dept", 2048), ("llama3.2-1b-attempt", 2048)])
def test_method_recipes_have_the_papers_parameter_counts(name: str, d: int) -> None:
    """ATTEMPT: Table 2's 232K for T5-base; DePT: PT's budget r d (76.8K for T5-base)."""
    from dtvg_dist.model.methods import get_method
    from dtvg_dist.reporting.paper_results import PAPER_PARAMS

    c = cfg(name)
    state = get_method(c.method).prompt_state(c, c.prompt.length, d, len(c.source_tasks))
    assert c.optim.weight_decay == 0.0  # both releases' optimizers
    if c.method == "dept":
        assert state.trainable == c.prompt.length * d  # exactly PT's budget
        assert c.dept.prompt_length == 60
    else:  # the release's trained tensors (attempt/utils/utils.py): the layer norm frozen
        assert state.trainable == c.prompt.length * d + 2 * 100 * d
    if d == 768:  # the paper's 232K counts the frozen norm's 2 d too
        norm = 2 * d if c.method == "attempt" else 0
        assert round((state.trainable + norm) / 1000, 1) == pytest.approx(_paper_count(PAPER_PARAMS[c.method]), abs=0.5)


def test_recipe_tasks_answers_for_every_stage():
    """The one answer to "which tasks does this recipe train" (pipeline, grid,
    plan and the data command): per stage, and every task whose data a run reads."""
    from dtvg_dist.orchestration.config import RecipeError, recipe_tasks

    base = load_recipe("t5-base-dtvg-rte", ["source_tasks=[mnli,qnli,rte]", "target_as_source=true",
                                            "data.mix_tasks=[sst2]"])
    assert recipe_tasks(base, "1") == ["mnli", "qnli", "rte"]  # the target once
    assert recipe_tasks(base, "pre") == ["mnli", "qnli", "rte"]
    assert recipe_tasks(base, "2") == ["rte"]
    assert recipe_tasks(base, "all") == ["mnli", "qnli", "rte"]
    assert recipe_tasks(base) == ["mnli", "qnli", "rte", "sst2"]
    listed = load_recipe("t5-base-dtvg-rte", ["stage1.tasks=[cola,rte]", "source_tasks=[mnli]"])
    assert recipe_tasks(listed, "1") == ["cola", "rte"]
    assert recipe_tasks(listed, "all") == ["cola", "rte"]
    assert recipe_tasks(listed) == ["cola", "rte", "mnli"]
    with pytest.raises(RecipeError, match="stage='3' is not one of 1, pre, 2, all"):
        recipe_tasks(listed, "3")


def test_a_recipe_loads_as_a_fresh_copy_and_an_edit_of_its_file_shows(tmp_path) -> None:
    """Merged recipes are cached per version of their files: a caller's
    change never reaches the next load, and an edited base (with a new
    mtime) is read again."""
    base = tmp_path / "base.yaml"
    base.write_text("base: tiny-t5\noptim:\n  lr: 0.125\n")
    leaf = tmp_path / "leaf.yaml"
    leaf.write_text("base: base.yaml\nseed: 7\n")
    first = load_recipe(str(leaf))
    assert (first.optim.lr, first.seed, first.recipe) == (0.125, 7, "leaf")
    first.optim.lr = 9.0
    assert load_recipe(str(leaf)).optim.lr == 0.125
    assert load_recipe(str(leaf), ["optim.lr=0.5"]).optim.lr == 0.5
    assert load_recipe(str(leaf)).optim.lr == 0.125
    stat = base.stat()
    base.write_text("base: tiny-t5\noptim:\n  lr: 0.25\n")
    os.utime(base, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # a later version, whatever the clock
    assert load_recipe(str(leaf)).optim.lr == 0.25
