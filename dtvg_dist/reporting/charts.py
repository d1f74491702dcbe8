"""Matplotlib without a display, and the bar chart of a table report: the
plotting both the report library and the figures use."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ------------------------------------------------------------- table reports
def table_bars(data: dict[str, Any], path: Path) -> Path:
    """Grouped bars per row of a table report: ours (error bar = our std over
    seeds) and the paper (error bar = its printed ±), per variant."""
    plt = pyplot()
    rows = data["rows"]
    main = data["variants"][0]

    def has(variant: str, kind: str) -> bool:
        return any((r["cells"][variant][kind] or {}).get("mean") is not None for r in rows)

    # A series with no value at all is left out; the main variant's "ours" always stays,
    # so its missing runs are marked.
    series = [(v, k) for v in data["variants"] for k in ("ours", "paper")
              if has(v, k) or (v, k) == (main, "ours")]
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(min(24.0, 0.35 * len(rows) * len(series) ** 0.5 + 3), 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (variant, kind) in enumerate(series):
        xs, ys, errs = [], [], []
        for j, row in enumerate(rows):
            cell = row["cells"][variant][kind] or {}
            x = j - 0.4 + width * (i + 0.5)
            if cell.get("mean") is None:
                if kind == "ours":
                    ax.text(x, 1, "missing", rotation=90, ha="center", va="bottom", fontsize=6,
                            color="red")
                continue
            xs.append(x)
            ys.append(cell["mean"])
            errs.append(cell.get("std") or 0.0)
        color = colors[data["variants"].index(variant) % len(colors)]
        ax.bar(xs, ys, width, yerr=errs, capsize=2, color=color,
               alpha=1.0 if kind == "ours" else 0.45, hatch=None if kind == "ours" else "//",
               label=f"{variant} {kind}")
    labels = [r["label"] if len(data["rows"]) == len({r["label"] for r in rows})
              else f"{r['label']} {r['metric']}" for r in rows]
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel(f"{data['split']} score (%)")
    ax.set_title(f"{data['table']}: ours vs paper")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
