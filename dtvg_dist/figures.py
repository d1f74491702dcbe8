"""The analysis figures, each a PNG plus the data behind it (JSON).

- `grouping_figure`: paper Figures 7 / 9, per source its similarity to the
  target and its group membership over the steps (from `grouping.jsonl`),
  with the validation score (from `metrics.jsonl`), for one or more runs.

Matplotlib runs on the Agg backend: no display is needed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dtvg_dist.run_files import GROUPING, METRICS, atomic_write_text, read_jsonl


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ------------------------------------------------------------- Figures 7 / 9
def grouping_data(run: Path) -> dict[str, Any]:
    """One run's grouping history as matrices: `sims[i][k]` is source i's
    similarity to the target at `steps[k]`, `membership[i][k]` is 1 when
    source i is in the group at that step (0 otherwise)."""
    path = Path(run) / GROUPING
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no grouping history (is it a stage-2 DTVG run?)")
    rows = read_jsonl(path)
    if not rows:
        raise ValueError(f"{path} is empty")
    sources = list(rows[0]["sims"])
    for row in rows:
        if list(row["sims"]) != sources:
            raise ValueError(f"{path}: step {row['step']} names sources {list(row['sims'])}, "
                             f"the first row {sources}")
    validation = []
    metrics = Path(run) / METRICS
    if metrics.is_file():
        validation = [r for r in read_jsonl(metrics) if r.get("split") == "validation"]
    primary = _primary_metric(Path(run))
    return {
        "run": str(run),
        "sources": sources,
        "steps": [row["step"] for row in rows],
        "sims": [[row["sims"][s] for row in rows] for s in sources],
        "membership": [[int(s in row["group"]) for row in rows] for s in sources],
        "validation_metric": primary,
        "validation_steps": [r["step"] for r in validation],
        "validation": [r.get(primary) for r in validation] if primary else [],
    }


def _primary_metric(run: Path) -> str | None:
    results = run / "results.json"
    if results.is_file():
        return json.loads(results.read_text()).get("primary_metric")
    return None


def grouping_figure(runs: dict[str, Path], png: Path, title: str | None = None) -> dict[str, Path]:
    """One column per run: similarity of each source to the target over the
    steps (top), group membership (middle), validation score (bottom).
    Writes `png` and its data, `<png stem>-grouping.json`."""
    data = {label: grouping_data(path) for label, path in runs.items()}
    plt = _pyplot()
    cols = len(data)
    fig, axes = plt.subplots(3, cols, figsize=(4.6 * cols, 7.2), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 2, 2]}, sharex="col")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for col, (label, d) in enumerate(data.items()):
        top, mid, bottom = axes[0][col], axes[1][col], axes[2][col]
        for i, source in enumerate(d["sources"]):
            top.plot(d["steps"], d["sims"][i], color=colors[i % len(colors)], label=source, lw=1.4)
        top.axhline(0.0, color="grey", lw=0.6, ls="--")
        top.set_title(label, fontsize=10)
        top.set_ylabel("similarity to target (Eq. 2)" if col == 0 else "")
        n = len(d["sources"])
        for i in range(n):
            member = d["membership"][i]
            spans = _spans(d["steps"], member)
            mid.broken_barh(spans, (n - 1 - i + 0.1, 0.8), color=colors[i % len(colors)])
        mid.set_yticks([n - 1 - i + 0.5 for i in range(n)])
        mid.set_yticklabels(d["sources"] if col == 0 else [""] * n, fontsize=8)
        mid.set_ylim(0, n)
        mid.set_ylabel("in the group" if col == 0 else "")
        if d["validation_steps"]:
            bottom.plot(d["validation_steps"], d["validation"], marker="o", color="black", lw=1.2)
        bottom.set_ylabel(f"validation {d['validation_metric'] or ''}" if col == 0 else "")
        bottom.set_xlabel("step")
        if col == 0:
            top.legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)
    data_path = png.with_name(png.stem + "-grouping.json")
    atomic_write_text(data_path, json.dumps(data, indent=1) + "\n")
    return {"png": png, "data": data_path}


def _spans(steps: list[int], member: list[int]) -> list[tuple[float, float]]:
    """Contiguous member steps as (start, width) bars; step k covers [k - 1, k]."""
    spans: list[tuple[float, float]] = []
    for step, m in zip(steps, member, strict=True):
        if not m:
            continue
        if spans and spans[-1][0] + spans[-1][1] == step - 1:
            spans[-1] = (spans[-1][0], spans[-1][1] + 1)
        else:
            spans.append((step - 1, 1))
    return spans
