"""Stage 1 (prompt tuning per task -> TPV bank) and stage 2 (PT, SPoT or
DTVG transfer on the target), wired from a validated recipe."""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from omegaconf import DictConfig, OmegaConf

from dtvg_dist.config import RecipeError, resolved_yaml
from dtvg_dist.data import DataSettings
from dtvg_dist.data.tokenized import TokenizedSplit, tokenized_splits
from dtvg_dist.model.backbone import Backbone, BackboneSettings, load_backbone
from dtvg_dist.model.prompt import (
    DTVGPrompt,
    SoftPrompt,
    sample_p_init,
    spot_pick_source,
    tpv_pick_source,
)
from dtvg_dist.store.bank import BankEntry, entry_path, load_bank, load_entry, save_entry
from dtvg_dist.store.run_files import RunFiles
from dtvg_dist.tasks import TASKS, get_task
from dtvg_dist.training.distributed import accelerator_for_recipe, gathered, zero_init
from dtvg_dist.training.tracking import flat_config
from dtvg_dist.training.trainer import RunResult, RunSpec, Trainer

log = logging.getLogger("dtvg_dist.pipeline")
SYNTHETIC_TOKENIZER = "synthetic"
SYNTHETIC_PRETRAINED = "synthetic-pretrained"


@dataclass
class PipelineResult:
    output_dir: Path
    stage1: dict[str, RunResult] = field(default_factory=dict)
    stage2: RunResult | None = None


def output_dir(cfg: DictConfig) -> Path:
    return Path(cfg.output_dir or f"runs/{cfg.recipe}/{cfg.seed}")


def check_tasks(cfg: DictConfig) -> None:
    """Register the synthetic tasks when the recipe names one; refuse unknown task names."""
    if any(name.startswith("syn_") for name in [cfg.target_task, *cfg.source_tasks]):
        from dtvg_dist.model.synthetic import register_synthetic_tasks

        register_synthetic_tasks()
    names = list(TASKS)
    for key, task in [("target_task", cfg.target_task)] + [
        (f"source_tasks[{i}]", t) for i, t in enumerate(cfg.source_tasks)
    ]:
        if task not in names:
            close = difflib.get_close_matches(task, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise RecipeError(f"{key}={task!r} is not a registered task{hint}")


def backbone_settings(cfg: DictConfig, out: Path) -> BackboneSettings:
    """The recipe's backbone node as settings, with the synthetic tokenizer and
    backbone resolved to folders (`out`: the run's output dir)."""
    node = OmegaConf.to_container(cfg.backbone, resolve=True)
    settings = BackboneSettings(**node)  # type: ignore[arg-type]
    if settings.tokenizer == SYNTHETIC_TOKENIZER:
        from dtvg_dist.model.synthetic import ensure_tokenizer, vocabulary_hash

        settings.tokenizer = str(ensure_tokenizer(out / f"tokenizer-{vocabulary_hash()}"))
    if settings.name_or_path == SYNTHETIC_PRETRAINED:
        settings = _synthetic_pretrained(settings)
    return settings


def _synthetic_pretrained(settings: BackboneSettings) -> BackboneSettings:
    """`backbone.name_or_path: synthetic-pretrained` with `backbone.config`:
    build that architecture, teach it the synthetic rules (once, cached by
    config and seed under runs/.cache) and load it as a local checkpoint."""
    import hashlib
    import json

    from dtvg_dist.model.synthetic import ensure_pretrained_backbone

    if settings.config is None:
        raise RecipeError("backbone.name_or_path=synthetic-pretrained needs backbone.config")
    from dtvg_dist.model.synthetic import PRETRAINING_VERSION, vocabulary_hash

    key = json.dumps(
        {"config": settings.config, "seed": settings.init_seed, "vocab": vocabulary_hash(),
         "pretraining": PRETRAINING_VERSION},
        sort_keys=True,
    )
    folder = Path("runs/.cache") / f"synthetic-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    folder = ensure_pretrained_backbone(folder, dict(settings.config), seed=settings.init_seed)
    settings.name_or_path, settings.config, settings.tokenizer = str(folder), None, None
    return settings


class Pipeline:
    def __init__(self, cfg: DictConfig, accelerator: Accelerator | None = None) -> None:
        check_tasks(cfg)
        self.cfg = cfg
        self.out = output_dir(cfg)
        self.acc = accelerator or accelerator_for_recipe(cfg, str(self.out))
        # Rank 0 first: ranks must not write the tokenizer (or a synthetic
        # checkpoint) at once; no zero.Init there, it would need every rank.
        with self.acc.main_process_first(), zero_init(self.acc, False):
            settings = backbone_settings(cfg, self.out)
        # ZeRO-3: checkpoints load partitioned (zero.Init); config-built random
        # weights are built whole, so they match a single-process build.
        with zero_init(self.acc, cfg.distributed.zero_init and settings.config is None):
            self.backbone: Backbone = load_backbone(settings, device=self.acc.device)
        self.bank_dir = Path(cfg.bank_dir or f"runs/bank/{self.backbone.name}")
        self.data_settings = DataSettings.coerce(OmegaConf.to_container(cfg.data, resolve=True))
        self._encoded: dict[str, dict[str, TokenizedSplit]] = {}
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

    # -------------------------------------------------------------------- data
    def splits(self, task_name: str) -> dict[str, TokenizedSplit]:
        """The task's tokenized train / validation / test examples: built once
        into the data cache by the main process, memory-mapped by every rank."""
        if task_name not in self._encoded:
            self._encoded[task_name] = tokenized_splits(
                get_task(task_name), self.data_settings, self.backbone.tokenizer, self.backbone.family,
                seed=self.cfg.seed, accelerator=self.acc,
            )
        return self._encoded[task_name]

    # ------------------------------------------------------------------ stage 1
    def stage1_tasks(self) -> list[str]:
        # dict.fromkeys: with target_as_source the target is also a source, trained once
        return list(self.cfg.stage1.tasks) or list(
            dict.fromkeys([*self.cfg.source_tasks, self.cfg.target_task])
        )

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
        r, d = self.cfg.prompt.length, self.backbone.hidden_size
        if entry is not None:
            load_bank(self.bank_dir, [entry.task], backbone=self.backbone.name, d=d, r=r)
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
            is_source = name in cfg.source_tasks
            max_steps = (cfg.stage1.source_max_steps if is_source else None) or cfg.stage1.max_steps
            data = self.splits(name)
            spec = RunSpec(
                name=f"stage1/{name}",
                task=get_task(name),
                method="pt",
                prompt=SoftPrompt(p_init.to(self.acc.device)),
                run_dir=self.out / "stage1" / name,
                max_steps=max_steps or cfg.optim.max_steps,
                lr=cfg.stage1.lr or cfg.optim.lr,
                source_lr=cfg.optim.source_lr,
                train=data["train"],
                validation=data["validation"],
                test=data["test"],
                extra_results={"stage": 1, "init_seed": cfg.prompt.init_seed},
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
        return results

    # ------------------------------------------------------------------ stage 2
    def stage2_prompt(self) -> tuple[torch.nn.Module, dict[str, Any]]:
        """The stage-2 prompt module of `method` and what results.json should
        say about it (the bank it came from, the chosen source or the rule)."""
        cfg = self.cfg
        method = cfg.method
        needed = list(dict.fromkeys([cfg.target_task] + (list(cfg.source_tasks) if method != "pt" else [])))
        entries = load_bank(
            self.bank_dir, needed, backbone=self.backbone.name,
            d=self.backbone.hidden_size, r=cfg.prompt.length,
        )
        target = entries[cfg.target_task]
        dev = self.acc.device
        facts: dict[str, Any] = {"bank_dir": str(self.bank_dir), "p_init_seed": target.init_seed}
        if method == "pt":
            return SoftPrompt(target.p_init.to(dev)), facts
        sources = [entries[name] for name in cfg.source_tasks]
        if method in ("spot", "tpv"):
            # Both start the target from one source's stage-1 prompt (SPoT; paper C.1):
            # SPoT picks by cosine of mean-pooled prompts, TPV by Eq. 2 on the TPVs.
            if method == "spot":
                index = spot_pick_source(target.prompt, torch.stack([s.prompt for s in sources]))
            else:
                index = tpv_pick_source(target.tpv, torch.stack([s.tpv for s in sources]))
            log.info("%s: initialising from source %s", method.upper(), sources[index].task)
            return SoftPrompt(sources[index].prompt.to(dev)), {
                **facts, f"{method}_source": sources[index].task
            }
        module = DTVGPrompt(
            target.p_init.to(dev),
            target.tpv.to(dev),
            torch.stack([s.tpv for s in sources]).to(dev),
            [s.task for s in sources],
            rule=cfg.grouping.rule,
            fixed=cfg.grouping.fixed,
        )
        log.info("DTVG: grouping rule %s%s over %s", cfg.grouping.rule,
                 " (step-0 group kept)" if cfg.grouping.fixed else "", ", ".join(cfg.source_tasks))
        return module, {**facts, "grouping_rule": cfg.grouping.rule,
                        "grouping_fixed": bool(cfg.grouping.fixed),
                        "source_tasks": list(cfg.source_tasks)}

    def run_stage2(self) -> RunResult:
        cfg = self.cfg
        prompt, extra = self.stage2_prompt()
        data = self.splits(cfg.target_task)
        spec = RunSpec(
            name=f"stage2/{cfg.method}",
            task=get_task(cfg.target_task),
            method=cfg.method,
            prompt=prompt,
            run_dir=self.out,
            max_steps=cfg.optim.max_steps,
            lr=cfg.optim.lr,
            source_lr=cfg.optim.source_lr,
            train=data["train"],
            validation=data["validation"],
            test=data["test"],
            extra_results={"stage": 2, "recipe": cfg.recipe, "seed": cfg.seed, **extra},
        )
        return Trainer(cfg, spec, self.backbone, self.acc).run()

    def run(self) -> PipelineResult:
        result = PipelineResult(self.out)
        if self.cfg.stage in ("1", "all"):
            result.stage1 = self.run_stage1()
        if self.cfg.stage in ("2", "all"):
            result.stage2 = self.run_stage2()
        self.acc.end_training()
        return result
