"""Human-readable summaries of finished runs: the PT-vs-method table and the
grouping history."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dtvg_dist.reporting.paper_results import METHOD_NOTES, method_mark
from dtvg_dist.store import run_files
from dtvg_dist.store.run_files import GROUPING, RESULTS, read_jsonl


def group_history(grouping_file: Path, max_lines: int = 8) -> list[tuple[int, int, list[str]]]:
    """Runs of identical groups: (first step, last step, group), the last
    `max_lines` changes."""
    if not grouping_file.is_file():
        return []
    runs: list[tuple[int, int, list[str]]] = []
    for row in read_jsonl(grouping_file):
        if runs and runs[-1][2] == row["group"]:
            runs[-1] = (runs[-1][0], row["step"], runs[-1][2])
        else:
            runs.append((row["step"], row["step"], row["group"]))
    return runs[-max_lines:] if len(runs) > max_lines else runs


def _metric(results: dict[str, Any], split: str) -> str:
    primary = results.get("primary_metric", "")
    block = results.get("best_validation" if split == "validation" else "test") or {}
    value = block.get(primary)
    return f"{value:.1f}" if isinstance(value, int | float) else "-"


def summary_table(output_dir: Path, target_task: str) -> str:
    """PT (stage 1 on the target) next to the stage-2 method, and its groups."""
    rows = []
    pt_file = run_files.stage1_dir(output_dir, target_task) / RESULTS
    if pt_file.is_file():
        rows.append(("PT (stage 1)", json.loads(pt_file.read_text())))
    main_file = output_dir / RESULTS
    if main_file.is_file():
        res = json.loads(main_file.read_text())
        rows.append((f"{res['method'].upper()} (stage 2)", res))
    if not rows:
        return "no results yet"
    primary = rows[-1][1].get("primary_metric", "metric")
    lines = [
        f"target {target_task}: {primary} (%)",
        f"{'method':<16} {'validation':>10} {'test':>8} {'steps':>6}",
    ]
    for name, res in rows:
        lines.append(
            f"{name:<16} {_metric(res, 'validation'):>10} {_metric(res, 'test'):>8} {res.get('steps', '-'):>6}"
        )
    history = group_history(output_dir / GROUPING)
    if history:
        lines.append("groups chosen over time (steps: sources):")
        for first, last, group in history:
            lines.append(f"  {first:>5}-{last:<5} {', '.join(group) or '(target only)'}")
    return "\n".join(lines)


# ---- paper experiments: ours (mean ± std over seeds) next to the paper --------
# `python -m dtvg_dist.report EXPERIMENT [--runs-dir runs]`: reads each row's
# results.json files, writes <runs-dir>/reports/EXPERIMENT.{md,json,png}.


def run_dir(runs_dir: Path, recipe: str, variant: str, seed: int) -> Path:
    """Where one run of a row writes: runs/<recipe>/<seed> for the recipe's own
    method, runs/<recipe>@<variant>/<seed> for a baseline or an ablation."""
    return run_files.run_dir(runs_dir, recipe, seed, None if variant == "dtvg" else variant)


def lr_variant(lr: float, source_lr: float) -> str:
    """The variant name of one learning-rate pair of the C.7 search."""
    return f"lr{lr:g}-{source_lr:g}"


def read_results(results_file: Path) -> dict[str, Any] | None:
    """A finished run's results.json, or None (absent or unreadable)."""
    if not results_file.is_file():
        return None
    try:
        return json.loads(results_file.read_text())
    except (OSError, json.JSONDecodeError):
        return None


MEASURED_KEYS = ("samples_per_s", "tokens_per_s", "peak_memory_mb")


def measured_speed(runs_dir: Path, recipe: str, variant: str, seeds: tuple[int, ...]) -> dict[str, Any]:
    """The median over finished seeds of the speed and memory each run's
    results.json measured (training/step_metrics.run_summary), and how many runs had them."""
    import statistics

    values: dict[str, list[float]] = {key: [] for key in MEASURED_KEYS}
    for seed in seeds:
        results = read_results(run_dir(runs_dir, recipe, variant, seed) / RESULTS) or {}
        for key in MEASURED_KEYS:
            if isinstance(results.get(key), int | float) and not isinstance(results[key], bool):
                values[key].append(float(results[key]))
    out: dict[str, Any] = {k: statistics.median(v) if v else None for k, v in values.items()}
    out["runs"] = len(values["samples_per_s"])
    return out


def read_score(results_file: Path, split: str, metric: str) -> float | None:
    """One metric of a finished run, or None (no file, no such metric, NaN)."""
    results = read_results(results_file)
    if results is None:
        return None
    block = results.get("best_validation" if split == "validation" else "test") or {}
    value = block.get(metric)
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return None
    return float(value)


STD_CONVENTIONS = ("sample", "population")


def aggregate(values: list[float], std: str = "sample") -> tuple[float | None, float | None]:
    """(mean, standard deviation): `sample` divides by n - 1 (needs two runs),
    `population` by n (0 for one run; the paper's ± fit it, see collect)."""
    if std not in STD_CONVENTIONS:
        raise ValueError(f"std must be one of {', '.join(STD_CONVENTIONS)}, got {std!r}")
    if not values:
        return None, None
    mean = sum(values) / len(values)
    ddof = 1 if std == "sample" else 0
    if len(values) - ddof < 1:
        return mean, None
    var = sum((v - mean) ** 2 for v in values) / (len(values) - ddof)
    return mean, var**0.5


def _ours(runs_dir: Path, recipe: str, variant: str, seeds: tuple[int, ...], split: str,
          metric: str, std: str = "sample") -> dict[str, Any]:
    values, p_init_seeds = {}, {}
    for seed in seeds:
        path = run_dir(runs_dir, recipe, variant, seed) / RESULTS
        score = read_score(path, split, metric)
        if score is not None:
            values[seed] = score
            p_init_seeds[str(seed)] = (read_results(path) or {}).get("p_init_seed")
    mean, spread = aggregate(list(values.values()), std)
    return {
        "mean": mean, "std": spread, "n": len(values), "expected": len(seeds),
        "values": {str(s): v for s, v in values.items()},
        "missing_seeds": [s for s in seeds if s not in values],
        "p_init_seeds": p_init_seeds,
    }


def _lr_searched(runs_dir: Path, recipe: str, seeds: tuple[int, ...], split: str, metric: str,
                 select_metric: str, std: str) -> dict[str, Any]:
    """C.7: the learning-rate pair with the best mean validation score (ties:
    the first in grid order), and its scores on `split`."""
    from dtvg_dist.reporting.paper_results import LR_GRID

    tried = {}
    for lr in LR_GRID[0]:
        for slr in LR_GRID[1]:
            val = _ours(runs_dir, recipe, lr_variant(lr, slr), seeds, "validation", select_metric)
            tried[lr_variant(lr, slr)] = {"lr": lr, "source_lr": slr, "validation": val["mean"],
                                          "n": val["n"]}
    done = [(name, t) for name, t in tried.items() if t["validation"] is not None]
    if not done:  # nothing to choose from: an empty cell
        return {"mean": None, "std": None, "n": 0, "expected": len(seeds), "values": {},
                "missing_seeds": list(seeds), "p_init_seeds": {}, "lr": None, "lr_search": tried}
    best = max(done, key=lambda item: item[1]["validation"])[0]  # max keeps the first maximum
    cell = _ours(runs_dir, recipe, best, seeds, split, metric, std)
    cell.update(lr=[tried[best]["lr"], tried[best]["source_lr"]], lr_search=tried)
    return cell


def _bank_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Which stage-1 banks the runs used, from the P_init seed each recorded:
    per seed (P_init seed = run seed), one shared bank, or unknown."""
    pairs = {(int(seed), p) for row in rows for cell in row["cells"].values()
             for seed, p in cell["ours"].get("p_init_seeds", {}).items()}
    known = {(s, p) for s, p in pairs if p is not None}
    if not known:
        mode = "unknown"
        text = "not recorded by these runs"
    elif all(s == p for s, p in known):
        mode = "per-seed"
        text = "one stage-1 bank per seed (P_init drawn with the run's seed), as the released scripts"
    elif len({p for _, p in known}) == 1 and len({s for s, _ in known}) > 1:
        mode = "shared"
        text = (f"one shared stage-1 bank for every seed (P_init seed {next(iter(known))[1]}): "
                "the spread over seeds leaves out the spread of stage 1")
    else:
        mode = "mixed"
        text = "mixed: some runs used per-seed banks, some a shared one"
    return {"mode": mode, "text": text, "unrecorded_runs": len(pairs) - len(known)}


def collect(name: str, runs_dir: Path | str = "runs", seeds: tuple[int, ...] | None = None,
            variants: tuple[str, ...] | None = None, std: str = "sample",
            lr_search: bool = False) -> dict[str, Any]:
    """Everything the report shows, as plain data (also written as JSON).

    `variants`: the columns (default: the experiment's). `lr_search`: the
    dtvg column is the C.7 pair chosen per row on validation."""
    from dtvg_dist.reporting.paper_results import (
        EXPERIMENTS,
        PAPER_AVERAGES,
        PAPER_METHOD,
        PROVENANCE,
        paper_value,
    )

    exp = EXPERIMENTS[name]
    seeds = tuple(seeds or exp.seeds)
    variants = tuple(variants or exp.variants)
    runs_dir = Path(runs_dir)
    rows = []
    for row in exp.rows:
        for metric in exp.metrics_for(row.task):
            cells = {}
            for variant in variants:
                method = PAPER_METHOD.get(variant, variant)
                paper = paper_value(row.paper[0], method, row.paper[1], metric) if row.paper else None
                if lr_search and variant == "dtvg":
                    ours = _lr_searched(runs_dir, row.recipe, seeds, exp.split, metric,
                                        exp.metrics_for(row.task)[0], std)
                else:
                    ours = _ours(runs_dir, row.recipe, variant, seeds, exp.split, metric, std)
                cells[variant] = {"ours": ours, "paper": paper._asdict() if paper else None}
            rows.append({"label": row.label, "recipe": row.recipe, "task": row.task,
                         "metric": metric, "group": row.group, "cells": cells})
    averages = []
    single_metric = exp.metrics is None or len(exp.metrics) == 1
    groups = dict.fromkeys(r.group for r in exp.rows if r.group) if single_metric else {}
    stated = {(v, g): value for v, g, value in exp.paper_averages}
    for group in groups:
        members = [r for r in rows if r["group"] == group]
        tables = [r.paper[0] for r in exp.rows if r.group == group and r.paper]
        table = tables[0] if tables else ""
        cells = {}
        for variant in variants:
            means = [m["cells"][variant]["ours"]["mean"] for m in members]
            done = [v for v in means if v is not None]
            printed = PAPER_AVERAGES.get(table, {}).get(PAPER_METHOD.get(variant, variant), {})
            cells[variant] = {
                "ours": sum(done) / len(done) if done and len(done) == len(means) else None,
                "rows_found": len(done), "rows": len(means),
                "paper": stated.get((variant, group), printed.get(group)),
            }
        averages.append({"group": group, "cells": cells})
    tables = dict.fromkeys(r.paper[0] for r in exp.rows if r.paper)
    sources = {}
    for variant in variants:
        method = PAPER_METHOD.get(variant, variant)
        said = {PROVENANCE.get(t, {}).get(method) for t in tables} - {None}
        if said:
            sources[variant] = "; ".join(sorted(said))
    return {
        "experiment": exp.name, "table": exp.table, "description": exp.description,
        "split": exp.split, "seeds": list(seeds), "variants": list(variants),
        "runs_dir": str(runs_dir), "notes": exp.notes, "rows": rows, "averages": averages,
        "std": std, "lr_search": lr_search, "banks": _bank_summary(rows),
        "paper_sources": sources,
    }


def _fmt_ours(ours: dict[str, Any]) -> str:
    n, expected = ours["n"], ours["expected"]
    pair = f" [lr {ours['lr'][0]:g} / {ours['lr'][1]:g}]" if ours.get("lr") else ""
    if n == 0:
        return f"**MISSING** (0/{expected})"
    text = f"{ours['mean']:.1f}" + (f" ± {ours['std']:.1f}" if ours["std"] is not None else "")
    if n < expected:
        missing = ", ".join(str(s) for s in ours["missing_seeds"])
        return f"{text} ({n}/{expected}; **missing seed {missing}**){pair}"
    return f"{text} ({n}/{expected}){pair}"


def _fmt_paper(paper: dict[str, Any] | None) -> str:
    if paper is None:
        return "–"
    return f"{paper['mean']:.1f}" + (f" ± {paper['std']:.1f}" if paper["std"] is not None else "")


def _fmt_delta(ours: float | None, paper: float | None) -> str:
    return f"{ours - paper:+.1f}" if ours is not None and paper is not None else "–"



STD_TEXT = {
    "sample": "sample std (n − 1)",
    "population": "population std (n)",
}


def to_markdown(data: dict[str, Any]) -> str:
    """The side-by-side table: per variant, ours then the paper's number."""
    from dtvg_dist.reporting.paper_results import VARIANT_TITLES

    variants = data["variants"]
    main = variants[0]
    title = {v: VARIANT_TITLES.get(v, v) for v in variants}
    split = "best validation" if data["split"] == "validation" else "test"
    std = data.get("std", "sample")
    lines = [
        f"## {data['table']}: {data['description']}",
        "",
        f"Ours: mean ± {STD_TEXT[std]} over seeds {', '.join(map(str, data['seeds']))} ({split} "
        f"scores, %), with runs found / expected; paper: its printed number ± its subscript "
        f"(its ± fit a population std: Table 2's CB 97.6 ± 3.4 is reachable only as three runs "
        f"of 100, 100, 92.9 with a population std; `--std population` compares like with "
        f"like). Δ = ours − paper ({title[main]}). Runs read from `{data['runs_dir']}`.",
        "",
    ]
    if data.get("lr_search"):
        lines += [f"{title['dtvg']} (C.7 search): per row, the learning-rate pair (target / "
                  "source α) with the best mean validation score, shown as [lr a / b].", ""]
    header = ["row", "metric"]
    # A column whose paper numbers another paper produced says so in its header.
    quoted = {v for v, text in data.get("paper_sources", {}).items() if text.startswith("quoted")}
    for v in variants:
        mark = method_mark(v)
        header += [f"{title[v]} ours{mark}", f"{title[v]} paper" + (" (quoted)" if v in quoted else "")]
        if v == main:
            header.append("Δ")
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in data["rows"]:
        cells = [row["label"], row["metric"]]
        for v in variants:
            ours, paper = row["cells"][v]["ours"], row["cells"][v]["paper"]
            cells += [_fmt_ours(ours), _fmt_paper(paper)]
            if v == main:
                cells.append(_fmt_delta(ours["mean"], paper["mean"] if paper else None))
        lines.append("| " + " | ".join(cells) + " |")
    for avg in data["averages"]:
        cells = [f"*{avg['group']} avg.*", ""]
        for v in variants:
            c = avg["cells"][v]
            ours = f"{c['ours']:.1f}" if c["ours"] is not None else (
                f"incomplete ({c['rows_found']}/{c['rows']} rows)")
            cells += [ours, f"{c['paper']:.1f}" if c["paper"] is not None else "–"]
            if v == main:
                cells.append(_fmt_delta(c["ours"], c["paper"]))
        lines.append("| " + " | ".join(cells) + " |")
    missing = sum(r["cells"][v]["ours"]["n"] < r["cells"][v]["ours"]["expected"]
                  for r in data["rows"] for v in variants)
    lines.append("")
    if missing:
        lines.append(f"{missing} row/variant cells lack some runs (marked **MISSING** / **missing seed**).")
    if data.get("paper_sources"):
        said = "; ".join(f"{title[v]}: {text}" for v, text in data["paper_sources"].items())
        lines.append(f"Paper numbers: {said}.")
    if data.get("banks"):
        lines.append(f"Stage-1 TPV banks: {data['banks']['text']}.")
    lines += [f"Note on {METHOD_NOTES[v][1]}" for v in variants if v in METHOD_NOTES]
    if data["notes"]:
        lines.append(f"Note: {data['notes']}")
    return "\n".join(lines).rstrip() + "\n"


def plot(data: dict[str, Any], path: Path) -> Path:
    """Grouped bars per row: ours (error bar = std) and the paper, per variant."""
    from dtvg_dist.reporting.charts import table_bars

    return table_bars(data, path)


def write_report(name: str, runs_dir: Path | str = "runs", out_dir: Path | str | None = None,
                 seeds: tuple[int, ...] | None = None, with_plot: bool = True,
                 variants: tuple[str, ...] | None = None, std: str = "sample",
                 lr_search: bool = False) -> dict[str, Path]:
    """Write EXPERIMENT.md, .json (and .png) under out_dir (default <runs_dir>/reports)."""
    data = collect(name, runs_dir, seeds, variants=variants, std=std, lr_search=lr_search)
    out = Path(out_dir) if out_dir is not None else Path(runs_dir) / "reports"
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / f"{name}.md", "json": out / f"{name}.json"}
    paths["markdown"].write_text(to_markdown(data))
    paths["json"].write_text(json.dumps(data, indent=2) + "\n")
    if with_plot:
        paths["plot"] = plot(data, out / f"{name}.png")
    return paths
