"""The analysis figures, each a PNG plus the data behind it (JSON), drawn
from finished runs and TPV banks:

- `grouping_figure` (paper Figures 7 and 9): for one run or several, each
  source's similarity to the target and its group membership over the
  steps (from `grouping.jsonl`), and the validation score (from
  `metrics.jsonl`), optionally next to a baseline run's (PT).
- `bank_figure` (Figures 10 and 11): the pairwise TPV similarity (Eq. 2) of
  a bank's tasks, min-max normalised as the paper's figures are, ordered by
  hierarchical clustering (scipy) with its dendrogram; several banks (one
  per seed) side by side.
- `figure1` (Figure 1): RTE validation as sources are mixed in one at a
  time, and SPoT's similarity of the RTE prompt to each source over training.
- `figure8` (Figure 8): GLUE average against each method's trainable
  parameters (counted from the methods' own modules by the command layer).
- `table_bars`: a table report's bars, ours vs the paper per row, with the
  standard deviations as error bars (the report writes the data as JSON).

    python -m dtvg_dist.report grouping RUN_DIR [RUN_DIR ...] [--compare PT_RUN ...] [--out F.png]
    python -m dtvg_dist.report bank BANK_DIR [BANK_DIR ...] [--tasks a,b,c] [--out F.png]
    python -m dtvg_dist.report figure7|figure9|figure10|figure11 [--runs-dir runs] [--seeds ...]
    python -m dtvg_dist.report figure1|figure8 [--runs-dir runs] [--seeds ...] [--out DIR]

Matplotlib runs on the Agg backend: no display is needed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dtvg_dist.reporting.charts import pyplot
from dtvg_dist.reporting.paper_results import FIGURE1_MIXES, FIGURE1_ORDER, PAPER_AVERAGES, VARIANTS
from dtvg_dist.reporting.report import collect
from dtvg_dist.store import run_files
from dtvg_dist.store.run_files import GROUPING, METRICS, RESULTS, atomic_write_text, read_jsonl


def _save(fig: Any, png: Path, data: Any) -> dict[str, Path]:
    """Write the PNG and, next to it, `<stem>.json` with the data drawn."""
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    pyplot().close(fig)
    data_path = png.with_suffix(".json")
    atomic_write_text(data_path, json.dumps(data, indent=1) + "\n")
    return {"png": png, "data": data_path}


# ------------------------------------------------------------- Figures 7 / 9
def _validation_curve(run: Path) -> dict[str, Any]:
    """The primary metric at each validation of a run (metrics.jsonl)."""
    results = Path(run) / RESULTS
    primary = json.loads(results.read_text()).get("primary_metric") if results.is_file() else None
    metrics = Path(run) / METRICS
    rows = [r for r in read_jsonl(metrics) if r.get("split") == "validation"] if metrics.is_file() else []
    return {"metric": primary, "steps": [r["step"] for r in rows],
            "scores": [r.get(primary) for r in rows] if primary else []}


def grouping_data(run: Path) -> dict[str, Any]:
    """One run's grouping history as matrices over `steps`: `sims[i][k]` is
    source i's similarity to the target at step k, `membership[i][k]` is 1
    when source i is in the group then (0 otherwise)."""
    path = Path(run) / GROUPING
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no grouping history (grouping.jsonl is written by DTVG "
                                "stage-2 runs)")
    rows = read_jsonl(path)
    if not rows:
        raise ValueError(f"{path} is empty")
    sources = list(rows[0]["sims"])
    for row in rows:
        if list(row["sims"]) != sources:
            raise ValueError(f"{path}: step {row['step']} names the sources {list(row['sims'])}, "
                             f"the first row {sources}")
        unknown = set(row["group"]) - set(sources)
        if unknown:
            raise ValueError(f"{path}: step {row['step']} groups unknown sources {sorted(unknown)}")
    return {
        "run": str(run),
        "sources": sources,
        "steps": [row["step"] for row in rows],
        "sims": [[row["sims"][s] for row in rows] for s in sources],
        "membership": [[int(s in row["group"]) for row in rows] for s in sources],
        "validation": _validation_curve(Path(run)),
    }


def _spans(steps: list[int], member: list[int]) -> list[tuple[float, float]]:
    """Member steps as (start, width) bars; step k covers [k - 1, k]."""
    spans: list[tuple[float, float]] = []
    for step, m in zip(steps, member, strict=True):
        if not m:
            continue
        if spans and spans[-1][0] + spans[-1][1] == step - 1:
            spans[-1] = (spans[-1][0], spans[-1][1] + 1)
        else:
            spans.append((step - 1, 1))
    return spans


def grouping_figure(runs: dict[str, Path], png: Path, title: str | None = None,
                    compare: dict[str, Path] | None = None, compare_label: str = "PT") -> dict[str, Path]:
    """One column per run: each source's similarity to the target over the
    steps (top), group membership (middle), validation score (bottom, with
    the `compare` run of the same label, e.g. PT, when given). Writes `png`
    and `<png stem>.json` (per run: sources, steps, sims, membership, the
    validation curves)."""
    data = {label: grouping_data(path) for label, path in runs.items()}
    for label, path in (compare or {}).items():
        data[label]["compare"] = {"label": compare_label, "run": str(path), **_validation_curve(Path(path))}
    plt = pyplot()
    cols = len(data)
    fig, axes = plt.subplots(3, cols, figsize=(4.2 * cols + 1.2, 7.5), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 2, 2]}, sharex="col")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for col, (label, d) in enumerate(data.items()):
        top, mid, bottom = axes[0][col], axes[1][col], axes[2][col]
        n = len(d["sources"])
        for i, source in enumerate(d["sources"]):
            color = colors[i % len(colors)]
            top.plot(d["steps"], d["sims"][i], color=color, label=source, lw=1.5)
            mid.broken_barh(_spans(d["steps"], d["membership"][i]), (n - 1 - i + 0.15, 0.7), color=color)
        top.axhline(0.0, color="grey", lw=0.7, ls="--")
        top.set_title(label, fontsize=10)
        mid.set_yticks([n - 1 - i + 0.5 for i in range(n)])
        mid.set_yticklabels(d["sources"], fontsize=8)
        mid.set_ylim(0, n)
        mid.grid(axis="x", lw=0.3)
        val = d["validation"]
        if val["steps"]:
            bottom.plot(val["steps"], val["scores"], marker="o", color="black", lw=1.3, label=label.split()[0])
        cmp_ = d.get("compare")
        if cmp_ and cmp_["steps"]:
            bottom.plot(cmp_["steps"], cmp_["scores"], marker="s", color="grey", ls="--", lw=1.1,
                        label=cmp_["label"])
            bottom.legend(fontsize=7, loc="lower right")
        if val["scores"]:
            bottom.set_ylim(-2, 102)
        bottom.set_xlabel("step")
        if col == 0:
            top.set_ylabel("similarity to the target\n(Eq. 2, α-scaled TPVs)", fontsize=9)
            mid.set_ylabel("in the group", fontsize=9)
            bottom.set_ylabel(f"validation {val['metric'] or ''} (%)", fontsize=9)
            top.legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, png, data)


# ---------------------------------------------------------- Figures 10 / 11
def bank_tasks(bank_dir: Path) -> list[str]:
    """The tasks of a bank folder, in file-name order."""
    tasks = sorted(p.stem for p in Path(bank_dir).glob("*.safetensors"))
    if not tasks:
        raise FileNotFoundError(f"{bank_dir}: no bank entries (*.safetensors)")
    return tasks


def bank_similarity(bank_dir: Path, tasks: list[str] | None = None) -> dict[str, Any]:
    """Pairwise Eq. 2 similarity of a bank's TPVs (float64), its min-max
    normalisation (the paper's Figures 10 and 11 plot that), and the
    hierarchical clustering that orders it: average linkage on the
    Euclidean distance between normalised rows, seaborn clustermap's default
    (method='average', metric='euclidean')."""
    import numpy as np
    import torch
    from scipy.cluster.hierarchy import leaves_list, linkage

    from dtvg_dist.core import similarity_matrix
    from dtvg_dist.store.bank import load_bank

    tasks = list(tasks or bank_tasks(bank_dir))
    entries = load_bank(bank_dir, tasks)  # one P_init, backbone and shape, or a BankError
    tpvs = torch.stack([entries[t].tpv.to(torch.float64) for t in tasks])
    sim = similarity_matrix(tpvs).numpy()
    low, high = float(sim.min()), float(sim.max())
    norm = (sim - low) / (high - low) if high > low else np.zeros_like(sim)
    if len(tasks) > 1:
        link = linkage(norm, method="average", metric="euclidean")
        order = [int(i) for i in leaves_list(link)]
    else:
        link, order = np.zeros((0, 4)), [0]
    return {
        "bank": str(bank_dir), "tasks": tasks, "similarity": sim.tolist(),
        "normalized": norm.tolist(), "min": low, "max": high,
        "linkage": link.tolist(), "order": order, "ordered_tasks": [tasks[i] for i in order],
    }


def bank_figure(banks: dict[str, Path], png: Path, tasks: list[str] | None = None,
                title: str | None = None) -> dict[str, Path]:
    """A clustered heatmap per bank (one: Figure 10; one per seed: Figure 11),
    side by side, each in its own clustering order with its dendrogram on
    top. Writes `png` and `<png stem>.json` (per bank: tasks, similarity,
    normalized, linkage, order)."""
    from scipy.cluster.hierarchy import dendrogram

    data = {label: bank_similarity(path, tasks) for label, path in banks.items()}
    plt = pyplot()
    cols = len(data)
    size = max(3.2, 0.42 * max(len(d["tasks"]) for d in data.values()) + 1.6)
    fig, axes = plt.subplots(2, cols, figsize=(size * cols + 1.6, size + 1.4), squeeze=False,
                             gridspec_kw={"height_ratios": [1, 4]}, layout="constrained")
    image = None
    for col, (label, d) in enumerate(data.items()):
        top, ax = axes[0][col], axes[1][col]
        order, n = d["order"], len(d["tasks"])
        if n > 1:
            import numpy as np

            dendrogram(np.array(d["linkage"]), ax=top, no_labels=True, color_threshold=0,
                       above_threshold_color="black")
            top.set_xlim(0, 10 * n)  # scipy puts leaf k at 10 k + 5: one leaf above each column
        top.set_axis_off()
        top.set_title(label, fontsize=10)
        matrix = [[d["normalized"][i][j] for j in order] for i in order]
        image = ax.imshow(matrix, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
        names = d["ordered_tasks"]
        ax.set_xticks(range(n))
        ax.set_xticklabels(names, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(n))
        ax.set_yticklabels(names, fontsize=8)
        if n <= 12:
            for i in range(n):
                for j in range(n):
                    value = matrix[i][j]
                    ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6,
                            color="white" if value < 0.5 else "black")
    if image is not None:
        fig.colorbar(image, ax=[axes[1][c] for c in range(cols)], shrink=0.9,
                     label="task similarity (Eq. 2), min-max normalised")
    if title:
        fig.suptitle(title)
    return _save(fig, png, data)


# ---------------------------------------------------------- Figures 1 and 8
def figure1_data(runs_dir: Path | str = "runs", seed: int = 42) -> dict[str, Any]:
    """Figure 1 from reproduce's `figure1` runs: the best RTE validation score
    of each mixture (RTE + the first k sources of FIGURE1_ORDER), and SPoT's
    cosine to each source over training with the most similar one."""

    runs_dir = Path(runs_dir)
    top = []
    for k, variant in enumerate(FIGURE1_MIXES):
        run = runs_dir / f"t5-base-dtvg-rte@{variant}" / str(seed)
        results = run / RESULTS
        best = json.loads(results.read_text()).get("best_validation", {}) if results.is_file() else {}
        top.append({"sources": list(FIGURE1_ORDER[:k]), "added": FIGURE1_ORDER[k - 1] if k else None,
                    "run": str(run), "accuracy": best.get("accuracy")})
    track = runs_dir / "t5-base-dtvg-rte@spot-track" / str(seed)
    rows = [r for r in read_jsonl(track / METRICS) if r.get("split") == "source_similarity"] \
        if (track / METRICS).is_file() else []
    sources = [k for k in (rows[0] if rows else {}) if k not in ("step", "split", "most_similar")]
    bottom = {"run": str(track), "steps": [r["step"] for r in rows],
              "cosine": {s: [r[s] for r in rows] for s in sources},
              "most_similar": [r["most_similar"] for r in rows]}
    if all(t["accuracy"] is None for t in top) and not rows:
        raise FileNotFoundError(f"no figure1 runs under {runs_dir} (seed {seed}): "
                                "run `python -m dtvg_dist.reproduce figure1` first")
    return {"order": list(FIGURE1_ORDER), "seed": seed, "mixtures": top, "similarity": bottom}


def figure1(runs_dir: Path | str = "runs", png: Path | str = "runs/reports/figure1.png",
            seed: int = 42) -> dict[str, Path]:
    """Top: RTE validation accuracy against the sources mixed in; bottom: the
    cosine of SPoT's RTE prompt to each source, the most similar one marked."""
    data = figure1_data(runs_dir, seed)
    plt = pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6.5))
    mixtures = data["mixtures"]
    xs = [i for i, m in enumerate(mixtures) if m["accuracy"] is not None]
    top.plot(xs, [mixtures[i]["accuracy"] for i in xs], marker="o")
    top.set_xticks(range(len(mixtures)))
    top.set_xticklabels(["RTE only"] + [f"+{m['added']}" for m in mixtures[1:]], fontsize=8)
    top.set_ylabel("RTE validation accuracy (%)")
    top.set_title("sources added one at a time (examples-proportional mixing)")
    sim = data["similarity"]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (source, values) in enumerate(sim["cosine"].items()):
        color = colors[i % len(colors)]
        bottom.plot(sim["steps"], values, color=color, label=source)
        marked = [j for j, most in enumerate(sim["most_similar"]) if most == source]
        bottom.scatter([sim["steps"][j] for j in marked], [values[j] for j in marked], color=color,
                       marker="*", s=60, zorder=3)
    bottom.set_xlabel("RTE training step")
    bottom.set_ylabel("cosine (mean-pooled prompts)")
    bottom.set_title("SPoT: similarity of the RTE prompt to each source (* = most similar)")
    if sim["cosine"]:
        bottom.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    return _save(fig, Path(png), data)


def figure8_data(counts: dict[str, int | None], runs_dir: Path | str = "runs",
                 seeds: tuple[int, ...] | None = None) -> dict[str, Any]:
    """Figure 8: each method's trainable parameters (`counts`, from its own
    module) against its GLUE average, ours from reproduce's table2 runs and the
    paper's where Table 2 prints one."""

    methods = [m for m, n in counts.items() if n is not None]
    variants = tuple(m for m in methods if m in VARIANTS)
    table = collect("table2", runs_dir, seeds, variants=variants) if variants else {"averages": []}
    glue = next((a["cells"] for a in table["averages"] if a["group"] == "GLUE"), {})
    points = []
    for method in methods:
        cell = glue.get(method, {})
        points.append({
            "method": method, "trainable_parameters": counts[method],
            "ours": cell.get("ours"), "rows_found": cell.get("rows_found", 0),
            "paper": PAPER_AVERAGES.get("table2", {}).get(method, {}).get("GLUE"),
        })
    return {"benchmark": "GLUE", "points": points,
            "not_counted": sorted(m for m, n in counts.items() if n is None)}


def figure8(counts: dict[str, int | None], runs_dir: Path | str = "runs",
            png: Path | str = "runs/reports/figure8.png",
            seeds: tuple[int, ...] | None = None) -> dict[str, Path]:
    """GLUE average (y) against trainable parameters (x, log scale) per method."""
    data = figure8_data(counts, runs_dir, seeds)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for kind, marker in (("ours", "o"), ("paper", "s")):
        pts = [p for p in data["points"] if p[kind] is not None]
        ax.scatter([p["trainable_parameters"] for p in pts], [p[kind] for p in pts], marker=marker,
                   alpha=1.0 if kind == "ours" else 0.5, label=kind)
        for p in pts:
            ax.annotate(p["method"], (p["trainable_parameters"], p[kind]), fontsize=7,
                        textcoords="offset points", xytext=(4, 3))
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (the method's prompt module)")
    ax.set_ylabel("GLUE average (%)")
    ax.set_title("Figure 8: performance & parameters")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, Path(png), data)


# ------------------------------------------------------- the paper's figures
# Figure 7: RTE; Figure 9: MRPC, SciTail, NQ (appendix H), DTVG next to PT.
# Figure 10: 5 source and 6 target tasks (appendix I names SQuAD, ReCoRD,
# QNLI, QQP, MNLI and NQ, HotpotQA, MRPC, PAWS, WSC, WinoGrande); Figure 11:
# the same for the seeds 22, 32, 42, 52.
PAPER_FIGURES: dict[str, dict[str, Any]] = {
    "figure7": {"kind": "grouping", "targets": ("rte",), "seeds": (42,)},
    "figure9": {"kind": "grouping", "targets": ("mrpc", "scitail", "nq"), "seeds": (42,)},
    "figure10": {"kind": "bank", "seeds": (42,)},
    "figure11": {"kind": "bank", "seeds": (22, 32, 42, 52)},
}
FIGURE_TASKS = ("squad", "record", "qnli", "qqp", "mnli", "nq", "hotpotqa", "mrpc", "paws", "wsc",
                "winogrande")
BANK = "bank/t5-base"


def paper_bank(runs_dir: Path, seed: int) -> Path:
    """The T5-base bank of a seed: `<runs>/bank/t5-base/seed<S>` (reproduce's
    per-seed banks), else the shared `<runs>/bank/t5-base`."""
    per_seed = run_files.seed_bank_dir(Path(runs_dir) / BANK, seed)
    return per_seed if per_seed.is_dir() else Path(runs_dir) / BANK


def paper_figure(name: str, runs_dir: Path | str = "runs", seeds: tuple[int, ...] | None = None,
                 out_dir: Path | str | None = None) -> dict[str, Path]:
    """Figure 7, 9, 10 or 11 from the runs and banks that `reproduce` writes."""
    spec = PAPER_FIGURES[name]
    runs_dir = Path(runs_dir)
    seeds = tuple(seeds or spec["seeds"])
    png = (Path(out_dir) if out_dir is not None else runs_dir / "reports") / f"{name}.png"
    if spec["kind"] == "grouping":
        runs, compare = {}, {}
        for target in spec["targets"]:
            for seed in seeds:
                label = f"{target} seed {seed}"
                runs[label] = run_files.run_dir(runs_dir, f"t5-base-dtvg-{target}", seed)
                pt = run_files.run_dir(runs_dir, f"t5-base-dtvg-{target}", seed, "pt")
                if (pt / METRICS).is_file():
                    compare[label] = pt
        return grouping_figure(runs, png, title=f"{name}: source task grouping (DTVG)", compare=compare)
    banks = {f"seed {seed}": paper_bank(runs_dir, seed) for seed in seeds}
    return bank_figure(banks, png, tasks=list(FIGURE_TASKS), title=f"{name}: TPV task similarity")
