"""Experiments as grids of jobs: the paper's tables (analysis.paper_results
EXPERIMENTS) and the offline demo (analysis.demo_report DEMO).

Stage 1 runs once per seed by default, as the released scripts do (they
load `<task>_seed=<seed>` TPVs): seed S trains its TPVs from a P_init drawn
with seed S into `<bank>/seed<S>`; with a shared bank one bank at the
recipes' seed serves every seed. Every stage-2 job needs the stage-1 jobs
that fill its bank (and, few-shot, the bank it copies source TPVs from).

How a job is launched comes from a `LaunchFor` the command gives: the
planner's recommended launch for the recipe, or an explicit GPU count.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from dtvg_dist.grid.jobs import Job, Launch, check, link_stage1
from dtvg_dist.model.methods import Method, get_method
from dtvg_dist.orchestration.config import RecipeError, list_recipes, load_recipe, recipe_tasks
from dtvg_dist.reporting.demo_report import DemoSpec, bank_dir, stage1_dir
from dtvg_dist.reporting.demo_report import run_dir as demo_run_dir
from dtvg_dist.reporting.paper_results import LR_GRID, VARIANTS, Experiment
from dtvg_dist.reporting.report import lr_variant, run_dir
from dtvg_dist.store.bank import entry_path

RESERVED = ("seed", "output_dir")  # set per run by the grid
PER_SEED_RESERVED = ("prompt.init_seed",)  # set per seed unless the bank is shared
DEMO_RESERVED = ("seed", "output_dir", "bank_dir", "stage", "method", "prompt.init_seed",
                 "grouping.rule")
DEFAULT_RUNS = Path("runs")

# recipe, the overrides that shape its runs (variant + the user's) -> how to launch it
LaunchFor = Callable[[str, list[str]], Launch]


def python_launch(recipe: str, overrides: list[str]) -> Launch:
    """This python, one process: today's default on CPU."""
    return Launch(prefix=(sys.executable,))


def relocate(path: str, runs_dir: Path) -> str:
    """A recipe path under runs/ moved under the runs dir, so a smoke test in
    another folder never writes (or reads) the real TPV banks."""
    if runs_dir == DEFAULT_RUNS or not path.startswith("runs/"):
        return path
    return str(runs_dir / path[len("runs/"):])


def seed_bank(bank: str, seed: int) -> str:
    """The per-seed bank folder: `<bank>/seed<S>`; a bank path that already
    interpolates ${seed} (the few-shot banks) is per seed as it stands."""
    return bank if "${seed}" in bank else f"{bank}/seed{seed}"


@dataclass
class Loaded:
    """A validated recipe, the overrides its runs get, and its bank path
    (moved under the runs dir unless the user set bank_dir; may hold ${...})."""

    cfg: DictConfig
    overrides: list[str]
    bank: str | None
    bank_moved: bool


def _load(recipe: str, overrides: list[str], runs_dir: Path) -> Loaded:
    try:
        cfg = load_recipe(recipe, overrides)
    except RecipeError as err:
        raise RecipeError(f"recipe {recipe}: {err}") from None
    raw = OmegaConf.to_container(cfg, resolve=False).get("bank_dir")
    user_set = any(item.startswith("bank_dir=") for item in overrides)
    moved = relocate(raw, runs_dir) if isinstance(raw, str) and not user_set else raw
    return Loaded(cfg, list(overrides), moved, moved != raw)


def _bank_args(loaded: Loaded, seed: int | None, per_seed: bool) -> tuple[list[str], Path | None]:
    """Overrides that point a run at its bank, and the folder they resolve to
    for run seed `seed` (None: the recipe's)."""
    cfg = loaded.cfg.copy()
    if seed is not None:
        cfg.seed = seed
    if not per_seed:
        args = []
        if loaded.bank_moved:
            cfg.bank_dir = loaded.bank  # ${seed} etc. stay interpolations
            args = [f"bank_dir={loaded.bank}"]
        return args, Path(cfg.bank_dir) if cfg.bank_dir else None
    if loaded.bank is None:
        raise RecipeError(f"recipe {cfg.recipe} sets no bank_dir: per-seed banks need one "
                          "(set bank_dir, or pass --shared-bank)")
    cfg.bank_dir = seed_bank(loaded.bank, cfg.seed)
    folder = str(cfg.bank_dir)  # resolved with the run's seed
    return [f"prompt.init_seed={cfg.seed}", f"bank_dir={folder}"], Path(folder)


def _stage1_job(recipe: str, overrides: list[str], runs_dir: Path, seed: int | None,
                launch_for: LaunchFor) -> Job:
    loaded = _load(recipe, overrides, runs_dir)
    cfg = loaded.cfg
    bank_args, bank = _bank_args(loaded, seed, per_seed=seed is not None)
    run_seed = cfg.seed if seed is None else seed
    out = runs_dir / recipe / str(run_seed)
    head = [f"recipe={recipe}"] + ([f"seed={seed}"] if seed is not None else [])
    return Job(name=str(out.relative_to(runs_dir)), run_dir=out, recipe=recipe,
               args=[*head, f"output_dir={out}", *bank_args, *overrides],
               launch=launch_for(recipe, list(overrides)), stage1=True, seed=seed,
               title=f"stage 1 {recipe}" + (f" seed {seed}" if seed is not None else ""),
               bank=bank, bank_tasks=tuple(recipe_tasks(cfg, "1")))


def _source_copies(cfg: DictConfig, bank: Path, source_bank: Path) -> list[tuple[Path, Path]]:
    """Few-shot: the run's own bank gets the full-data source TPVs (C.8)."""
    return [(entry_path(source_bank, task), entry_path(bank, task)) for task in cfg.source_tasks]


def lr_grid() -> dict[str, tuple[str, ...]]:
    """C.7's learning-rate pairs as variants of the dtvg column."""
    return {lr_variant(lr, slr): (f"optim.lr={lr}", f"optim.source_lr={slr}")
            for lr in LR_GRID[0] for slr in LR_GRID[1]}


def _same_run(a: DictConfig, b: DictConfig) -> bool:
    """Two configurations that would train the same run."""
    return OmegaConf.to_container(a, resolve=False) == OmegaConf.to_container(b, resolve=False)


def experiment_jobs(
    exp: Experiment,
    *,
    seeds: tuple[int, ...],
    variants: tuple[str, ...],
    overrides: list[str],
    runs_dir: Path,
    recipes: tuple[str, ...] | None = None,
    stage1: bool = True,
    shared_bank: bool = False,
    lr_search: bool = False,
    launch_for: LaunchFor = python_launch,
) -> list[Job]:
    """Every job of a paper experiment in a valid serial order: per seed,
    its stage-1 runs (shared bank: once, first), then its stage-2 runs."""
    reserved = RESERVED if shared_bank else RESERVED + PER_SEED_RESERVED
    for item in overrides:
        if item.split("=", 1)[0] in reserved:
            hint = "--shared-bank" if item.startswith("prompt.") else "--seeds / --runs-dir"
            raise RecipeError(f"{item!r}: this script sets it per run (see {hint})")
    extra = dict(lr_grid()) if lr_search else {}
    if lr_search and "dtvg" not in variants:
        raise RecipeError("--lr-search searches the dtvg column: include dtvg in --variants")
    table = {**VARIANTS, **extra}
    names = [*variants, *extra]
    loaded = {(r, v): _load(r, [*table[v], *overrides], runs_dir)
              for r in recipes or exp.recipes for v in dict.fromkeys(["dtvg", *names])}
    source_bank = relocate(exp.source_bank, runs_dir) if exp.source_bank else None
    jobs: list[Job] = []
    if stage1 and shared_bank:
        jobs += [_stage1_job(r, overrides, runs_dir, None, launch_for) for r in exp.prerequisites]
    for seed in seeds:
        if stage1 and not shared_bank:
            jobs += [_stage1_job(r, overrides, runs_dir, seed, launch_for) for r in exp.prerequisites]
        planned: dict[Path, Job] = {}
        planned_pre: dict[Path, Job] = {}
        for recipe in recipes or exp.recipes:
            for variant in names:
                this = loaded[(recipe, variant)]
                out = run_dir(runs_dir, recipe, variant, seed)
                link: tuple[Path, str] | None = None
                free = out.parent.is_symlink() or not out.parent.exists()
                if variant != "dtvg" and free and _same_run(this.cfg, loaded[(recipe, "dtvg")].cfg):
                    # e.g. prefix-argmax on the paper recipes: their own rule
                    out = run_dir(runs_dir, recipe, "dtvg", seed)
                    link = (run_dir(runs_dir, recipe, variant, seed).parent, out.parent.name)
                if out in planned:
                    if link is not None:
                        planned[out].links.append(link)
                    continue
                bank_args, bank = _bank_args(this, seed, per_seed=not shared_bank)
                args = [f"recipe={recipe}", f"seed={seed}", f"output_dir={out}", *bank_args,
                        *table[variant], *overrides]
                job = Job(name=str(out.relative_to(runs_dir)), run_dir=out, recipe=recipe,
                          args=args, launch=launch_for(recipe, [*table[variant], *overrides]),
                          seed=seed, variant=variant, title=f"{recipe} {variant} seed {seed}",
                          bank=bank, links=[link] if link else [],
                          note=get_method(this.cfg.method).describe(this.cfg))
                if source_bank is not None and bank is not None:
                    sources = Path(source_bank if shared_bank else seed_bank(source_bank, seed))
                    job.copies = _source_copies(this.cfg, bank, sources)
                pre = _pre_stage_job(this.cfg, job, runs_dir, planned_pre)
                if pre is not None:
                    if pre.name not in {j.name for j in jobs}:
                        jobs.append(pre)
                    job.needs = (*job.needs, pre.name)
                planned[out] = job
                jobs.append(job)
    link_stage1(jobs)
    check(jobs)
    return jobs


def _pre_stage_job(cfg: DictConfig, job: Job, runs_dir: Path, planned: dict[Path, Job]) -> Job | None:
    """The job of the method's pre-stage that `job` reads (MPT: source
    training into the bank), one per output file for the whole grid; None
    when the method has none. It runs `job`'s command with stage=pre in a
    folder named after the output, so every target reusing it waits on one run."""
    if job.bank is None:
        return None
    method = get_method(str(cfg.method))
    if type(method).pre_stage_output is Method.pre_stage_output:
        return None
    # The run's own configuration (its seed, bank and init seed included)
    resolved = load_recipe(job.recipe, [a for a in job.args if not a.startswith("recipe=")])
    output = method.pre_stage_output(resolved, job.bank)
    if output is None:
        return None
    output = Path(output)
    if output in planned:
        return planned[output]
    out = runs_dir / f"{cfg.method}-pre-{output.stem}" / str(job.seed)
    args = [a for a in job.args if not a.startswith(("output_dir=", "stage="))]
    pre = Job(name=str(out.relative_to(runs_dir)), run_dir=out, recipe=job.recipe,
              args=[*args, "stage=pre", f"output_dir={out}"], launch=job.launch, seed=job.seed,
              variant=job.variant, title=f"{cfg.method} pre-stage {output.stem} seed {job.seed}",
              bank=job.bank, copies=list(job.copies), outputs=(output,))
    planned[output] = pre
    return pre


# ------------------------------------------------------------------- the demo
def stage1_recipe_for(recipe: str) -> str:
    """Stage 1 runs `<recipe>-stage1` when there is one (the demo's evaluates
    its long source runs less often), else the recipe itself."""
    return f"{recipe}-stage1" if f"{recipe}-stage1" in list_recipes() else recipe


def demo_jobs(spec: DemoSpec, *, out: Path, seeds: tuple[int, ...], methods: tuple[str, ...],
              overrides: list[str], recipe: str | None = None,
              launch_for: LaunchFor = python_launch) -> list[Job]:
    """The demo's grid: per seed its stage-1 run (every source and the
    target, P_init drawn under that seed, into `<out>/bank/seed<S>`), then
    each method on the same target, data and budget, all needing it. One
    bank per seed, as the authors' released scripts load
    `<task>_seed=<seed>` TPVs (zpy2477/DTVG, its run scripts)."""
    for item in overrides:
        if item.split("=", 1)[0] in DEMO_RESERVED:
            raise RecipeError(f"{item!r}: the demo sets {', '.join(DEMO_RESERVED)} itself")
    by_key = {m.key: m for m in spec.methods}
    for key in methods:
        if key not in by_key:
            raise RecipeError(f"method {key!r} is not one of {', '.join(by_key)}")
    recipe = recipe or spec.recipe
    stage1_recipe = stage1_recipe_for(recipe)
    jobs: list[Job] = []
    for seed in seeds:
        bank = bank_dir(out, seed)
        common = [*overrides, f"seed={seed}", f"prompt.init_seed={seed}", f"bank_dir={bank}"]
        s1_out = stage1_dir(out, seed)
        s1_args = [f"recipe={stage1_recipe}", *common, "stage=1", f"output_dir={s1_out}"]
        cfg = load_recipe(stage1_recipe, s1_args[1:])
        jobs.append(Job(name=str(s1_out.relative_to(out)), run_dir=s1_out, recipe=stage1_recipe,
                        args=s1_args, launch=launch_for(stage1_recipe, list(overrides)),
                        stage1=True, seed=seed, title=f"seed {seed}: stage 1", bank=bank,
                        bank_tasks=tuple(recipe_tasks(cfg, "1"))))
        for key in methods:
            method = by_key[key]
            path = demo_run_dir(out, key, seed)
            args = [f"recipe={recipe}", *common, *method.overrides, "stage=2", f"output_dir={path}"]
            load_recipe(recipe, args[1:])  # every recipe error before anything trains
            jobs.append(Job(name=str(path.relative_to(out)), run_dir=path, recipe=recipe,
                            args=args, launch=launch_for(recipe, [*method.overrides, *overrides]),
                            seed=seed, variant=key, title=f"seed {seed}: {method.title}",
                            bank=bank))
    link_stage1(jobs)
    check(jobs)
    return jobs


# ------------------------------------------------------------ what it costs
@dataclass
class GridCost:
    """A grid's size and estimated GPU-hours (`reproduce --dry-run`)."""

    runs: int = 0  # trainer runs (a stage-1 job runs one per task)
    steps: int = 0  # optimizer steps in total
    tokens: float = 0.0  # backbone tokens at the tasks' maximum lengths (an upper bound)
    flops: float = 0.0  # of the runs estimated from FLOPs
    flop_hours: float = 0.0
    measured_hours: float = 0.0  # runs timed by finished runs' samples_per_s
    measured_runs: int = 0  # runs whose time comes from measured samples_per_s
    measured_from: int = 0  # finished runs read
    unknown: list[str] = field(default_factory=list)  # recipes without a model config

    def lines(self, gpu: str, mfu: float) -> list[str]:
        from dtvg_dist.costs import GPU_PEAK_BF16

        peak, source = GPU_PEAK_BF16[gpu]
        out = [f"# grid: {self.runs} runs, {self.steps:,} optimizer steps, {self.tokens:.3g} backbone "
               "tokens (soft prompt included, at the tasks' maximum lengths: an upper bound)"]
        estimated = self.runs - self.measured_runs
        out.append(f"# estimated {self.flop_hours + self.measured_hours:,.1f} GPU-hours on {gpu}: "
                   f"{estimated} runs from {self.flops:.3g} FLOPs (planner's FLOPs per step, frozen "
                   f"backbone) at {peak / 1e12:g} TFLOP/s dense bf16 x MFU {mfu:.0%} ({source})")
        if self.measured_runs:
            out.append(f"# {self.measured_runs} of them timed by the measured samples_per_s of "
                       f"{self.measured_from} finished runs of this grid (their results.json), "
                       f"{self.measured_hours:,.1f} GPU-hours")
        if self.unknown:
            out.append(f"# no model config for {', '.join(sorted(set(self.unknown)))}: not in the FLOPs")
        return out


def _measured_rates(job: Job) -> dict[str, float]:
    """task -> samples_per_s of this job's finished runs."""
    import json

    from dtvg_dist.store.run_files import RESULTS

    dirs = ([(t, job.run_dir / "stage1" / t) for t in job.bank_tasks] if job.stage1
            else [(None, job.run_dir)])
    rates = {}
    for task, folder in dirs:
        try:
            results = json.loads((folder / RESULTS).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(results.get("samples_per_s"), int | float) and results["samples_per_s"] > 0:
            rates[task or str(results.get("task"))] = float(results["samples_per_s"])
    return rates


def grid_cost(jobs: list[Job], gpu: str, mfu: float) -> GridCost:
    """Runs, steps, tokens and GPU-hours of `jobs`: from FLOPs per step
    (costs.train_step_flops at the tasks' maximum lengths) at `mfu` of the
    card's peak, or, for a recipe and task with finished runs in the grid,
    from their median measured samples_per_s (x the run's GPUs)."""
    import statistics

    from dtvg_dist.costs import (
        ModelShape,
        PlanError,
        find_model_config,
        gpu_hours,
        train_step_flops,
    )
    from dtvg_dist.tasks import get_task

    cost = GridCost()
    measured: dict[tuple[str, str], list[float]] = {}
    for job in jobs:
        for task, rate in _measured_rates(job).items():
            measured.setdefault((job.recipe, task), []).append(rate)
            cost.measured_from += 1
    shapes: dict[str, ModelShape | None] = {}
    for job in jobs:
        cfg = load_recipe(job.recipe, [a for a in job.args if not a.startswith("recipe=")])
        if job.recipe not in shapes:
            try:
                shapes[job.recipe] = ModelShape.from_config(find_model_config(cfg.backbone)[0])
            except PlanError:
                shapes[job.recipe] = None
        shape = shapes[job.recipe]
        examples = int(cfg.optim.batch_size) * int(cfg.optim.grad_accum)
        if job.stage1:
            units = [(t, int((cfg.stage1.source_max_steps if t in cfg.source_tasks else None)
                             or cfg.stage1.max_steps or cfg.optim.max_steps)) for t in job.bank_tasks]
        else:
            units = [(str(cfg.target_task), int(cfg.optim.max_steps))]
        prompt = get_method("pt" if job.stage1 else str(cfg.method)).prompt_tokens(cfg)
        for task_name, steps in units:
            task = get_task(task_name)
            seq2seq = shape is not None and shape.family == "seq2seq"
            source = prompt + task.max_source_length + (0 if seq2seq else task.max_target_length)
            target = task.max_target_length if seq2seq else 0
            cost.runs += 1
            cost.steps += steps
            cost.tokens += float(steps) * examples * (source + target)
            rates = measured.get((job.recipe, task_name))
            if rates:
                seconds = steps * examples / statistics.median(rates)
                cost.measured_hours += seconds / 3600 * max(job.gpus, 1)
                cost.measured_runs += 1
            elif shape is None:
                cost.unknown.append(job.recipe)
            else:
                flops = steps * train_step_flops(shape, examples, source, target,
                                                 bool(cfg.backbone.gradient_checkpointing))
                cost.flops += flops
                cost.flop_hours += gpu_hours(flops, gpu, mfu)
    return cost
