"""Human-readable summaries of finished runs: the PT-vs-method table and the
grouping history."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dtvg_dist.run_files import GROUPING, RESULTS, read_jsonl


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
    pt_file = output_dir / "stage1" / target_task / RESULTS
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
