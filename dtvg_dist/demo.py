"""The offline demo: the paper's comparison on a synthetic suite, in minutes.

    python -m dtvg_dist.demo [--scenario two-sources|one-source] [--seeds 22,32,42]
        [--methods pt,spot,all,dtvg] [--out runs/demo] [--recipe demo] [key=value ...]

Scenario `two-sources` (the default) puts the paper's Figure 1 claim to the
test: a target that needs what two sources teach, one each, beside
conflicting and unrelated sources. `one-source`: one source suffices.

`python -m dtvg_dist.reproduce demo` run serially in this process. For
every seed it trains the TPV bank (stage 1: every source and the
low-resource target, P_init drawn under that seed, recipe `demo-stage1`),
then the target with each of the demo's methods (PT, SPoT, all sources
merged without grouping, DTVG: analysis.demo_report.DEMO), all on the same
target, data and budget (recipe `demo`). Then it reads the runs' own files
back and writes and prints the table (`demo.json` / `demo.txt`), the groups
DTVG chose over time, and two figures, each with its data beside it.

The runs go through the same `Pipeline` as `python -m dtvg_dist.train`,
one after the other in this process (no interpreter start per run); the
key=value overrides are the trainer's and apply to every run. Other
executors: `python -m dtvg_dist.reproduce demo --executor local`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from dtvg_dist import cli
from dtvg_dist.grid.build import DEMO_RESERVED
from dtvg_dist.grid.executors import SerialExecutor
from dtvg_dist.grid.jobs import Job
from dtvg_dist.orchestration.config import RecipeError, load_recipe
from dtvg_dist.reporting.demo_report import (
    DEFAULT_SCENARIO,
    DEMO,
    SCENARIOS,
    bank_dir,
    claims,
    run_dir,
)
from dtvg_dist.reproduce import run_demo

log = logging.getLogger("dtvg_dist.demo")

DEFAULT_SEEDS = DEMO.seeds
METHODS = {m.key: (m.title, m.overrides) for m in DEMO.methods}
RESERVED = DEMO_RESERVED
CLAIMS = DEMO.claims  # the conclusion the demo checks on every run (claims(table))
__all__ = ["CLAIMS", "DEFAULT_SEEDS", "METHODS", "RESERVED", "SCENARIOS", "bank_dir", "claims", "in_process_runner",
           "main", "run_dir"]


def in_process_runner():
    """Train a job in this process, on one accelerator shared by every run,
    with the trainer CLI's error handling; its log lines also go to the
    run's log file."""
    from dtvg_dist.orchestration.pipeline import Pipeline
    from dtvg_dist.training.distributed import accelerator_for_recipe

    state: dict[str, object] = {}

    def run(job: Job) -> int:
        overrides = [a for a in [*job.args, *job.launch.extra] if not a.startswith("recipe=")]
        job.run_dir.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(job.log)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)

        def train() -> None:
            cfg = load_recipe(job.recipe, overrides)
            if "accelerator" not in state:
                state["accelerator"] = accelerator_for_recipe(cfg, str(cfg.output_dir))
            log.info("demo: %s (recipe %s)", job.describe(), job.recipe)
            Pipeline(cfg, state["accelerator"]).run()

        try:
            code, _ = cli.run_job(train)
            if code:
                log.error("error: %s exited %d (its error is above)", job.name, code)
            return code
        finally:
            root.removeHandler(handler)
            handler.close()

    return run


def _csv(text: str | None) -> list[str]:
    return [item.strip() for item in (text or "").split(",") if item.strip()]


@cli.command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dtvg_dist.demo",
        description="PT, SPoT, all sources merged and DTVG on the synthetic suite, over seeds.",
    )
    parser.add_argument("overrides", nargs="*", help="key=value recipe overrides for every run")
    parser.add_argument("--scenario", default=DEFAULT_SCENARIO, choices=list(SCENARIOS),
                        help="two-sources (default): the target needs what two sources teach; "
                             "one-source: one source suffices")
    parser.add_argument("--recipe", default=None, help="the stage-2 recipe (default: the scenario's, "
                        "demo or demo-one-source; stage 1 uses <recipe>-stage1 when it exists)")
    parser.add_argument("--seeds", default=None,
                        help=f"comma-separated (default: {','.join(map(str, DEFAULT_SEEDS))})")
    parser.add_argument("--methods", default=None, help=f"comma-separated subset of {','.join(METHODS)}")
    parser.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    args = parser.parse_intermixed_args(argv)
    try:
        seeds = tuple(dict.fromkeys(int(s) for s in _csv(args.seeds))) or DEFAULT_SEEDS
    except ValueError:
        parser.error(f"--seeds {args.seeds!r}: give integers, e.g. --seeds 22,32")
    methods = tuple(dict.fromkeys(_csv(args.methods))) or tuple(METHODS)
    for method in methods:
        if method not in METHODS:
            parser.error(f"--methods: {method!r} is not one of {', '.join(METHODS)}")
    for item in args.overrides:
        if item.split("=", 1)[0] in RESERVED:
            parser.error(f"{item!r}: the demo sets {', '.join(RESERVED)} itself")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    # Each run sets its own thread count (recipe key distributed.threads,
    # default 1: the demo's tensors are tiny, a second thread buys nothing and
    # on a shared machine made steps 10-100x slower, bench/RESULTS.md), as it
    # does under every executor of reproduce.
    try:
        return run_demo(Path(args.out), seeds=seeds, methods=methods, overrides=list(args.overrides),
                        executor=SerialExecutor(runner=in_process_runner()),
                        recipe=args.recipe or SCENARIOS[args.scenario].recipe, spec=SCENARIOS[args.scenario])
    except RecipeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
