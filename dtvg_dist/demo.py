"""The offline demo: the paper's comparison on a synthetic suite, in minutes.

    python -m dtvg_dist.demo [--seeds 22,32,42] [--out runs/demo] [--recipe demo] [key=value ...]

For every seed it trains the TPV bank (stage 1: every source and the
low-resource target, P_init drawn under that seed), then the target with PT,
SPoT, all sources merged without grouping (`grouping.rule=all`) and DTVG,
all on the same target, data and budget. Then it reads the runs' own files
back (results.json, grouping.jsonl), prints and writes the table (test mean
± std per method, `demo.json` / `demo.md`), the groups DTVG chose over time,
and a figure of each source's similarity to the target and its group
membership over the steps (`demo.png` with its data in `demo-grouping.json`).

Everything runs in this process through the same `Pipeline` as
`python -m dtvg_dist.train`; the key=value overrides are the trainer's.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from dtvg_dist.config import RecipeError, list_recipes, load_recipe
from dtvg_dist.run_files import GROUPING, RESULTS, atomic_write_text, read_jsonl

log = logging.getLogger("dtvg_dist.demo")

DEFAULT_SEEDS = (22, 32, 42)  # the project's three seeds (paper C.3 runs three)
# method -> (title, the recipe overrides that make it); all share target, data and budget
METHODS: dict[str, tuple[str, tuple[str, ...]]] = {
    "pt": ("PT", ("method=pt",)),
    "spot": ("SPoT", ("method=spot",)),
    "all": ("all sources, no grouping", ("method=dtvg", "grouping.rule=all")),
    "dtvg": ("DTVG", ("method=dtvg",)),
}
RESERVED = ("seed", "output_dir", "bank_dir", "stage", "method", "prompt.init_seed")


def run_dir(out: Path, method: str, seed: int) -> Path:
    return out / method / str(seed)


def bank_dir(out: Path, seed: int) -> Path:
    return out / "bank" / f"seed{seed}"


def _seed_overrides(out: Path, seed: int) -> list[str]:
    # One bank per seed with P_init drawn under that seed, as the authors'
    # released scripts load `<task>_seed=<seed>` TPVs (zpy2477/DTVG).
    return [f"seed={seed}", f"prompt.init_seed={seed}", f"bank_dir={bank_dir(out, seed)}"]


def stage1_recipe_for(recipe: str) -> str:
    """Stage 1 runs `<recipe>-stage1` when there is one (the demo's evaluates
    its long source runs less often), else the recipe itself."""
    return f"{recipe}-stage1" if f"{recipe}-stage1" in list_recipes() else recipe


def run_all(recipe: str, overrides: list[str], seeds: tuple[int, ...], out: Path,
            methods: tuple[str, ...]) -> None:
    """Stage 1 then every method, seed by seed, in this process."""
    from dtvg_dist.distributed import accelerator_for_recipe
    from dtvg_dist.pipeline import Pipeline

    stage1_recipe = stage1_recipe_for(recipe)
    accelerator = None
    for seed in seeds:
        common = [*overrides, *_seed_overrides(out, seed)]
        jobs = [("stage 1", stage1_recipe, [*common, "stage=1", f"output_dir={out / 'stage1' / str(seed)}"])]
        jobs += [(method, recipe, [*common, *METHODS[method][1], "stage=2",
                                   f"output_dir={run_dir(out, method, seed)}"]) for method in methods]
        for name, job_recipe, job_overrides in jobs:
            cfg = load_recipe(job_recipe, job_overrides)
            accelerator = accelerator or accelerator_for_recipe(cfg, str(out))
            log.info("demo: seed %d, %s", seed, name)
            Pipeline(cfg, accelerator).run()


# ------------------------------------------------------------------ the table
def _score(results: dict[str, Any], split: str) -> float | None:
    block = results.get("best_validation" if split == "validation" else "test") or {}
    value = block.get(results.get("primary_metric", ""))
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def collect(out: Path, seeds: tuple[int, ...], methods: tuple[str, ...]) -> dict[str, Any]:
    """The demo's table, read back from the runs' own files."""
    from dtvg_dist.report import aggregate, group_history

    rows = []
    target, metric = None, None
    for method in methods:
        per_seed = {}
        for seed in seeds:
            path = run_dir(out, method, seed)
            results = json.loads((path / RESULTS).read_text())
            target, metric = results["task"], results["primary_metric"]
            entry: dict[str, Any] = {
                "run_dir": str(path),
                "test": _score(results, "test"),
                "validation": _score(results, "validation"),
                "best_step": results.get("best_step"),
                "steps": results.get("steps"),
            }
            if "spot_source" in results:
                entry["spot_source"] = results["spot_source"]
            if (path / GROUPING).is_file():
                entry["groups"] = [
                    {"first_step": a, "last_step": b, "group": g}
                    for a, b, g in group_history(path / GROUPING, max_lines=10**9)
                ]
                rows_g = read_jsonl(path / GROUPING)
                entry["group_steps"] = {
                    name: sum(name in r["group"] for r in rows_g) for name in rows_g[0]["sims"]
                } if rows_g else {}
            per_seed[str(seed)] = entry
        tests = [e["test"] for e in per_seed.values() if e["test"] is not None]
        vals = [e["validation"] for e in per_seed.values() if e["validation"] is not None]
        mean, std = aggregate(tests)
        vmean, vstd = aggregate(vals)
        rows.append({"method": method, "title": METHODS[method][0], "test_mean": mean, "test_std": std,
                     "validation_mean": vmean, "validation_std": vstd, "seeds": per_seed})
    return {"target": target, "metric": metric, "seeds": list(seeds), "std": "sample (n - 1)",
            "out": str(out), "rows": rows}


def _pm(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "-"
    return f"{mean:5.1f} ± {std:4.1f}" if std is not None else f"{mean:5.1f}"


def to_text(table: dict[str, Any]) -> str:
    seeds = table["seeds"]
    lines = [
        f"target {table['target']}: test {table['metric']} (%), mean ± sample std over seeds "
        f"{', '.join(map(str, seeds))}",
        f"{'method':<26} {'test':>13} {'validation':>13}   per-seed test",
    ]
    for row in table["rows"]:
        per = " ".join(f"{row['seeds'][str(s)]['test']:5.1f}" for s in seeds)
        lines.append(f"{row['title']:<26} {_pm(row['test_mean'], row['test_std']):>13} "
                     f"{_pm(row['validation_mean'], row['validation_std']):>13}   {per}")
    for row in table["rows"]:
        if row["method"] == "spot":
            picked = ", ".join(f"seed {s}: {row['seeds'][str(s)].get('spot_source')}" for s in seeds)
            lines.append(f"SPoT started from: {picked}")
    for row in table["rows"]:
        if row["method"] != "dtvg":
            continue
        lines.append("DTVG groups chosen over time (steps: sources):")
        for s in seeds:
            lines.append(f"  seed {s}:")
            for g in row["seeds"][str(s)].get("groups", []):
                lines.append(f"    {g['first_step']:>5}-{g['last_step']:<5} "
                             f"{', '.join(g['group']) or '(target only)'}")
    return "\n".join(lines)


def write_outputs(out: Path, table: dict[str, Any], seeds: tuple[int, ...]) -> dict[str, Path]:
    paths = {"json": out / "demo.json", "text": out / "demo.txt"}
    atomic_write_text(paths["json"], json.dumps(table, indent=2) + "\n")
    atomic_write_text(paths["text"], to_text(table) + "\n")
    if any(r["method"] == "dtvg" for r in table["rows"]):
        from dtvg_dist.figures import grouping_figure

        runs = {f"DTVG seed {s}": run_dir(out, "dtvg", s) for s in seeds}
        paths.update(grouping_figure(runs, out / "demo.png", title=f"DTVG on {table['target']}"))
    return paths


def _csv(text: str | None) -> list[str]:
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dtvg_dist.demo",
        description="PT, SPoT, all-sources merging and DTVG on the synthetic suite, over seeds.",
    )
    parser.add_argument("overrides", nargs="*", help="key=value recipe overrides for every run")
    parser.add_argument("--recipe", default="demo", help="the recipe to start from (default: demo)")
    parser.add_argument("--seeds", default=None,
                        help=f"comma-separated (default: {','.join(map(str, DEFAULT_SEEDS))})")
    parser.add_argument("--methods", default=None, help=f"comma-separated subset of {','.join(METHODS)}")
    parser.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    args = parser.parse_intermixed_args(argv)
    try:
        seeds = tuple(int(s) for s in _csv(args.seeds)) or DEFAULT_SEEDS
    except ValueError:
        parser.error(f"--seeds {args.seeds!r}: give integers, e.g. --seeds 22,32")
    methods = tuple(_csv(args.methods)) or tuple(METHODS)
    for method in methods:
        if method not in METHODS:
            parser.error(f"--methods: {method!r} is not one of {', '.join(METHODS)}")
    for item in args.overrides:
        if item.split("=", 1)[0] in RESERVED:
            print(f"error: {item!r}: the demo sets {', '.join(RESERVED)} itself", file=sys.stderr)
            return 2
    out = Path(args.out)
    try:
        load_recipe(args.recipe, list(args.overrides))  # errors before anything trains
    except RecipeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    start = time.time()
    run_all(args.recipe, list(args.overrides), seeds, out, methods)
    table = collect(out, seeds, methods)
    table["wall_time_s"] = round(time.time() - start, 1)
    paths = write_outputs(out, table, seeds)
    print(to_text(table))
    print(f"({len(seeds)} seeds x {len(methods)} methods in {table['wall_time_s']:.0f} s; wrote "
          + ", ".join(str(p) for p in paths.values()) + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
