"""Run one of the paper's experiments end to end: its stage-1 recipes, then
every row's recipe over the experiment's seeds, then the report.

    python -m dtvg_dist.reproduce EXPERIMENT [--executor serial|local|slurm]
        [--max-parallel N] [--gpus-per-run auto|N] [--gpu-memory GiB]
        [--seeds 22,32] [--variants dtvg,pt] [--recipes A,B] [--runs-dir runs]
        [--launcher "accelerate launch --config_file X"] [--shared-bank]
        [--lr-search] [--std sample|population] [--no-stage1] [--dry-run]
        [--gpu a100-80gb|h100-80gb|...] [--mfu 0.4] [key=value ...]
    python -m dtvg_dist.reproduce EXPERIMENT --status [same options]
    python -m dtvg_dist.reproduce demo [--seeds 22,32] [--variants pt,dtvg] [...]
    python -m dtvg_dist.reproduce table9 [--recipes t5-base-dtvg-rte] [--steps 20] [--rounds 3]
    python -m dtvg_dist.reproduce --list

The experiment is a grid of jobs with explicit dependencies
(dtvg_dist.grid): a stage-2 run starts only once the stage-1 runs of its
bank are done, and a failed stage-1 run fails only the runs that need it.
The executor decides where they run: `serial` one at a time (default),
`local` up to --max-parallel at once on this machine's GPUs (or cores),
`slurm` on a cluster. Each run is a subprocess of the trainer CLI, so a
crash ends one run, not the grid; its output is in `<run folder>/run.log`.

A run whose results.json exists is skipped, a stage-1 run whose TPVs are
all in its bank is skipped, and a run another process holds is waited for,
never started twice, so an interrupted grid resumes by running the same
command again; `--status` shows every run's state.

`--gpus-per-run auto` (default) asks the planner (python -m dtvg_dist.plan)
for each recipe's recommended launch on the visible GPUs (or --gpu-memory);
on a CPU machine every run is one process. A number overrides it.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import shlex
import sys
import time
from pathlib import Path

from dtvg_dist import cli
from dtvg_dist.costs import DEFAULT_MFU, GIB, GPU_PEAK_BF16, PlanError
from dtvg_dist.grid.build import LaunchFor, demo_jobs, experiment_jobs, grid_cost
from dtvg_dist.grid.executors import (
    FAILED,
    OK_STATES,
    SUBMITTED,
    Executor,
    Result,
    load_executors,
    make_executor,
    summary,
    visible_gpus,
)
from dtvg_dist.grid.jobs import Launch
from dtvg_dist.grid.status import render, status
from dtvg_dist.orchestration.config import RecipeError, launch_config_path, load_recipe
from dtvg_dist.reporting.demo_report import DEMO, DemoSpec, claims, collect, to_text, write_outputs
from dtvg_dist.reporting.paper_results import EXPERIMENTS, TABLE9, VARIANTS
from dtvg_dist.reporting.report import measured_speed, write_report

TABLE9_RECIPE = "t5-base-dtvg-rte"  # appendix J: T5-base on RTE
REPO = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------- how to launch
def _absolute_configs(tokens: list[str]) -> list[str]:
    """The planner prints launch_configs/ relative to the repository; a grid
    may run from anywhere."""
    return [str(REPO / t) if t.startswith("launch_configs/") else t for t in tokens]


def planned_launch(recipe: str, overrides: list[str], gpus: int | None, gpu_memory_gib: float,
                   max_gpus: int) -> Launch:
    """The planner's launch for a recipe: at `gpus` GPUs, or (None) at the
    fewest GPUs on which a mode fits. One GPU in DDP is this python itself
    (launch_configs/single_gpu.yaml says the two are the same)."""
    from dtvg_dist.plan import make_plan, recommend

    plan = (make_plan(recipe, gpus, gpu_memory_gib, 1, overrides) if gpus is not None
            else recommend(recipe, gpu_memory_gib, max_gpus, overrides))
    if plan.recommended is None:
        raise RecipeError(f"recipe {recipe}: no launch mode fits {plan.gpus} GPU(s) of "
                          f"{gpu_memory_gib:g} GiB ({plan.why}); see python -m dtvg_dist.plan "
                          f"recipe={recipe} --gpus {plan.gpus} --gpu-memory {gpu_memory_gib:g}")
    mode = plan.mode(plan.recommended)
    tokens = shlex.split(mode.launch)
    cut = tokens.index("-m")
    tail = tokens[cut + 2:]  # recipe=R, the overrides given, the mode's own
    extra = tuple(t for t in tail[1:] if t not in overrides)
    if plan.world == 1 and mode.key == "ddp":
        return Launch(prefix=(sys.executable,), gpus=1, extra=extra, mode="ddp")
    return Launch(prefix=tuple(_absolute_configs(tokens[:cut])), gpus=plan.world, extra=extra,
                  mode=mode.key)


def launch_for(gpus_per_run: str, launcher: str | None, gpu_memory_gib: float | None,
               devices: list[str]) -> LaunchFor:
    """How every job of the grid is started, from --gpus-per-run, --launcher
    and --gpu-memory; the planner is asked once per recipe and overrides."""
    explicit = None if gpus_per_run == "auto" else int(gpus_per_run)
    if launcher:
        prefix = tuple(shlex.split(launcher))
        count = explicit if explicit is not None else (1 if devices else 0)
        return lambda recipe, overrides: Launch(prefix=prefix, gpus=count)
    memory = gpu_memory_gib
    if memory is None and devices:
        import torch

        memory = torch.cuda.get_device_properties(0).total_memory / GIB
    if memory is None:  # no GPU: one CPU process per run, or the explicit count
        if explicit is None or explicit <= 1:
            return lambda recipe, overrides: Launch(prefix=(sys.executable,), gpus=explicit or 0)
        count = explicit
        ddp = ("accelerate", "launch", "--config_file", str(launch_config_path("multi_gpu_ddp")),
               "--num_processes", str(count))
        return lambda recipe, overrides: Launch(prefix=ddp, gpus=count, mode="ddp")
    max_gpus = max(1, len(devices)) if devices else 8

    @functools.cache
    def cached(recipe: str, overrides: tuple[str, ...]) -> Launch:
        return planned_launch(recipe, list(overrides), explicit, memory, max_gpus)

    return lambda recipe, overrides: cached(recipe, tuple(overrides))


def _gpus_per_run(text: str) -> str:
    if text == "auto" or (text.isdigit() and int(text) >= 0):
        return text
    raise argparse.ArgumentTypeError(f"{text!r}: give auto or a number of GPUs, e.g. 1")


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


    lines.append(f"  {'demo':<9} {'demo':<9} {len(DEMO.methods)} methods x {len(DEMO.seeds)} seeds "
                 f"{DEMO.seeds} on the synthetic suite, offline (python -m dtvg_dist.demo prints it)")
    return "\n".join(lines)


def _csv(text: str | None) -> list[str]:
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dtvg_dist.reproduce",
        description="Run a paper experiment (stage 1, then its recipes over seeds) and report it.",
        epilog=_listing(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("experiment", nargs="?", help="table1, table2, ..., table9, demo (see --list)")
    parser.add_argument("overrides", nargs="*", help="key=value recipe overrides for every run")
    parser.add_argument("--list", action="store_true", help="list the experiments and exit")
    parser.add_argument("--seeds", help="comma-separated seeds (default: the experiment's)")
    parser.add_argument("--variants", help=f"comma-separated: {', '.join(VARIANTS)}, or 'all' "
                        "for the experiment's report columns (default: its own); demo: its methods")
    parser.add_argument("--recipes", help="comma-separated subset of the experiment's recipes "
                        "(demo: the one stage-2 recipe)")
    parser.add_argument("--runs-dir", default="runs", help="output root (default: runs)")
    parser.add_argument("--launcher", default=None,
                        help='how to start python, e.g. "accelerate launch --config_file X" '
                        "(default: the planner's launch, see --gpus-per-run)")
    parser.add_argument("--shared-bank", action="store_true",
                        help="one stage-1 bank at the recipes' seed for every seed (default: a "
                        "bank per seed, P_init drawn with that seed, as the released scripts)")
    parser.add_argument("--lr-search", action="store_true",
                        help="C.7: run the dtvg column at lr {0.3,0.4,0.5} x source lr "
                        "{0.4,0.6,0.8,1.0}; the report picks each row's pair on validation")
    parser.add_argument("--std", choices=("sample", "population"), default="sample",
                        help="± in the report: sample (n-1, default) or population (n) std")
    parser.add_argument("--no-stage1", action="store_true", help="skip the stage-1 recipes")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the commands and the grid's size and estimated GPU-hours, run nothing")
    parser.add_argument("--gpu", default="a100-80gb", choices=list(GPU_PEAK_BF16),
                        help="--dry-run: the card the GPU-hours are for (peak dense bf16 from its data sheet)")
    parser.add_argument("--mfu", type=float, default=DEFAULT_MFU,
                        help=f"--dry-run: model FLOP utilisation assumed (default {DEFAULT_MFU})")
    parser.add_argument("--no-plot", action="store_true", help="write no PNG with the report")
    parser.add_argument("--steps", type=int, default=20, help="table9: timed steps per round")
    parser.add_argument("--rounds", type=int, default=3, help="table9: interleaved rounds")
    grid = parser.add_argument_group("executors (where the runs go)")
    executors = load_executors()
    grid.add_argument("--executor", default="serial", choices=list(executors),
                      help="serial: one run at a time (default); local: several at once on this "
                      "machine; slurm: submitted to a SLURM cluster")
    grid.add_argument("--status", action="store_true",
                      help="print every run's state (done, running, pending, failed, missing); run nothing")
    grid.add_argument("--gpus-per-run", default="auto", type=_gpus_per_run,
                      help="auto (default): the planner's recommended launch per recipe; or a number")
    grid.add_argument("--gpu-memory", type=float, default=None, metavar="GiB",
                      help="memory of one GPU for the planner (default: the first visible GPU's)")
    for cls in executors.values():
        cls.add_arguments(grid)
    return parser


def table9(recipe: str, overrides: list[str], runs_dir: Path, steps: int, rounds: int) -> dict:
    """Measure and print Table 9 (training samples/s, PT vs DTVG) on this machine."""
    import logging

    from dtvg_dist.orchestration.throughput import measure

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
    finished = {m: measured_speed(runs_dir, recipe, m, EXPERIMENTS["table2"].seeds) for m in ("pt", "dtvg")}
    result["finished_runs"] = finished
    if all(finished[m]["samples_per_s"] for m in finished):
        lines += ["", f"Measured during training by the finished runs of {recipe} under {runs_dir} "
                  "(their results.json, median over seeds): " + ", ".join(
                      f"{m.upper()} {finished[m]['samples_per_s']:.2f} samples/s, peak "
                      f"{finished[m]['peak_memory_mb']} MiB ({finished[m]['runs']} runs)" for m in finished)]
    text = "\n".join(lines) + "\n"
    reports = runs_dir / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    (reports / "table9.md").write_text(text)
    (reports / "table9.json").write_text(json.dumps(result, indent=2) + "\n")
    print(text)
    print(f"wrote {reports / 'table9.md'}, {reports / 'table9.json'}")
    return result


def _failed_code(results: dict[str, Result]) -> int:
    """The exit status of a grid: 0, or the first failed run's (1 when unknown)."""
    bad = [r for r in results.values() if r.state not in OK_STATES + (SUBMITTED,)]
    if not bad:
        return 0
    print(f"{len(bad)} run(s) did not finish: " + ", ".join(f"{r.job} ({r.state})" for r in bad),
          file=sys.stderr)
    return next((r.code for r in bad if r.state == FAILED and r.code), 1)


def _submitted(results: dict[str, Result], argv_hint: str) -> bool:
    if not any(r.state == SUBMITTED for r in results.values()):
        return False
    print(f"# submitted; follow with: {argv_hint} --status", flush=True)
    return True


def run_demo(out: Path, *, seeds: tuple[int, ...], methods: tuple[str, ...], overrides: list[str],
             executor: Executor, recipe: str | None = None, dry_run: bool = False,
             show_status: bool = False, launch: LaunchFor | None = None, spec: DemoSpec = DEMO) -> int:
    """The demo's grid (scenario `spec`) on an executor, then its table and
    figures (the runs' own files read back). Raises RecipeError for a bad recipe."""
    kwargs = {"launch_for": launch} if launch is not None else {}
    jobs = demo_jobs(spec, out=out, seeds=seeds, methods=methods, overrides=overrides,
                     recipe=recipe, **kwargs)
    if show_status:
        print(render(status(jobs, executor.scheduler_states(jobs))))
        return 0
    logging.getLogger("dtvg_dist.demo").info(
        "demo: %d runs (%s), seeds %s, output %s, executor %s", len(jobs),
        ", ".join(dict.fromkeys(j.describe().split(": ", 1)[1] for j in jobs)),
        ",".join(map(str, seeds)), out, executor.name)
    start = time.time()
    results = executor.run(jobs, dry_run=dry_run)
    if dry_run or _submitted(results, f"python -m dtvg_dist.reproduce demo --runs-dir {out.parent}"):
        return 0
    code = _failed_code(results)
    if code:
        return code
    table = collect(out, seeds, methods, spec)
    table["claims"] = claims(table, spec)
    table["wall_time_s"] = round(time.time() - start, 1)
    table["executor"] = executor.name
    paths = write_outputs(out, table)
    print(to_text(table))
    print(f"({len(jobs)} runs in {table['wall_time_s']:.0f} s; wrote "
          + ", ".join(str(p) for p in paths.values()) + ")")
    return 0


def _demo(parser: argparse.ArgumentParser, args: argparse.Namespace, executor: Executor,
          launch: LaunchFor) -> int:
    try:
        seeds = tuple(dict.fromkeys(int(s) for s in _csv(args.seeds))) or DEMO.seeds
    except ValueError:
        parser.error(f"--seeds {args.seeds!r}: give integers, e.g. --seeds 22,32")
    methods = tuple(dict.fromkeys(_csv(args.variants))) or tuple(m.key for m in DEMO.methods)
    keys = [m.key for m in DEMO.methods]
    for method in methods:
        if method not in keys:
            parser.error(f"--variants: {method!r} is not one of the demo's {', '.join(keys)}")
    recipes = _csv(args.recipes)
    if len(recipes) > 1:
        parser.error("demo runs one stage-2 recipe: --recipes NAME")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    return run_demo(Path(args.runs_dir) / "demo", seeds=seeds, methods=methods,
                    overrides=list(args.overrides), executor=executor,
                    recipe=recipes[0] if recipes else None, dry_run=args.dry_run,
                    show_status=args.status, launch=launch)


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
    if args.experiment not in (*EXPERIMENTS, "demo"):
        parser.error(f"experiment {args.experiment!r} is not one of "
                     f"{', '.join(EXPERIMENTS)}, demo, table9")
    try:
        executor = make_executor(args.executor, args)
        devices = visible_gpus() if args.gpus_per_run == "auto" and not args.launcher else []
        launch = launch_for(args.gpus_per_run, args.launcher, args.gpu_memory, devices)
        if args.experiment == "demo":
            return _demo(parser, args, executor, launch)
    except (RecipeError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
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
    try:
        jobs = experiment_jobs(exp, seeds=seeds, variants=variants, overrides=list(args.overrides),
                               runs_dir=runs_dir, recipes=recipes, stage1=not args.no_stage1,
                               shared_bank=args.shared_bank, lr_search=args.lr_search,
                               launch_for=launch)
    except RecipeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.status:
        print(render(status(jobs, executor.scheduler_states(jobs))))
        return 0
    todo = sum(not job.is_done() for job in jobs)
    banks = "one shared stage-1 bank" if args.shared_bank else "a stage-1 bank per seed"
    print(f"# {exp.name} ({exp.table}): {len(jobs)} runs, {todo} to do, "
          f"seeds {','.join(map(str, seeds))}, variants {','.join(variants)}, {banks}, "
          f"executor {executor.name}" + (", lr search (C.7)" if args.lr_search else ""), flush=True)
    results = executor.run(jobs, dry_run=args.dry_run)
    report_variants = tuple(dict.fromkeys([*exp.variants, *variants]))
    flags = f" --variants {','.join(report_variants)} --std {args.std}" + (
        " --lr-search" if args.lr_search else "")
    if args.dry_run:
        print(f"# then: python -m dtvg_dist.report {exp.name} --runs-dir {runs_dir}{flags}")
        try:
            print("\n".join(grid_cost(jobs, args.gpu, args.mfu).lines(args.gpu, args.mfu)))
        except (PlanError, RecipeError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        return 0
    print(f"# {summary(results)}", flush=True)
    if _submitted(results, f"python -m dtvg_dist.reproduce {exp.name} --runs-dir {runs_dir}"):
        print(f"# then: python -m dtvg_dist.report {exp.name} --runs-dir {runs_dir}{flags}")
        return 0
    paths = write_report(exp.name, runs_dir, seeds=seeds, with_plot=not args.no_plot,
                         variants=report_variants, std=args.std, lr_search=args.lr_search)
    print(paths["markdown"].read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 1 if _failed_code(results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
