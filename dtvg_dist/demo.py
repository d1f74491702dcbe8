"""The offline demo: the paper's comparison on a synthetic suite, in minutes.

    python -m dtvg_dist.demo [--seeds 22,32,42] [--methods pt,spot,all,dtvg]
        [--out runs/demo] [--recipe demo] [key=value ...]

For every seed it trains the TPV bank (stage 1: every source and the
low-resource target, P_init drawn under that seed, recipe `demo-stage1`),
then the target with PT, SPoT, all sources merged without grouping
(`grouping.rule=all`) and DTVG, all on the same target, data and budget
(recipe `demo`). Then it reads the runs' own files back (results.json,
grouping.jsonl) and writes and prints the table (test mean ± std per
method, `demo.json` / `demo.txt`), the groups DTVG chose over time, and two
figures, each with its data beside it: `demo-grouping.png` (each source's
similarity to the target and its group membership over the steps, DTVG's
validation curve next to PT's) and `demo-banks.png` (each seed's TPV
similarity map).

Everything runs in this process through the same `Pipeline` as
`python -m dtvg_dist.train`; the key=value overrides are the trainer's and
apply to every run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from dtvg_dist.analysis.paper_results import VARIANTS
from dtvg_dist.config import RecipeError, list_recipes, load_recipe
from dtvg_dist.store.run_files import GROUPING, RESULTS, atomic_write_text, read_jsonl

log = logging.getLogger("dtvg_dist.demo")

DEFAULT_SEEDS = (22, 32, 42, 52, 62)  # the few-shot seeds (paper C.3: 22, 32, 42; Figure 11 adds 52), and 62
# method -> (title, the recipe overrides that make it: reproduce's variants);
# all share target, data and budget
METHODS: dict[str, tuple[str, tuple[str, ...]]] = {
    "pt": ("PT", VARIANTS["pt"]),
    "spot": ("SPoT", VARIANTS["spot"]),
    "all": ("all sources, no grouping", VARIANTS["all"]),
    "dtvg": ("DTVG", VARIANTS["dtvg"]),
}
# The demo's conclusion, checked on every run rather than asserted once:
# (method, baseline, margin in points, over): the method's test score is at
# least `margin` above the baseline's on every seed ("seed") or in the mean
# over seeds ("mean"), at the same stage-2 budget. Merging every source is
# fragile (its conflicting sources cancel the agreeing ones by an amount
# that moves with the seed), so only its mean is claimed.
CLAIMS: tuple[tuple[str, str, float, str], ...] = (("dtvg", "pt", 10.0, "seed"), ("dtvg", "all", 10.0, "mean"))
# and DTVG's group holds no source whose rule conflicts with the target's at
# any step after this one, on any seed
NO_CONFLICT_AFTER_STEP = 0
RESERVED = ("seed", "output_dir", "bank_dir", "stage", "method", "prompt.init_seed", "grouping.rule")


def run_dir(out: Path, method: str, seed: int) -> Path:
    return Path(out) / method / str(seed)


def bank_dir(out: Path, seed: int) -> Path:
    return Path(out) / "bank" / f"seed{seed}"


def stage1_recipe_for(recipe: str) -> str:
    """Stage 1 runs `<recipe>-stage1` when there is one (the demo's evaluates
    its long source runs less often), else the recipe itself."""
    return f"{recipe}-stage1" if f"{recipe}-stage1" in list_recipes() else recipe


def jobs(recipe: str, overrides: list[str], seeds: tuple[int, ...], out: Path,
         methods: tuple[str, ...]) -> list[tuple[str, str, list[str]]]:
    """(what, recipe, overrides) of every run, in order: per seed, stage 1
    then each method. One bank per seed with P_init drawn under that seed,
    as the authors' released scripts load `<task>_seed=<seed>` TPVs
    (zpy2477/DTVG, its run scripts)."""
    out_jobs = []
    for seed in seeds:
        common = [*overrides, f"seed={seed}", f"prompt.init_seed={seed}", f"bank_dir={bank_dir(out, seed)}"]
        out_jobs.append((f"seed {seed}: stage 1", stage1_recipe_for(recipe),
                         [*common, "stage=1", f"output_dir={Path(out) / 'stage1' / str(seed)}"]))
        out_jobs += [(f"seed {seed}: {METHODS[m][0]}", recipe,
                      [*common, *METHODS[m][1], "stage=2", f"output_dir={run_dir(out, m, seed)}"])
                     for m in methods]
    return out_jobs


def run_all(planned: list[tuple[str, str, list[str]]]) -> None:
    """Every job in this process, on one accelerator."""
    from dtvg_dist.pipeline import Pipeline
    from dtvg_dist.training.distributed import accelerator_for_recipe

    accelerator = None
    for what, recipe, overrides in planned:
        cfg = load_recipe(recipe, overrides)
        accelerator = accelerator or accelerator_for_recipe(cfg, str(cfg.output_dir))
        log.info("demo: %s (recipe %s)", what, recipe)
        Pipeline(cfg, accelerator).run()


# ------------------------------------------------------------------ the table
def _score(results: dict[str, Any], split: str) -> float | None:
    block = results.get("best_validation" if split == "validation" else "test") or {}
    value = block.get(results.get("primary_metric", ""))
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _groups(path: Path) -> dict[str, Any]:
    """The grouping history of a run: runs of one group, steps per source."""
    from dtvg_dist.analysis.report import group_history

    rows = read_jsonl(path)
    sources = list(rows[0]["sims"]) if rows else []
    return {
        "groups": [{"first_step": a, "last_step": b, "group": g}
                   for a, b, g in group_history(path, max_lines=max(1, len(rows)))],
        "steps_in_group": {s: sum(s in r["group"] for r in rows) for s in sources},
    }


def collect(out: Path, seeds: tuple[int, ...], methods: tuple[str, ...]) -> dict[str, Any]:
    """The demo's table, read back from the runs' own files."""
    from dtvg_dist.analysis.report import aggregate

    rows, first = [], None
    for method in methods:
        per_seed = {}
        for seed in seeds:
            path = run_dir(out, method, seed)
            results = json.loads((path / RESULTS).read_text())
            first = first or results
            entry: dict[str, Any] = {
                "run_dir": str(path), "test": _score(results, "test"),
                "validation": _score(results, "validation"),
                "best_step": results.get("best_step"), "steps": results.get("steps"),
            }
            if "spot_source" in results:
                entry["spot_source"] = results["spot_source"]
            if (path / GROUPING).is_file():
                entry.update(_groups(path / GROUPING))
            per_seed[str(seed)] = entry
        test_mean, test_std = aggregate([e["test"] for e in per_seed.values() if e["test"] is not None])
        val_mean, val_std = aggregate([e["validation"] for e in per_seed.values()
                                       if e["validation"] is not None])
        rows.append({"method": method, "title": METHODS[method][0], "overrides": list(METHODS[method][1]),
                     "test_mean": test_mean, "test_std": test_std,
                     "validation_mean": val_mean, "validation_std": val_std, "seeds": per_seed})
    assert first is not None
    rows.append(_stage1_target_row(out, seeds, first["task"]))
    return {
        "target": first["task"], "metric": first["primary_metric"], "seeds": list(seeds),
        "std": "sample (n - 1)", "out": str(out),
        "budget": {
            "target_train_examples": first.get("train_examples"), "target_steps": first.get("steps"),
            "test_examples": first.get("test_examples"), "stage1": stage1_runs(out, seeds[0]),
        },
        "rows": rows,
    }


def _stage1_target_row(out: Path, seeds: tuple[int, ...], target: str) -> dict[str, Any]:
    """PT as stage 1 ran it on the target: the run whose prompt gives SPoT and
    DTVG their target TPV, so its steps are their extra cost; a row of its own."""
    from dtvg_dist.analysis.report import aggregate

    per_seed = {}
    for seed in seeds:
        path = Path(out) / "stage1" / str(seed) / "stage1" / target
        results = json.loads((path / RESULTS).read_text())
        per_seed[str(seed)] = {"run_dir": str(path), "test": _score(results, "test"),
                               "validation": _score(results, "validation"),
                               "best_step": results.get("best_step"), "steps": results.get("steps")}
    test_mean, test_std = aggregate([e["test"] for e in per_seed.values() if e["test"] is not None])
    val_mean, val_std = aggregate([e["validation"] for e in per_seed.values() if e["validation"] is not None])
    steps = max(e["steps"] or 0 for e in per_seed.values())
    return {"method": "stage1_target", "title": f"PT, stage 1 ({steps} steps)", "overrides": [],
            "test_mean": test_mean, "test_std": test_std, "validation_mean": val_mean,
            "validation_std": val_std, "seeds": per_seed}


def conflicting_sources(sources: list[str]) -> list[str]:
    """The sources whose rule asks for the opposite of the target's (the
    synthetic suite's `flipped` rule)."""
    from dtvg_dist.model.synthetic import SPECS

    return [s for s in sources if SPECS.get(s, ("",))[0] == "flipped"]


def claims(table: dict[str, Any]) -> list[dict[str, Any]]:
    """The demo's conclusion as checks of its own table: each claim's text,
    the worst case over seeds and whether it holds."""
    rows = {row["method"]: row for row in table["rows"]}
    seeds = [str(s) for s in table["seeds"]]
    out = []
    for method, baseline, margin, over in CLAIMS:
        if method not in rows or baseline not in rows:
            continue
        gaps = [rows[method]["seeds"][s]["test"] - rows[baseline]["seeds"][s]["test"] for s in seeds]
        gap = min(gaps) if over == "seed" else sum(gaps) / len(gaps)
        where = "on every seed" if over == "seed" else "in the mean over seeds"
        out.append({"text": f"{rows[method]['title']} is at least {margin:g} points above "
                            f"{rows[baseline]['title']} {where}", "worst": gap, "holds": gap >= margin})
    if "dtvg" in rows:
        sources = list(rows["dtvg"]["seeds"][seeds[0]].get("steps_in_group", {}))
        bad = conflicting_sources(sources)
        late = [g for s in seeds for g in rows["dtvg"]["seeds"][s].get("groups", [])
                if g["last_step"] > NO_CONFLICT_AFTER_STEP and set(g["group"]) & set(bad)]
        steps = sum(g["last_step"] - max(g["first_step"], NO_CONFLICT_AFTER_STEP + 1) + 1 for g in late)
        after = f" after step {NO_CONFLICT_AFTER_STEP}" if NO_CONFLICT_AFTER_STEP else ""
        out.append({"text": f"DTVG's group holds no conflicting source ({', '.join(bad)}) at any "
                            f"step{after} on any seed", "worst": steps, "holds": not late})
    return out


def stage1_runs(out: Path, seed: int) -> list[dict[str, Any]]:
    """The stage-1 runs of a seed (sources and target): task, steps, training rows, test score."""
    found = []
    for results_file in sorted((Path(out) / "stage1" / str(seed) / "stage1").glob(f"*/{RESULTS}")):
        results = json.loads(results_file.read_text())
        found.append({"task": results["task"], "steps": results.get("steps"),
                      "train_examples": results.get("train_examples"), "test": _score(results, "test")})
    return found


def _pm(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "-"
    return f"{mean:5.1f} ± {std:4.1f}" if std is not None else f"{mean:5.1f}"


def to_text(table: dict[str, Any]) -> str:
    """The table as printed (the same numbers as demo.json)."""
    seeds = table["seeds"]
    budget = table["budget"]
    lines = [
        f"target {table['target']}: {budget['target_train_examples']} training rows, "
        f"{budget['target_steps']} steps for every method; test {table['metric']} (%) on "
        f"{budget['test_examples']} rows, mean ± sample std over seeds {', '.join(map(str, seeds))}",
    ]
    sources = [r for r in budget["stage1"] if r["task"] != table["target"]]
    if sources:
        lines.append("sources (stage 1): " + ", ".join(
            f"{r['task']} ({r['train_examples']} rows, {r['steps']} steps)" for r in sources))
    own = [r for r in budget["stage1"] if r["task"] == table["target"]]
    if own:
        lines.append(f"extra cost: SPoT, all sources and DTVG start from stage 1, which also prompt-tunes "
                     f"the target itself ({own[0]['steps']} steps on its {own[0]['train_examples']} rows: "
                     f"the row 'PT, stage 1'); PT uses none of it")
    lines.append(f"{'method':<26} {'test':>13} {'validation':>13}   test per seed")
    for row in table["rows"]:
        per = " ".join(f"{row['seeds'][str(s)]['test']:5.1f}" for s in seeds)
        lines.append(f"{row['title']:<26} {_pm(row['test_mean'], row['test_std']):>13} "
                     f"{_pm(row['validation_mean'], row['validation_std']):>13}   {per}")
    for row in table["rows"]:
        if row["method"] == "spot":
            picked = ", ".join(f"{row['seeds'][str(s)].get('spot_source')} ({s})" for s in seeds)
            lines.append(f"SPoT started from (seed): {picked}")
    for row in table["rows"]:
        if row["method"] != "dtvg":
            continue
        lines.append("DTVG groups chosen over time (steps: sources):")
        for s in seeds:
            groups = row["seeds"][str(s)].get("groups", [])
            lines.append(f"  seed {s}: " + "; ".join(
                f"{g['first_step']}-{g['last_step']}: {', '.join(g['group']) or '(target only)'}"
                for g in groups))
    for claim in table.get("claims", []):
        worst = (f"gap {claim['worst']:+.1f}" if isinstance(claim["worst"], float)
                 else f"{claim['worst']} steps do")
        lines.append(f"{'holds' if claim['holds'] else 'DOES NOT HOLD'}: {claim['text']} ({worst})")
    return "\n".join(lines)


def write_outputs(out: Path, table: dict[str, Any]) -> dict[str, Path]:
    """demo.json, demo.txt and the two figures (each with its data)."""
    from dtvg_dist.analysis.figures import bank_figure, grouping_figure

    out = Path(out)
    seeds = table["seeds"]
    paths = {"table": out / "demo.json", "text": out / "demo.txt"}
    atomic_write_text(paths["table"], json.dumps(table, indent=2) + "\n")
    atomic_write_text(paths["text"], to_text(table) + "\n")
    methods = [row["method"] for row in table["rows"]]
    if "dtvg" in methods:
        runs = {f"DTVG seed {s}": run_dir(out, "dtvg", s) for s in seeds}
        compare = {f"DTVG seed {s}": run_dir(out, "pt", s) for s in seeds} if "pt" in methods else None
        figure = grouping_figure(runs, out / "demo-grouping.png", compare=compare,
                                 title=f"DTVG on {table['target']}: similarity to the target and groups")
        paths.update({"grouping_png": figure["png"], "grouping_data": figure["data"]})
    figure = bank_figure({f"seed {s}": bank_dir(out, s) for s in seeds}, out / "demo-banks.png",
                         title="TPV similarity of each seed's bank")
    paths.update({"banks_png": figure["png"], "banks_data": figure["data"]})
    return paths


def _csv(text: str | None) -> list[str]:
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dtvg_dist.demo",
        description="PT, SPoT, all sources merged and DTVG on the synthetic suite, over seeds.",
    )
    parser.add_argument("overrides", nargs="*", help="key=value recipe overrides for every run")
    parser.add_argument("--recipe", default="demo", help="the stage-2 recipe (default: demo; stage 1 "
                        "uses <recipe>-stage1 when it exists)")
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
    out = Path(args.out)
    planned = jobs(args.recipe, list(args.overrides), seeds, out, methods)
    try:
        for _, recipe, overrides in planned:  # every recipe error before anything trains
            load_recipe(recipe, overrides)
    except RecipeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    if "OMP_NUM_THREADS" not in os.environ:
        import torch

        # The demo's tensors are tiny: a second thread buys nothing, and on a
        # shared machine it made training steps 10-100x slower
        # (bench/demo_threads.py, bench/RESULTS.md).
        torch.set_num_threads(1)
    start = time.time()
    log.info("demo: %d runs (%s), seeds %s, output %s", len(planned),
             ", ".join(dict.fromkeys(w.split(": ", 1)[1] for w, _, _ in planned)),
             ",".join(map(str, seeds)), out)
    from dtvg_dist.train import run_job

    code, _ = run_job(lambda: run_all(planned))
    if code:
        return code
    table = collect(out, seeds, methods)
    table["claims"] = claims(table)
    table["wall_time_s"] = round(time.time() - start, 1)
    paths = write_outputs(out, table)
    print(to_text(table))
    print(f"({len(planned)} runs in {table['wall_time_s']:.0f} s; wrote "
          + ", ".join(str(p) for p in paths.values()) + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
