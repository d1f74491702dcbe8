"""The recipe schema, recipe loading and `key=value` overrides.

A recipe is a YAML file in the package's `recipes/` (or a path) that may
name a `base` recipe to start from: a packaged name, or a path relative to
the recipe's own folder. `python -m dtvg_dist.copy recipe NAME DEST` copies a
packaged one out to edit. Every key is checked against the schema below, so a
typo is an error that names the key and the closest valid one, never a
silently ignored setting.
"""

from __future__ import annotations

import copy
import difflib
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from dtvg_dist.core import GROUPING_RULES
from dtvg_dist.data import TEMPLATES, DataSettings
from dtvg_dist.errors import RecipeError
from dtvg_dist.model.backbone import BackboneSettings
from dtvg_dist.model.methods import (
    AttemptSettings,
    DeptSettings,
    MptSettings,
    get_method,
    method_names,
)
from dtvg_dist.training.tracking import missing_tracker_package
from dtvg_dist.utils import LAUNCH_CONFIGS_DIR, RECIPES_DIR

# pre: only the method's work between stage 1 and stage 2 (MPT's source
# training), so that a grid runs it once for every target that reuses it.
STAGES = ("1", "pre", "2", "all")
# The registered prompt methods (dtvg_dist/model/methods/): pt, spot, tpv,
# dtvg, attempt, dept, ... Each may have a settings node named after it.
METHODS = method_names()


@dataclass
class PromptSettings:
    length: int = 100  # r, soft prompt tokens
    init_seed: int = 0  # seed of the P_init sample (stored in the bank)
    init_top_k: int = 5000  # sample P_init rows from ids 0..top_k-1 (paper C.8)


@dataclass
class GroupingSettings:
    # greedy (Algorithm 2 as printed) | first-drop (section 3.2's text) |
    # prefix-argmax (the released code) | positive | exhaustive-kc (the released
    # KC ablation) | exhaustive-kc-nonempty | all | none
    rule: str = "greedy"
    fixed: bool = False  # keep the group `rule` picks at step 0 for the whole run (Figure 5)


@dataclass
class OptimSettings:
    lr: float = 0.3  # target prompt / TPV and alpha_t (paper C.7)
    source_lr: float = 0.4  # source alphas (DTVG only)
    weight_decay: float = 1e-5  # stage 1 (and stage 2 unless stage2_weight_decay is set)
    # Adam's epsilon; 1e-8 is torch's and the transformers Trainer's default
    # (TrainingArguments.adam_epsilon), which the released stage 1 runs with.
    eps: float = 1e-8
    # Stage 2's AdamW; None = the stage-1 value above. The released stage 2
    # builds its own transformers.AdamW(groups, lr=...) (zpy2477/DTVG
    # run_seq2seq.py lines 537-541), whose defaults in transformers 4.45.2
    # (optimization.py, AdamW.__init__) are weight_decay=0.0 and eps=1e-6:
    # the paper recipes set those (recipes/t5-base.yaml).
    stage2_weight_decay: float | None = None
    stage2_eps: float | None = None
    warmup_steps: int = 500
    max_steps: int = 30000
    batch_size: int = 32  # global batch per optimizer step, per micro-step
    grad_accum: int = 1
    max_grad_norm: float = 1.0


@dataclass
class Stage1Settings:
    """Prompt tuning of each task that the bank lacks (TPV learning)."""

    tasks: list[str] = field(default_factory=list)  # default: sources + target
    max_steps: int | None = None  # default: optim.max_steps
    source_max_steps: int | None = None  # for the source tasks (paper: 300k)
    lr: float | None = None  # default: optim.lr
    overwrite: bool = False  # retrain tasks the bank already has
    lock_wait_s: float = 3600.0  # wait this long for another process training the same entry


@dataclass
class EvalSettings:
    every_steps: int = 1000
    batch_size: int = 64
    max_new_tokens: int | None = None  # default: the task's max target length
    rank_classification: bool = False  # classification: score the label words instead of generating
    # QA (MRQA, SQuAD): "all" = best over every gold answer; "target" = against
    # the trained target (answers[0]) decoded from its label ids, the released
    # ATTEMPT/DePT data path (ReCoRD keeps all answers there too).
    qa_references: str = "all"
    # Generation (GEM): "text" = the target text; "target" = its label ids
    # decoded (T5: truncated at 128 tokens), what the released code scores.
    nlg_references: str = "text"
    # Stop after this many validations in a row without a better selection
    # score (null: never; the paper's runs train to max_steps).
    early_stopping_patience: int | None = None


@dataclass
class LoggingSettings:
    every_steps: int = 10
    trackers: list[str] = field(default_factory=list)  # tensorboard, wandb, mlflow
    progress_bar: bool = True
    # A torch.profiler trace of a few steps after warm-up into <output_dir>/profile/
    profile: bool = False
    # Every logging.every_steps, the cosine of the mean-pooled prompt with each
    # source's stage-1 prompt (SPoT's measure) to metrics.jsonl rows with
    # split "source_similarity" (Figure 1, bottom).
    source_similarity: bool = False


@dataclass
class DistributedSettings:
    timeout_s: int = 600  # collective timeout: a dead rank ends the job
    zero_init: bool = True  # partition the backbone at construction under ZeRO-3
    # CPU threads of each process (torch.set_num_threads), part of the run:
    # results differ with the thread count (dtvg_dist/training/threads.py);
    # null leaves it to OMP_NUM_THREADS / torch's default (not reproducible)
    threads: int | None = 1


@dataclass
class Recipe:
    recipe: str = ""
    description: str = ""
    base: str | None = None
    stage: str = "all"
    method: str = "dtvg"
    seed: int = 42
    target_task: str = ""
    source_tasks: list[str] = field(default_factory=list)
    # let target_task also be one of source_tasks (its own stage-1 TPV among the
    # sources): what the released scripts run for a high-resource target
    target_as_source: bool = False
    output_dir: str | None = None  # default runs/<recipe>/<seed>
    bank_dir: str | None = None  # default runs/bank/<backbone name>
    resume: bool = False
    backbone: BackboneSettings = field(default_factory=BackboneSettings)
    data: DataSettings = field(default_factory=DataSettings)
    prompt: PromptSettings = field(default_factory=PromptSettings)
    grouping: GroupingSettings = field(default_factory=GroupingSettings)
    attempt: AttemptSettings = field(default_factory=AttemptSettings)
    dept: DeptSettings = field(default_factory=DeptSettings)
    mpt: MptSettings = field(default_factory=MptSettings)
    optim: OptimSettings = field(default_factory=OptimSettings)
    stage1: Stage1Settings = field(default_factory=Stage1Settings)
    eval: EvalSettings = field(default_factory=EvalSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    distributed: DistributedSettings = field(default_factory=DistributedSettings)


def recipe_tasks(cfg: DictConfig, stage: str | None = None) -> list[str]:
    """Which tasks this recipe trains, each once, in order: the one answer for
    the pipeline, the grid, `plan` and the data command.

    stage "1": stage1.tasks when set, else the sources and the target (one
    bank entry each; with target_as_source the target once); "pre": the
    sources (a method's pre-stage, MPT's source training); "2": the target;
    "all": stage 1's, then the target. No stage: every task a run of the
    recipe reads data of (stage 1's, the sources, the target, data.mix_tasks):
    what the data command checks and the synthetic registry must hold.
    """
    first = [str(t) for t in cfg.stage1.tasks] or [*map(str, cfg.source_tasks), str(cfg.target_task)]
    by_stage = {
        "1": first,
        "pre": [str(t) for t in cfg.source_tasks],
        "2": [str(cfg.target_task)],
        "all": [*first, str(cfg.target_task)],
    }
    if stage is None:
        mixed = cfg.data.get("mix_tasks") or []
        names = [*first, *map(str, cfg.source_tasks), str(cfg.target_task), *map(str, mixed)]
    elif stage in by_stage:
        names = by_stage[stage]
    else:
        raise RecipeError(f"stage={stage!r} is not one of {', '.join(by_stage)}")
    return list(dict.fromkeys(names))


def list_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def list_launch_configs() -> list[str]:
    return sorted(p.name for p in LAUNCH_CONFIGS_DIR.glob("*.yaml"))


def launch_config_path(name: str) -> Path:
    """A packaged launch config by name (``cpu_ddp_2proc`` or ``cpu_ddp_2proc.yaml``),
    as an absolute path that exists wherever the user stands."""
    stem = Path(name).name
    path = LAUNCH_CONFIGS_DIR / (stem if stem.endswith((".yaml", ".json")) else f"{stem}.yaml")
    if not path.is_file():
        close = difflib.get_close_matches(stem, list_launch_configs(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise RecipeError(f"launch config {name!r} not found in {LAUNCH_CONFIGS_DIR}{hint}")
    return path


def recipe_path(name: str, relative_to: Path | None = None) -> Path:
    """A recipe name in the package's recipes/, or a path to a YAML file
    (relative to the working directory, or to `relative_to`: the folder of
    the recipe whose `base:` names it)."""
    candidate = Path(name).expanduser()
    if candidate.suffix in (".yaml", ".yml"):
        for where in [*([relative_to / candidate] if relative_to else []), candidate]:
            if where.is_file():
                return where.resolve()
    path = RECIPES_DIR / f"{name}.yaml"
    if not path.is_file():
        close = difflib.get_close_matches(name, list_recipes(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise RecipeError(
            f"recipe {name!r} not found (no file {name!r} and no {path}){hint} "
            "Run `python -m dtvg_dist.train --help` for the list."
        )
    return path


def _valid_keys(node: Any, prefix: str = "") -> list[str]:
    keys = []
    if isinstance(node, DictConfig):
        for key in node:
            full = f"{prefix}{key}"
            keys.append(full)
            child = node._get_node(key)
            if isinstance(child, DictConfig) and OmegaConf.get_type(child) not in (dict, None):
                keys.extend(_valid_keys(child, full + "."))
    return keys


def _closest_key_error(schema: DictConfig, err: OmegaConfBaseException, source: str) -> RecipeError:
    full_key = getattr(err, "full_key", None) or str(err)
    valid = _valid_keys(schema)
    close = difflib.get_close_matches(str(full_key), valid, n=1, cutoff=0.0)
    hint = f"; the closest valid key is {close[0]!r}" if close else ""
    return RecipeError(f"unknown key {full_key!r} in {source}{hint}")


def _merge(schema: DictConfig, update: DictConfig, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(schema, update)
    except ConfigKeyError as err:
        raise _closest_key_error(schema, err, source) from None
    except ValidationError as err:
        key = getattr(err, "full_key", "?")
        raise RecipeError(f"bad value for {key!r} in {source}: {err.msg}") from None


def _recipe_chain(
    name: str, seen: tuple[str, ...] = (), relative_to: Path | None = None
) -> list[tuple[str, int]]:
    """The recipe's files, its furthest base first, each as (path, version:
    its mtime in ns), which is what the parse and merge caches key on."""
    path = recipe_path(name, relative_to)
    if str(path) in seen:
        raise RecipeError(f"recipe {path} is its own base (cycle {' -> '.join(seen)})")
    layer = (str(path), path.stat().st_mtime_ns)
    node = _parsed(*layer)
    if not isinstance(node, DictConfig):
        raise RecipeError(f"recipe {path} must be a YAML mapping")
    base = node.get("base")
    chain = _recipe_chain(str(base), (*seen, str(path)), path.parent) if base else []
    return [*chain, layer]


@functools.lru_cache(maxsize=1024)
def _parsed(path: str, mtime_ns: int) -> Any:
    """A recipe file as parsed YAML, once per version of the file (only ever
    read: merging copies it)."""
    return OmegaConf.load(path)


@functools.lru_cache(maxsize=1024)
def _merged(layers: tuple[tuple[str, int], ...]) -> DictConfig:
    """The schema merged with a chain of recipe files (path, version), once
    per chain: a grid or the planner loads the same recipes hundreds of times
    and merging is most of the cost (each merge deep-copies the config).
    Callers get a copy."""
    cfg = _schema()
    for path, mtime_ns in layers:
        cfg = _merge(cfg, _parsed(path, mtime_ns), path)
    return cfg


@functools.lru_cache(maxsize=1)
def _schema_template() -> DictConfig:
    return OmegaConf.structured(Recipe)


def _schema() -> DictConfig:
    """A fresh copy of the typed schema (building it is the slow part)."""
    return copy.deepcopy(_schema_template())


def parse_overrides(overrides: list[str]) -> DictConfig:
    """`a.b=value` strings -> a config (values parsed as YAML)."""
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise RecipeError(f"override {item!r} is not of the form key=value (e.g. optim.lr=0.1)")
    try:
        return OmegaConf.from_dotlist(overrides)
    except OmegaConfBaseException as err:
        raise RecipeError(f"could not parse overrides {overrides}: {err}") from None


def load_recipe(name: str, overrides: list[str] | None = None) -> DictConfig:
    """Schema <- base recipes <- the recipe <- command-line overrides, then checks."""
    cfg = copy.deepcopy(_merged(tuple(_recipe_chain(name))))
    # The run is named after the leaf recipe, never after a base it inherits.
    path = Path(name)
    cfg.recipe = path.stem if path.suffix in (".yaml", ".yml") else path.name
    if overrides:
        cfg = _merge(cfg, parse_overrides(list(overrides)), "the command-line overrides")
    validate(cfg)
    return cfg


def load_run_config(path: Path, overrides: list[str] | None = None) -> DictConfig:
    """A run's resolved `config.yaml` read back into the schema, then `key=value`
    overrides, checked like a recipe (for commands that reuse a finished run)."""
    try:
        node = OmegaConf.load(path)
    except (OSError, OmegaConfBaseException) as err:
        raise RecipeError(f"could not read {path}: {err}") from None
    if not isinstance(node, DictConfig):
        raise RecipeError(f"{path} must be a YAML mapping")
    cfg = _merge(_schema(), node, str(path))
    cfg.logging.trackers = []  # reading a run back records no experiment
    cfg = _merge(cfg, parse_overrides(list(overrides or [])), "the command-line overrides")
    validate(cfg)
    return cfg


def _one_of(cfg: DictConfig, key: str, choices: tuple[str, ...]) -> None:
    value = OmegaConf.select(cfg, key)
    if str(value) not in choices:
        raise RecipeError(f"{key}={value!r} is not one of {', '.join(choices)}")


def _positive(cfg: DictConfig, key: str, allow_zero: bool = False) -> None:
    value = OmegaConf.select(cfg, key)
    if value is None:
        return
    if value < 0 or (value == 0 and not allow_zero):
        raise RecipeError(f"{key}={value!r} must be {'>= 0' if allow_zero else '> 0'}")


def validate(cfg: DictConfig) -> None:
    """Value checks the types cannot express; each error names its key."""
    cfg.stage = str(cfg.stage)
    _one_of(cfg, "stage", STAGES)
    _one_of(cfg, "method", METHODS)
    if cfg.grouping.rule == "fixed":
        raise RecipeError(
            "grouping.rule='fixed' is now grouping.fixed=true: it keeps the step-0 group of "
            "grouping.rule (any rule), e.g. grouping.rule=greedy grouping.fixed=true"
        )
    _one_of(cfg, "grouping.rule", GROUPING_RULES)
    _one_of(cfg, "data.template", TEMPLATES)
    _one_of(cfg, "eval.qa_references", ("all", "target"))
    _one_of(cfg, "eval.nlg_references", ("text", "target"))
    if not cfg.target_task:
        raise RecipeError("target_task is not set (e.g. target_task=rte)")
    method = get_method(cfg.method)
    if method.uses_sources and cfg.stage != "1" and not cfg.source_tasks:
        raise RecipeError(f"method={cfg.method} needs source_tasks (a list of task names)")
    problem = method.check(cfg)
    if problem:
        raise RecipeError(problem)
    if len(set(cfg.source_tasks)) != len(cfg.source_tasks):
        raise RecipeError(f"source_tasks {list(cfg.source_tasks)} names a task twice")
    if cfg.target_task in cfg.source_tasks and not cfg.target_as_source:
        raise RecipeError(
            f"target_task {cfg.target_task!r} is also in source_tasks; set target_as_source=true "
            "to keep the target's own TPV among the sources"
        )
    if cfg.target_as_source and cfg.target_task not in cfg.source_tasks:
        raise RecipeError(
            f"target_as_source=true but target_task {cfg.target_task!r} is not in source_tasks"
        )
    if cfg.data.template == "dtvg-release" and cfg.eval.rank_classification:
        raise RecipeError(
            "data.template=dtvg-release trains answers led by a BOS token (as the released code); "
            "eval.rank_classification scores the label words without it: use generation"
        )
    for key in ("prompt.length", "prompt.init_top_k", "optim.max_steps", "optim.batch_size",
                "optim.grad_accum", "eval.every_steps", "eval.batch_size", "logging.every_steps",
                "stage1.max_steps", "stage1.source_max_steps", "distributed.timeout_s",
                "eval.max_new_tokens", "eval.early_stopping_patience"):
        _positive(cfg, key)
    for key in ("optim.lr", "optim.source_lr", "stage1.lr", "optim.max_grad_norm", "optim.eps",
                "optim.stage2_eps"):
        _positive(cfg, key)
    for key in ("optim.warmup_steps", "optim.weight_decay", "optim.stage2_weight_decay"):
        _positive(cfg, key, allow_zero=True)
    for tracker in cfg.logging.trackers:
        # Checked here, before any model loads: accelerate would only warn and train untracked.
        problem = missing_tracker_package(str(tracker))
        if problem:
            raise RecipeError(f"logging.trackers: {problem}")


def resolved_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)
