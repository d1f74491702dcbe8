"""Run one of the paper's experiments end to end: its stage-1 recipes once,
then every row's recipe over the experiment's seeds, then the report.

    python -m dtvg_dist.reproduce EXPERIMENT [--seeds 22,32] [--variants dtvg,pt]
        [--recipes A,B] [--runs-dir runs] [--launcher "accelerate launch --config_file X"]
        [--no-stage1] [--dry-run] [key=value ...]
    python -m dtvg_dist.reproduce --list

Each run is a subprocess of the trainer CLI, so a crash ends one run, not
the grid, and any launcher works. A run whose results.json exists is
skipped, and a stage-1 recipe whose TPVs are all in its bank is skipped, so
an interrupted grid resumes by running the same command again.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from dtvg_dist.bank import entry_path
from dtvg_dist.config import RecipeError, load_recipe
from dtvg_dist.paper_results import EXPERIMENTS, VARIANTS, Experiment
from dtvg_dist.report import run_dir, write_report
from dtvg_dist.run_files import RESULTS

RESERVED = ("seed", "output_dir")  # set per run by this script


@dataclass
class Job:
    """One trainer invocation (or a skip, with its reason)."""

    recipe: str
    output_dir: Path
    args: list[str]  # the trainer's arguments after `-m dtvg_dist.train`
    stage1: bool = False
    seed: int | None = None
    variant: str = "dtvg"
    copies: list[tuple[Path, Path]] = field(default_factory=list)  # bank entries to copy first
    skip: str | None = None


DEFAULT_RUNS = Path("runs")


def relocate(path: str, runs_dir: Path) -> str:
    """A recipe path under runs/ moved under --runs-dir, so a smoke test in
    another folder never writes (or reads) the real TPV banks."""
    if runs_dir == DEFAULT_RUNS or not path.startswith("runs/"):
        return path
    return str(runs_dir / path[len("runs/"):])


def _load(recipe: str, overrides: list[str], runs_dir: Path) -> tuple[DictConfig, list[str]]:
    """The validated recipe, and the overrides its runs get (bank relocated
    unless the user set bank_dir)."""
    try:
        cfg = load_recipe(recipe, overrides)
    except RecipeError as err:
        raise RecipeError(f"recipe {recipe}: {err}") from None
    raw = OmegaConf.to_container(cfg, resolve=False).get("bank_dir")
    user_set = any(item.startswith("bank_dir=") for item in overrides)
    moved = relocate(raw, runs_dir) if isinstance(raw, str) and not user_set else raw
    if moved != raw:
        cfg.bank_dir = moved  # ${seed} etc. stay interpolations
        return cfg, [f"bank_dir={moved}", *overrides]
    return cfg, list(overrides)


def _stage1_job(recipe: str, overrides: list[str], runs_dir: Path) -> Job:
    cfg, extra = _load(recipe, overrides, runs_dir)
    out = runs_dir / recipe / str(cfg.seed)
    tasks = list(cfg.stage1.tasks) or [*cfg.source_tasks, cfg.target_task]
    job = Job(recipe, out, [f"recipe={recipe}", f"output_dir={out}", *extra], stage1=True)
    if cfg.bank_dir and all(entry_path(cfg.bank_dir, t).is_file() for t in tasks):
        job.skip = f"bank {cfg.bank_dir} has {', '.join(tasks)}"
    return job


def _source_copies(cfg: DictConfig, seed: int, source_bank: Path) -> list[tuple[Path, Path]]:
    """Few-shot: the run's own bank gets the full-data source TPVs (C.8)."""
    cfg.seed = seed  # bank_dir interpolates ${seed}
    bank = Path(cfg.bank_dir)
    return [
        (entry_path(source_bank, task), entry_path(bank, task))
        for task in cfg.source_tasks
        if not entry_path(bank, task).is_file()
    ]


def plan(
    exp: Experiment,
    *,
    seeds: tuple[int, ...],
    variants: tuple[str, ...],
    overrides: list[str],
    runs_dir: Path,
    recipes: tuple[str, ...] | None = None,
    stage1: bool = True,
) -> list[Job]:
    """Every job of the experiment in run order: stage 1, then seed by seed."""
    for item in overrides:
        if item.split("=", 1)[0] in RESERVED:
            raise RecipeError(f"{item!r}: use --seeds / --runs-dir, this script sets seed and output_dir")
    jobs = [_stage1_job(r, overrides, runs_dir) for r in exp.prerequisites] if stage1 else []
    configs = {
        (recipe, variant): _load(recipe, [*VARIANTS[variant], *overrides], runs_dir)
        for recipe in recipes or exp.recipes
        for variant in variants
    }
    source_bank = Path(relocate(exp.source_bank, runs_dir)) if exp.source_bank else None
    for seed in seeds:
        for (recipe, variant), (cfg, extra) in configs.items():
            out = run_dir(runs_dir, recipe, variant, seed)
            job = Job(recipe, out, [f"recipe={recipe}", f"seed={seed}", f"output_dir={out}", *extra],
                      seed=seed, variant=variant)
            if (out / RESULTS).is_file():
                job.skip = f"{out / RESULTS} exists"
            elif source_bank is not None:
                job.copies = _source_copies(cfg, seed, source_bank)
            jobs.append(job)
    return jobs


def command(job: Job, launcher: list[str]) -> list[str]:
    return [*launcher, "-m", "dtvg_dist.train", *job.args]


def _copy_entries(job: Job) -> str | None:
    """Copy the job's bank entries; the error text when a source TPV is missing."""
    missing = [str(src) for src, _ in job.copies if not src.is_file()]
    if missing:
        return f"source TPVs missing: {', '.join(missing)} (run the stage-1 recipes first)"
    for src, dst in job.copies:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
    return None


def execute(jobs: list[Job], launcher: list[str], dry_run: bool) -> list[Job]:
    """Run the jobs in order; returns the failed ones. A failed stage-1 job
    stops the grid: every later run would need its TPV."""
    failed: list[Job] = []
    for job in jobs:
        cmd = command(job, launcher)
        if job.skip:
            print(f"# skip {job.recipe}" + (f" seed {job.seed}" if job.seed is not None else "")
                  + f": {job.skip}", flush=True)
            continue
        for src, dst in job.copies:
            print(f"# copy {src} -> {dst}", flush=True)
        print(shlex.join(cmd), flush=True)
        if dry_run:
            continue
        error = _copy_entries(job)
        if error is None and subprocess.run(cmd, check=False).returncode != 0:
            error = f"exit status != 0: {shlex.join(cmd)}"
        if error is not None:
            print(f"# FAILED {job.recipe} seed {job.seed}: {error}", file=sys.stderr, flush=True)
            failed.append(job)
            if job.stage1:
                print("# stopping: stage 2 needs this stage-1 run", file=sys.stderr, flush=True)
                break
    return failed


def _csv(text: str | None) -> list[str]:
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def _listing() -> str:
    lines = ["experiments (python -m dtvg_dist.reproduce NAME):"]
    for exp in EXPERIMENTS.values():
        lines.append(
            f"  {exp.name:<9} {exp.table:<9} {len(exp.recipes):>3} recipes x {len(exp.seeds)} seeds "
            f"{exp.seeds}, variants {','.join(exp.run_variants)} (report: {','.join(exp.variants)}): "
            f"{exp.description}"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dtvg_dist.reproduce",
        description="Run a paper experiment (stage 1 once, then its recipes over seeds) and report it.",
        epilog=_listing(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("experiment", nargs="?", help="table2, table3, ... (see --list)")
    parser.add_argument("overrides", nargs="*", help="key=value recipe overrides for every run")
    parser.add_argument("--list", action="store_true", help="list the experiments and exit")
    parser.add_argument("--seeds", help="comma-separated seeds (default: the experiment's)")
    parser.add_argument("--variants", help="comma-separated: dtvg, pt, spot, ts, kc, only-target, "
                        "fixed, or 'all' for the experiment's report columns (default: its own)")
    parser.add_argument("--recipes", help="comma-separated subset of the experiment's recipes")
    parser.add_argument("--runs-dir", default="runs", help="output root (default: runs)")
    parser.add_argument("--launcher", default=None,
                        help='how to start python, e.g. "accelerate launch --config_file X" '
                        "(default: this python)")
    parser.add_argument("--no-stage1", action="store_true", help="skip the stage-1 recipes")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--no-plot", action="store_true", help="write no PNG with the report")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_intermixed_args(argv)
    if args.list:
        print(_listing())
        return 0
    if args.experiment not in EXPERIMENTS:
        parser.error(f"experiment {args.experiment!r} is not one of {', '.join(EXPERIMENTS)}")
    exp = EXPERIMENTS[args.experiment]
    try:
        seeds = tuple(int(s) for s in _csv(args.seeds)) or exp.seeds
    except ValueError:
        parser.error(f"--seeds {args.seeds!r}: give integers, e.g. --seeds 22,32")
    variants = tuple(_csv(args.variants)) or exp.run_variants
    if variants == ("all",):
        variants = exp.variants
    for variant in variants:
        if variant not in VARIANTS:
            parser.error(f"--variants: {variant!r} is not one of {', '.join(VARIANTS)}, all")
    recipes = tuple(_csv(args.recipes)) or None
    for recipe in recipes or ():
        if recipe not in exp.recipes:
            parser.error(f"--recipes: {recipe!r} is not in {exp.name} ({', '.join(exp.recipes)})")
    runs_dir = Path(args.runs_dir)
    launcher = shlex.split(args.launcher) if args.launcher else [sys.executable]
    try:
        jobs = plan(exp, seeds=seeds, variants=variants, overrides=list(args.overrides),
                    runs_dir=runs_dir, recipes=recipes, stage1=not args.no_stage1)
    except RecipeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    todo = sum(job.skip is None for job in jobs)
    print(f"# {exp.name} ({exp.table}): {len(jobs)} runs, {todo} to do, "
          f"seeds {','.join(map(str, seeds))}, variants {','.join(variants)}", flush=True)
    failed = execute(jobs, launcher, args.dry_run)
    if args.dry_run:
        print(f"# then: python -m dtvg_dist.report {exp.name} --runs-dir {runs_dir}")
        return 0
    paths = write_report(exp.name, runs_dir, seeds=seeds, with_plot=not args.no_plot)
    print(paths["markdown"].read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    if failed:
        print(f"{len(failed)} run(s) failed: " + ", ".join(f"{j.recipe}/{j.seed}" for j in failed),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
