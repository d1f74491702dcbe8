"""Run one of the paper's experiments end to end: its stage-1 recipes, then
every row's recipe over the experiment's seeds, then the report.

    python -m dtvg_dist.reproduce EXPERIMENT [--seeds 22,32] [--variants dtvg,pt]
        [--recipes A,B] [--runs-dir runs] [--launcher "accelerate launch --config_file X"]
        [--shared-bank] [--lr-search] [--std sample|population]
        [--no-stage1] [--dry-run] [key=value ...]
    python -m dtvg_dist.reproduce table9 [--recipes t5-base-dtvg-rte] [--steps 20] [--rounds 3]
    python -m dtvg_dist.reproduce --list

Stage 1 runs once per seed by default, as the released scripts do (they
load `<task>_seed=<seed>` TPVs): seed S trains its TPVs from a P_init drawn
with seed S into `<bank>/seed<S>`. `--shared-bank` trains one bank at the
recipes' seed and lets every seed use it (cheaper, less spread).

Each run is a subprocess of the trainer CLI, so a crash ends one run, not
the grid, and any launcher works. A run whose results.json exists is
skipped, and a stage-1 recipe whose TPVs are all in its bank is skipped, so
an interrupted grid resumes by running the same command again.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from dtvg_dist import cli
from dtvg_dist.analysis.paper_results import EXPERIMENTS, LR_GRID, TABLE9, VARIANTS, Experiment
from dtvg_dist.analysis.report import lr_variant, run_dir, write_report
from dtvg_dist.config import RecipeError, load_recipe
from dtvg_dist.store.bank import entry_path
from dtvg_dist.store.run_files import RESULTS

RESERVED = ("seed", "output_dir")  # set per run by this script
PER_SEED_RESERVED = ("prompt.init_seed",)  # set per seed unless --shared-bank
DEFAULT_RUNS = Path("runs")
TABLE9_RECIPE = "t5-base-dtvg-rte"  # appendix J: T5-base on RTE


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
    links: list[tuple[Path, str]] = field(default_factory=list)  # variant folder -> shared runs
    skip: str | None = None


def relocate(path: str, runs_dir: Path) -> str:
    """A recipe path under runs/ moved under --runs-dir, so a smoke test in
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
    (moved under --runs-dir unless the user set bank_dir; may hold ${...})."""

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
    for run seed `seed` (None: the recipe's). Shared: the recipe's bank
    (relocated if needed); per seed: `seed_bank` of it, P_init drawn with
    the seed."""
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


def _stage1_job(recipe: str, overrides: list[str], runs_dir: Path, seed: int | None) -> Job:
    loaded = _load(recipe, overrides, runs_dir)
    cfg = loaded.cfg
    bank_args, bank = _bank_args(loaded, seed, per_seed=seed is not None)
    run_seed = cfg.seed if seed is None else seed
    out = runs_dir / recipe / str(run_seed)
    head = [f"recipe={recipe}"] + ([f"seed={seed}"] if seed is not None else [])
    job = Job(recipe, out, [*head, f"output_dir={out}", *bank_args, *overrides], stage1=True,
              seed=seed)
    tasks = list(cfg.stage1.tasks) or list(dict.fromkeys([*cfg.source_tasks, cfg.target_task]))
    if bank is not None and all(entry_path(bank, t).is_file() for t in tasks):
        job.skip = f"bank {bank} has {', '.join(tasks)}"
    return job


def _source_copies(cfg: DictConfig, bank: Path, source_bank: Path) -> list[tuple[Path, Path]]:
    """Few-shot: the run's own bank gets the full-data source TPVs (C.8)."""
    return [
        (entry_path(source_bank, task), entry_path(bank, task))
        for task in cfg.source_tasks
        if not entry_path(bank, task).is_file()
    ]


def lr_grid() -> dict[str, tuple[str, ...]]:
    """C.7's learning-rate pairs as variants of the dtvg column."""
    return {lr_variant(lr, slr): (f"optim.lr={lr}", f"optim.source_lr={slr}")
            for lr in LR_GRID[0] for slr in LR_GRID[1]}


def _same_run(a: DictConfig, b: DictConfig) -> bool:
    """Two configurations that would train the same run."""
    return OmegaConf.to_container(a, resolve=False) == OmegaConf.to_container(b, resolve=False)


def plan(
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
) -> list[Job]:
    """Every job of the experiment in run order: per seed, its stage-1 runs
    (with --shared-bank: once, first), then its stage-2 runs."""
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
        jobs += [_stage1_job(r, overrides, runs_dir, None) for r in exp.prerequisites]
    for seed in seeds:
        if stage1 and not shared_bank:
            jobs += [_stage1_job(r, overrides, runs_dir, seed) for r in exp.prerequisites]
        planned: dict[Path, Job] = {}
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
                job = Job(recipe, out, args, seed=seed, variant=variant,
                          links=[link] if link else [])
                if (out / RESULTS).is_file():
                    job.skip = f"{out / RESULTS} exists"
                elif source_bank is not None and bank is not None:
                    sources = Path(source_bank if shared_bank else seed_bank(source_bank, seed))
                    job.copies = _source_copies(this.cfg, bank, sources)
                planned[out] = job
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


def _make_links(job: Job) -> None:
    for path, target in job.links:
        if not path.exists() and not path.is_symlink():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.symlink_to(target, target_is_directory=True)


def execute(jobs: list[Job], launcher: list[str], dry_run: bool) -> list[Job]:
    """Run the jobs in order; returns the failed ones. A failed stage-1 job
    stops the grid: every later run would need its TPV."""
    failed: list[Job] = []
    for job in jobs:
        cmd = command(job, launcher)
        for path, target in job.links:
            print(f"# link {path} -> {target} (the same configuration)", flush=True)
        if not dry_run:
            _make_links(job)
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
    lines.append(f"  {'table9':<9} {'Table 9':<9} training samples/s of PT and DTVG, measured "
                 f"here in one run ({TABLE9_RECIPE} by default)")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dtvg_dist.reproduce",
        description="Run a paper experiment (stage 1, then its recipes over seeds) and report it.",
        epilog=_listing(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("experiment", nargs="?", help="table1, table2, ..., table9 (see --list)")
    parser.add_argument("overrides", nargs="*", help="key=value recipe overrides for every run")
    parser.add_argument("--list", action="store_true", help="list the experiments and exit")
    parser.add_argument("--seeds", help="comma-separated seeds (default: the experiment's)")
    parser.add_argument("--variants", help=f"comma-separated: {', '.join(VARIANTS)}, or 'all' "
                        "for the experiment's report columns (default: its own)")
    parser.add_argument("--recipes", help="comma-separated subset of the experiment's recipes")
    parser.add_argument("--runs-dir", default="runs", help="output root (default: runs)")
    parser.add_argument("--launcher", default=None,
                        help='how to start python, e.g. "accelerate launch --config_file X" '
                        "(default: this python)")
    parser.add_argument("--shared-bank", action="store_true",
                        help="one stage-1 bank at the recipes' seed for every seed (default: a "
                        "bank per seed, P_init drawn with that seed, as the released scripts)")
    parser.add_argument("--lr-search", action="store_true",
                        help="C.7: run the dtvg column at lr {0.3,0.4,0.5} x source lr "
                        "{0.4,0.6,0.8,1.0}; the report picks each row's pair on validation")
    parser.add_argument("--std", choices=("sample", "population"), default="sample",
                        help="± in the report: sample (n-1, default) or population (n) std")
    parser.add_argument("--no-stage1", action="store_true", help="skip the stage-1 recipes")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--no-plot", action="store_true", help="write no PNG with the report")
    parser.add_argument("--steps", type=int, default=20, help="table9: timed steps per round")
    parser.add_argument("--rounds", type=int, default=3, help="table9: interleaved rounds")
    return parser


def table9(recipe: str, overrides: list[str], runs_dir: Path, steps: int, rounds: int) -> dict:
    """Measure and print Table 9 (training samples/s, PT vs DTVG) on this machine."""
    import logging

    from dtvg_dist.throughput import measure

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    for item in overrides:
        if item.split("=", 1)[0] == "output_dir":
            raise RecipeError(f"{item!r}: table9 writes under --runs-dir")
    out = runs_dir / "table9" / recipe
    cfg = load_recipe(recipe, [*overrides, "stage=2", f"output_dir={out}"])
    result = measure(cfg, steps=steps, rounds=rounds)
    paper = {m: TABLE9[m]["samples_per_s"] for m in ("pt", "dtvg")}
    result["paper_samples_per_s"] = paper
    result["paper_dtvg_over_pt"] = paper["dtvg"] / paper["pt"]
    ours = result["samples_per_s"]
    lines = [
        f"## Table 9: training throughput, {recipe} ({result['backbone']}, {result['device']}, "
        f"batch {result['batch_size']}, {rounds} rounds x {steps} steps, median)",
        "",
        "| method | ours samples/s | paper samples/s |",
        "|---|---|---|",
        f"| PT | {ours['pt']:.2f} | {paper['pt']} |",
        f"| DTVG | {ours['dtvg']:.2f} | {paper['dtvg']} |",
        f"| DTVG / PT | {result['dtvg_over_pt']:.3f} | {result['paper_dtvg_over_pt']:.3f} |",
        "",
        f"TPVs: {result['tpvs']}. The paper measured T5-base on one 32 GB GPU; only the "
        "ratio compares across machines. Its accuracy column (PT 74.1, DTVG 86.3) needs the "
        "full runs (table2's RTE row).",
    ]
    text = "\n".join(lines) + "\n"
    reports = runs_dir / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    (reports / "table9.md").write_text(text)
    (reports / "table9.json").write_text(json.dumps(result, indent=2) + "\n")
    print(text)
    print(f"wrote {reports / 'table9.md'}, {reports / 'table9.json'}")
    return result


@cli.command
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_intermixed_args(argv)
    if args.list:
        print(_listing())
        return 0
    runs_dir = Path(args.runs_dir)
    if args.experiment == "table9":
        recipes = _csv(args.recipes) or [TABLE9_RECIPE]
        if len(recipes) != 1:
            parser.error("table9 measures one recipe: --recipes NAME")
        try:
            table9(recipes[0], list(args.overrides), runs_dir, args.steps, args.rounds)
        except (RecipeError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        return 0
    if args.experiment not in EXPERIMENTS:
        parser.error(f"experiment {args.experiment!r} is not one of {', '.join(EXPERIMENTS)}, table9")
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
    launcher = shlex.split(args.launcher) if args.launcher else [sys.executable]
    try:
        jobs = plan(exp, seeds=seeds, variants=variants, overrides=list(args.overrides),
                    runs_dir=runs_dir, recipes=recipes, stage1=not args.no_stage1,
                    shared_bank=args.shared_bank, lr_search=args.lr_search)
    except RecipeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    todo = sum(job.skip is None for job in jobs)
    banks = "one shared stage-1 bank" if args.shared_bank else "a stage-1 bank per seed"
    print(f"# {exp.name} ({exp.table}): {len(jobs)} runs, {todo} to do, "
          f"seeds {','.join(map(str, seeds))}, variants {','.join(variants)}, {banks}"
          + (", lr search (C.7)" if args.lr_search else ""), flush=True)
    failed = execute(jobs, launcher, args.dry_run)
    report_variants = tuple(dict.fromkeys([*exp.variants, *variants]))
    flags = f" --variants {','.join(report_variants)} --std {args.std}" + (
        " --lr-search" if args.lr_search else "")
    if args.dry_run:
        print(f"# then: python -m dtvg_dist.report {exp.name} --runs-dir {runs_dir}{flags}")
        return 0
    paths = write_report(exp.name, runs_dir, seeds=seeds, with_plot=not args.no_plot,
                         variants=report_variants, std=args.std, lr_search=args.lr_search)
    print(paths["markdown"].read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    if failed:
        print(f"{len(failed)} run(s) failed: " + ", ".join(f"{j.recipe}/{j.seed}" for j in failed),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
