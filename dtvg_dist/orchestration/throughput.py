"""Training throughput of PT and DTVG on one recipe, measured in one process
(paper Table 9, appendix J: samples per second of T5-base on RTE).

Both methods run the trainer's own optimizer step on the same backbone, data
and batch layout, in interleaved rounds (the order alternates) so that a
busy machine slows both alike; the figure per method is the median over
rounds. The TPVs come from the recipe's bank when it has them; otherwise
random ones of the right shape stand in (a step's cost does not depend on
their values), and the result says so.
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from dtvg_dist.model.prompt import DTVGPrompt, SoftPrompt
from dtvg_dist.store.bank import entry_path
from dtvg_dist.training.distributed import release
from dtvg_dist.training.trainer import RunSpec, Trainer

log = logging.getLogger("dtvg_dist.orchestration.throughput")
METHODS = ("pt", "dtvg")


def _prompts(pipeline: Any) -> tuple[dict[str, torch.nn.Module], str]:
    """PT and DTVG prompt modules, and where their tensors came from."""
    cfg = pipeline.cfg
    tasks = [cfg.target_task, *cfg.source_tasks]
    dev = pipeline.acc.device
    if all(entry_path(pipeline.bank_dir, t).is_file() for t in tasks):
        dtvg, _ = pipeline.stage2_prompt()
        return {"pt": SoftPrompt(dtvg.p_init.clone()), "dtvg": dtvg}, f"bank {pipeline.bank_dir}"
    p_init = pipeline.p_init(tasks).to(dev)
    gen = torch.Generator().manual_seed(int(cfg.seed))
    r, d = p_init.shape
    noise = torch.randn(len(cfg.source_tasks) + 1, r, d, generator=gen).to(dev) * 0.01
    dtvg = DTVGPrompt(p_init, noise[0], noise[1:], list(cfg.source_tasks),
                      rule=cfg.grouping.rule, fixed=cfg.grouping.fixed)
    return {"pt": SoftPrompt(p_init), "dtvg": dtvg}, (
        f"random TPVs: the bank {pipeline.bank_dir} lacks some of {', '.join(tasks)}")


def _timed_steps(pipeline: Any, spec: RunSpec, first: int, count: int, warmup: int) -> float:
    """Seconds for `count` optimizer steps after `warmup` untimed ones."""
    trainer = Trainer(pipeline.cfg, spec, pipeline.backbone, pipeline.acc)
    # The trainer's own set-up and step: what a training run executes per step.
    trainer.build()
    for step in range(first, first + warmup):
        trainer.train_step(step)
    pipeline.acc.wait_for_everyone()
    start = time.perf_counter()
    for step in range(first + warmup, first + warmup + count):
        trainer.train_step(step)
    pipeline.acc.wait_for_everyone()
    seconds = time.perf_counter() - start
    release(pipeline.acc)
    return seconds


def measure(cfg: DictConfig, *, steps: int, rounds: int, warmup: int = 1) -> dict[str, Any]:
    """samples/s of PT and DTVG for `cfg` (a stage-2 recipe), median over rounds."""
    from dtvg_dist.orchestration.pipeline import Pipeline

    if steps < 1 or rounds < 1 or warmup < 0:
        raise ValueError(f"steps={steps} and rounds={rounds} must be >= 1, warmup={warmup} >= 0")
    pipeline = Pipeline(cfg)
    prompts, tpvs = _prompts(pipeline)
    data = pipeline.data(cfg.target_task)
    train = data.splits()["train"]
    base = RunSpec(name="table9", task=data.task, method="pt", prompt=prompts["pt"],
                   run_dir=Path(pipeline.out), max_steps=warmup + steps, lr=cfg.optim.lr,
                   source_lr=cfg.optim.source_lr, train=train, validation=[], test=[])
    samples = steps * cfg.optim.batch_size * cfg.optim.grad_accum
    per_round: dict[str, list[float]] = {m: [] for m in METHODS}
    log.info("table9: %s, %d rounds x (%d warm-up + %d timed steps) per method, batch %d; TPVs: %s",
             cfg.recipe, rounds, warmup, steps, cfg.optim.batch_size * cfg.optim.grad_accum, tpvs)
    for index in range(rounds):
        order = METHODS if index % 2 == 0 else METHODS[::-1]
        for method in order:
            spec = replace(base, method=method, prompt=prompts[method])
            seconds = _timed_steps(pipeline, spec, index * (warmup + steps), steps, warmup)
            per_round[method].append(samples / seconds)
            log.info("round %d %s: %.2f samples/s", index + 1, method, per_round[method][-1])
    pipeline.acc.end_training()
    result = {m: statistics.median(v) for m, v in per_round.items()}
    return {
        "recipe": cfg.recipe, "target_task": cfg.target_task, "backbone": pipeline.backbone.name,
        "device": str(pipeline.acc.device), "world_size": pipeline.acc.num_processes,
        "batch_size": cfg.optim.batch_size * cfg.optim.grad_accum, "steps": steps,
        "rounds": rounds, "warmup_steps": warmup, "grouping_rule": cfg.grouping.rule,
        "n_sources": len(cfg.source_tasks), "tpvs": tpvs,
        "samples_per_s": result, "per_round": per_round,
        "dtvg_over_pt": result["dtvg"] / result["pt"],
    }
