"""Stage 1 (prompt tuning per task -> TPV bank) and stage 2 (the recipe's
method on the target, see dtvg_dist.model.methods), wired from a validated recipe."""

from __future__ import annotations

import contextlib
import difflib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from omegaconf import DictConfig, OmegaConf

from dtvg_dist.data import DataSettings, MixedSplit
from dtvg_dist.data.module import TaskData
from dtvg_dist.data.tokenized import TokenizedSplit
from dtvg_dist.model.backbone import Backbone, BackboneSettings, load_backbone
from dtvg_dist.model.methods import (
    BuildContext,
    PreStageContext,
    RunSettings,
    get_method,
    trainable_count,
)
from dtvg_dist.model.prompt import SoftPrompt, sample_p_init
from dtvg_dist.orchestration.config import RecipeError, recipe_tasks, resolved_yaml
from dtvg_dist.store import run_files
from dtvg_dist.store.bank import BankEntry, entry_path, load_bank, load_entry, save_entry
from dtvg_dist.store.locks import EntryClaim, RunLocked, run_lock
from dtvg_dist.store.run_files import RunFiles
from dtvg_dist.tasks import TASKS
from dtvg_dist.training.distributed import (
    accelerator_for_recipe,
    all_reduce_sum,
    gathered,
    zero_init,
)
from dtvg_dist.training.signals import stop_request
from dtvg_dist.training.threads import apply_threads, pinned_threads
from dtvg_dist.training.tracking import flat_config
from dtvg_dist.training.trainer import RunResult, RunSpec, Trainer

log = logging.getLogger("dtvg_dist.orchestration.pipeline")
SYNTHETIC_TOKENIZER = "synthetic"
SYNTHETIC_PRETRAINED = "synthetic-pretrained"


@dataclass
class PipelineResult:
    output_dir: Path
    stage1: dict[str, RunResult] = field(default_factory=dict)
    stage2: RunResult | None = None


def output_dir(cfg: DictConfig) -> Path:
    return Path(cfg.output_dir) if cfg.output_dir else run_files.run_dir(run_files.RUNS_DIR, cfg.recipe, cfg.seed)


def check_tasks(cfg: DictConfig) -> None:
    """Register the synthetic tasks when the recipe names one; refuse unknown task names."""
    from dtvg_dist.tasks.synthetic import register_if_named

    register_if_named(recipe_tasks(cfg))
    names = list(TASKS)
    for key, task in [("target_task", cfg.target_task)] + [
        (f"source_tasks[{i}]", t) for i, t in enumerate(cfg.source_tasks)
    ] + [(f"stage1.tasks[{i}]", t) for i, t in enumerate(cfg.stage1.tasks)]:
        if task not in names:
            close = difflib.get_close_matches(task, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise RecipeError(f"{key}={task!r} is not a registered task{hint}")


def backbone_settings(cfg: DictConfig, out: Path, weights: bool = True) -> BackboneSettings:
    """The recipe's backbone node as settings, with the synthetic tokenizer and
    backbone resolved to folders (`out`: the run's output dir). `weights`
    false (the data command: config and tokenizer only): a synthetic-pretrained
    backbone stays its backbone.config, untaught."""
    node = OmegaConf.to_container(cfg.backbone, resolve=True)
    settings = BackboneSettings(**node)  # type: ignore[arg-type]
    synthetic = settings.name_or_path == SYNTHETIC_PRETRAINED
    if settings.tokenizer == SYNTHETIC_TOKENIZER or (synthetic and not weights and settings.tokenizer is None):
        from dtvg_dist.model.synthetic import ensure_tokenizer
        from dtvg_dist.tasks.synthetic import vocabulary_hash

        settings.tokenizer = str(ensure_tokenizer(out / f"tokenizer-{vocabulary_hash()}"))
    if synthetic:
        if weights:
            settings = _synthetic_pretrained(settings)
        else:
            settings.name_or_path = None
    return settings



def recipe_tokenizer(cfg: Any) -> tuple[Any, str, str]:
    """The recipe's tokenizer and model family, resolved as a run resolves
    them (`backbone_settings`, `load_config`, `load_tokenizer`) without
    loading weights."""
    import tempfile

    from dtvg_dist.model.backbone import (
        family_of,
        load_config,
        load_tokenizer,
        resolve_pretrained,
        validate_settings,
    )
    synthetic = (cfg.backbone.name_or_path == SYNTHETIC_PRETRAINED
                 or cfg.backbone.tokenizer == SYNTHETIC_TOKENIZER)
    folder = Path(tempfile.gettempdir()) / "dtvg-dataset-check"
    settings = backbone_settings(cfg, folder, weights=False)
    validate_settings(settings)
    where = resolve_pretrained(settings)
    hf_config, _ = load_config(settings)
    family = family_of(hf_config)
    tokenizer = load_tokenizer(settings)
    if synthetic:
        return tokenizer, family, "backbone: synthetic (built at run time); tokenizer: the synthetic suite's"
    if settings.config is not None:
        config_note = "backbone.config (random weights)"
    else:
        config_note = f"{settings.name_or_path} from {where['config']}"
    tok_src = settings.tokenizer or settings.name_or_path
    note = f"backbone config: {config_note} ({family}); tokenizer: {tok_src} from {where.get('tokenizer', '?')}"
    return tokenizer, family, note

def _synthetic_pretrained(settings: BackboneSettings) -> BackboneSettings:
    """`backbone.name_or_path: synthetic-pretrained` with `backbone.config`:
    build that architecture, teach it the synthetic rules (once, cached by
    config and seed under the cache root) and load it as a local checkpoint."""
    import hashlib
    import json

    from dtvg_dist.model.synthetic import ensure_pretrained_backbone

    if settings.config is None:
        raise RecipeError("backbone.name_or_path=synthetic-pretrained needs backbone.config")
    from dtvg_dist.model.synthetic import PRETRAINING_VERSION
    from dtvg_dist.tasks.synthetic import vocabulary_hash

    key = json.dumps(
        {"config": settings.config, "seed": settings.init_seed, "vocab": vocabulary_hash(),
         "pretraining": PRETRAINING_VERSION},
        sort_keys=True,
    )
    folder = run_files.cache_root() / f"synthetic-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    # one thread whatever the run's count: the cache key has no thread count
    with pinned_threads(1):
        folder = ensure_pretrained_backbone(folder, dict(settings.config), seed=settings.init_seed)
    settings.name_or_path, settings.config, settings.tokenizer = str(folder), None, None
    return settings


class Pipeline:
    def __init__(self, cfg: DictConfig, accelerator: Accelerator | None = None) -> None:
        check_tasks(cfg)
        # before anything computes (the synthetic backbone's teaching too)
        apply_threads(cfg.distributed.threads)
        self.cfg = cfg
        self.out = output_dir(cfg)
        self.acc = accelerator or accelerator_for_recipe(cfg, str(self.out))
        self._locks = contextlib.ExitStack()
        self._entry_claims = self._locks.enter_context(contextlib.ExitStack())
        self._lock_output_dir()
        self.bank_used: dict[str, Path] = {}  # task -> entry file this run was built from
        # Rank 0 first: ranks must not write the tokenizer (or a synthetic
        # checkpoint) at once; no zero.Init there, it would need every rank.
        with self.acc.main_process_first(), zero_init(self.acc, False):
            settings = backbone_settings(cfg, self.out)
        # ZeRO-3: checkpoints load partitioned (zero.Init); config-built random
        # weights are built whole, so they match a single-process build.
        with zero_init(self.acc, cfg.distributed.zero_init and settings.config is None):
            self.backbone: Backbone = load_backbone(settings, device=self.acc.device)
        self.bank_dir = Path(cfg.bank_dir) if cfg.bank_dir else run_files.default_bank_dir(self.backbone.name)
        # The data settings enter here, coerced once; every task's TaskData shares them.
        self.data_settings = DataSettings.coerce(OmegaConf.to_container(cfg.data, resolve=True))
        self._data: dict[str, TaskData] = {}
        log.info(
            "backbone %s (%s, %s, attention %s), bank %s, output %s",
            self.backbone.name, self.backbone.family, self.backbone.dtype,
            self.backbone.attn_implementation, self.bank_dir, self.out,
        )
        RunFiles(self.out, enabled=self.acc.is_main_process).write_config(resolved_yaml(cfg))
        if cfg.logging.trackers:
            # Flat scalar values: TensorBoard's hparams refuse nested dicts, lists and None.
            config = flat_config(OmegaConf.to_container(cfg, resolve=True))
            self.acc.init_trackers(cfg.recipe, config=config)
            where = f"; TensorBoard event files in {self.out / cfg.recipe}" if "tensorboard" in cfg.logging.trackers else ""
            log.info("trackers %s (project %s)%s", list(cfg.logging.trackers), cfg.recipe, where)

    def _agree(self, value: int) -> int:
        """The main process's `value` on every rank (the others pass 0)."""
        return int(all_reduce_sum(self.acc, torch.tensor(float(value), device=self.acc.device)).item())

    def _lock_output_dir(self) -> None:
        """Hold output_dir for this pipeline's life: a second process on the
        same folder stops here, before writing anything."""
        refused: RunLocked | None = None
        if self.acc.is_main_process:
            try:
                self._locks.enter_context(run_lock(self.out))
            except RunLocked as err:
                refused = err
        if self._agree(refused is not None):
            raise refused or RunLocked(f"run folder {self.out} is in use by another process")

    def close(self) -> None:
        """Give the output_dir lock back."""
        self._locks.close()

    def _load_bank(self, tasks: list[str], r: int) -> dict[str, BankEntry]:
        entries = load_bank(self.bank_dir, tasks, backbone=self.backbone.name,
                            d=self.backbone.hidden_size, r=r)
        self.bank_used.update({task: entry.path for task, entry in entries.items()})
        return entries

    def _claim_entry(self, name: str) -> bool:
        """Take stage 1's lock on bank entry `name` (giving back the previous
        entry's), polled by the main process with every rank in step; True
        when another process held it first and has written the entry
        meanwhile, so this one uses it instead of training it again."""
        self._entry_claims.close()
        claim = EntryClaim(self.bank_dir, name) if self.acc.is_main_process else None
        deadline = time.monotonic() + self.cfg.stage1.lock_wait_s
        status, wait = 0, 0.0  # 0 waiting, 1 taken, 2 taken after a wait, 3 gave up
        while status == 0:
            if claim is not None:
                if claim.try_take(wait):
                    status = 2 if claim.waited else 1
                elif time.monotonic() >= deadline:
                    status = 3
                elif wait == 0.0:
                    log.info("stage 1: bank entry %s is being trained by %s; waiting up to %s s",
                             name, claim.holder(), self.cfg.stage1.lock_wait_s)
                wait = max(0.0, min(5.0, deadline - time.monotonic()))
            status = self._agree(status)
        if status == 3:
            raise RunLocked(
                f"bank entry {name} in {self.bank_dir} is still being trained by "
                f"{claim.holder() if claim else 'another process'} after "
                f"stage1.lock_wait_s={self.cfg.stage1.lock_wait_s}; run again when it has finished"
            )
        if claim is not None:
            self._entry_claims.callback(claim.release)
        done = status == 2 and entry_path(self.bank_dir, name).is_file()
        if done:
            log.info("stage 1: %s was trained meanwhile by another process; using its bank entry",
                     name)
        return done

    # -------------------------------------------------------------------- data
    def data(self, task_name: str) -> TaskData:
        """The task's data (one object per task: files, splits, tokenizing, collation)."""
        if task_name not in self._data:
            self._data[task_name] = TaskData(
                task_name, self.data_settings, self.backbone.tokenizer, self.backbone.family,
                seed=self.cfg.seed, accelerator=self.acc,
            )
        return self._data[task_name]

    def splits(self, task_name: str) -> dict[str, TokenizedSplit]:
        """The task's tokenized train / validation / test examples: built once
        into the data cache by the main process, memory-mapped by every rank."""
        return self.data(task_name).splits()

    # ------------------------------------------------------------------ stage 1
    def stage1_tasks(self) -> list[str]:
        return recipe_tasks(self.cfg, "1")

    def _existing_p_init(self, tasks: list[str]) -> BankEntry | None:
        """An entry of the bank to take P_init from: one of `tasks` first,
        else any entry the bank holds."""
        candidates = [entry_path(self.bank_dir, name) for name in tasks]
        candidates += sorted(self.bank_dir.glob("*.safetensors"))
        for path in candidates:
            if path.is_file():
                return load_entry(path)
        return None

    def p_init(self, tasks: list[str]) -> torch.Tensor:
        """The bank's P_init when it has one (never re-sampled), else a new sample."""
        entry = self._existing_p_init(tasks)
        r = self.cfg.prompt.length
        if entry is not None:
            self._load_bank([entry.task], r)
            log.info("P_init from bank entry %s (seed %d)", entry.path, entry.init_seed)
            return entry.p_init
        weight = self.backbone.model.get_input_embeddings().weight
        with gathered([weight]):  # ZeRO-3: the table is partitioned (every rank gathers)
            p_init, ids = sample_p_init(weight, r, self.cfg.prompt.init_seed, self.cfg.prompt.init_top_k)
        log.info("P_init sampled: %d rows of ids < %d, seed %d", r, self.cfg.prompt.init_top_k,
                 self.cfg.prompt.init_seed)
        return p_init

    def run_stage1(self) -> dict[str, RunResult]:
        cfg = self.cfg
        tasks = self.stage1_tasks()
        todo = [t for t in tasks if cfg.stage1.overwrite or not entry_path(self.bank_dir, t).is_file()]
        for skipped in sorted(set(tasks) - set(todo)):
            log.info("stage 1: bank already has %s, skipping", skipped)
        results = {}
        p_init = self.p_init(tasks) if todo else None
        for name in todo:
            if self._claim_entry(name):
                continue
            is_source = name in cfg.source_tasks
            max_steps = (cfg.stage1.source_max_steps if is_source else None) or cfg.stage1.max_steps
            data = self.splits(name)
            spec = RunSpec(
                name=f"stage1/{name}",
                task=self.data(name).task,
                method="pt",
                prompt=SoftPrompt(p_init.to(self.acc.device)),
                run_dir=run_files.stage1_dir(self.out, name),
                max_steps=max_steps or cfg.optim.max_steps,
                lr=cfg.stage1.lr or cfg.optim.lr,
                source_lr=cfg.optim.source_lr,
                train=data["train"],
                validation=data["validation"],
                test=data["test"],
                extra_results={"stage": 1, "init_seed": cfg.prompt.init_seed},
                bank_entries=dict(self.bank_used),
                stage=1,
            )
            result = Trainer(cfg, spec, self.backbone, self.acc).run()
            if self.acc.is_main_process:
                tpv = result.best_state["prompt"].cpu() - p_init.cpu()
                path = save_entry(
                    self.bank_dir, name, tpv, p_init, backbone=self.backbone.name,
                    init_seed=cfg.prompt.init_seed, steps=result.steps, best_score=result.best_score,
                )
                log.info("stage 1: %s -> bank entry %s", name, path)
            self.acc.wait_for_everyone()
            results[name] = result
        self._entry_claims.close()
        return results

    # ------------------------------------------------------- multi-task runs
    def train_mixture(
        self, *, name: str, prompt: torch.nn.Module, tasks: list[str], model_factory: Any,
        max_steps: int, lr: float, extra_results: dict[str, Any] | None = None,
    ) -> RunResult:
        """Train ``prompt`` on the union of the training examples of ``tasks``
        (examples-proportional mixing: one seeded permutation of the union,
        each example tagged with its task's index as ``task_id``), with the
        loss of ``model_factory``'s model. No validation: the last state is
        kept. Writes ``<output_dir>/<name>/``; what a method trains before
        stage 2 (MPT's source training) runs here."""
        train = [
            {**feature, "task_id": k}
            for k, task in enumerate(tasks)
            for feature in self.splits(task)["train"]
        ]
        spec = RunSpec(
            name=name,
            task=self.data(tasks[0]).task,
            method=self.cfg.method,
            prompt=prompt,
            run_dir=self.out / name,
            max_steps=max_steps,
            lr=lr,
            source_lr=lr,
            train=train,
            validation=[],
            test=[],
            extra_results={"mixture_tasks": list(tasks), **(extra_results or {})},
            model_factory=model_factory,
            select_last=True,
        )
        return Trainer(self.cfg, spec, self.backbone, self.acc).run()

    # ------------------------------------------------------------------ stage 2
    def stage2_prompt(self) -> tuple[torch.nn.Module, dict[str, Any]]:
        """The stage-2 prompt module of `method` and what results.json should
        say about it (the bank it came from, the chosen source or the rule).
        The method says which bank entries it reads and builds the module."""
        cfg = self.cfg
        method = get_method(cfg.method)
        entries = self._load_bank(method.bank_tasks(cfg), cfg.prompt.length)
        ctx = BuildContext.from_recipe(method, cfg, entries, self.backbone, self.acc.device, self.bank_dir)
        built = method.build(ctx)
        count = trainable_count(built.module)
        log.info("%s: %d trainable parameters", method.title, count)
        return built.module, {"bank_dir": str(self.bank_dir),
                              "p_init_seed": ctx.target.init_seed,
                              "trainable_parameters": count, **built.facts}

    def pre_stage_context(self) -> PreStageContext:
        """What the method's pre-stage gets: its typed settings and this
        pipeline's train_mixture as a callable (the model layer never holds
        the pipeline)."""
        method = get_method(self.cfg.method)
        return PreStageContext(
            RunSettings.from_recipe(self.cfg), method.settings(self.cfg), self.bank_dir,
            self.backbone, self.acc.device, self.acc.is_main_process, self.acc.wait_for_everyone,
            self.train_mixture,
        )

    def similarity_sources(self) -> tuple[list[str], torch.Tensor] | None:
        """The sources' stage-1 prompts when logging.source_similarity is on
        (Figure 1, bottom: which source SPoT finds most similar over training)."""
        cfg = self.cfg
        if not cfg.logging.source_similarity or not cfg.source_tasks:
            return None
        entries = load_bank(self.bank_dir, list(cfg.source_tasks), backbone=self.backbone.name,
                            d=self.backbone.hidden_size, r=cfg.prompt.length)
        names = list(cfg.source_tasks)
        return names, torch.stack([entries[n].prompt for n in names]).to(self.acc.device)

    def run_stage2(self) -> RunResult:
        cfg = self.cfg
        method = get_method(cfg.method)
        pre = method.pre_stage(self.pre_stage_context())  # e.g. MPT's source training
        prompt, extra = self.stage2_prompt()
        lr, second_lr = method.learning_rates(cfg)
        data = self.splits(cfg.target_task)
        train: Any = data["train"]
        if cfg.data.mix_tasks:  # Figure 1 (top): the target mixed with these tasks
            train = MixedSplit([train, *(self.splits(t)["train"] for t in cfg.data.mix_tasks)])
            log.info("stage 2: training on %s mixed with %s (%d examples, examples-proportional)",
                     cfg.target_task, ", ".join(cfg.data.mix_tasks), len(train))
        spec = RunSpec(
            name=f"stage2/{cfg.method}",
            task=self.data(cfg.target_task).task,
            method=cfg.method,
            prompt=prompt,
            run_dir=self.out,
            max_steps=cfg.optim.max_steps,
            lr=lr,
            source_lr=second_lr,
            train=train,
            validation=data["validation"],
            test=data["test"],
            extra_results={"stage": 2, "recipe": cfg.recipe, "seed": cfg.seed, **pre, **extra},
            bank_entries=dict(self.bank_used),
            similarity_sources=self.similarity_sources(),
        )
        return Trainer(cfg, spec, self.backbone, self.acc).run()

    def run(self) -> PipelineResult:
        result = PipelineResult(self.out)
        stop_request()  # from here on SIGTERM / SIGUSR1 stop training cleanly
        try:
            if self.cfg.stage in ("1", "all"):
                result.stage1 = self.run_stage1()
            if self.cfg.stage == "pre":
                get_method(self.cfg.method).pre_stage(self.pre_stage_context())
            if self.cfg.stage in ("2", "all"):
                result.stage2 = self.run_stage2()
        finally:
            self.close()
        self.acc.end_training()
        return result
