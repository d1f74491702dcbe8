"""`python -m dtvg_dist.dataset check`: load every split a run will use, check
every row, and print one table a user reads before a long job.

Per task: where the rows came from (hub id and revision, or local files),
the split sizes after the protocol, the label distribution of the training
split, and, with a tokenizer, the source/target token lengths (p50 / p95 /
max) and how many rows `encode` will truncate (sources) or keep longer than
`max_target_length` (targets).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from dtvg_dist.data.encoding import added_prefix
from dtvg_dist.data.module import TaskData
from dtvg_dist.data.splits import permutation
from dtvg_dist.tasks.base import Task
from dtvg_dist.tasks.schema import DataError

__all__ = ["TaskReport", "check_task", "format_table", "source_budget"]

log = logging.getLogger("dtvg_dist.data")


@dataclass
class TaskReport:
    task: str
    ok: bool = True
    error: str = ""
    source: str = ""
    rule: str = ""
    sizes: dict[str, int] = field(default_factory=dict)
    labels: str = "-"
    source_tokens: tuple[int, int, int] | None = None
    target_tokens: tuple[int, int, int] | None = None
    truncated: int | None = None
    long_targets: int | None = None
    rows: int = 0


def source_budget(task: Task, tokenizer: Any, family: str) -> int:
    """Source tokens `dtvg_dist.data.encode` keeps: max_source_length minus the
    tokenizer's own prefix (Llama's BOS) and EOS (seq2seq) or the newline (causal)."""
    prefix = added_prefix(tokenizer)
    tail = len(tokenizer("\n", add_special_tokens=False)["input_ids"]) if family == "causal" else 1
    return task.max_source_length - len(prefix) - tail


def _stats(lengths: Sequence[int]) -> tuple[int, int, int]:
    import numpy as np

    arr = np.asarray(lengths)
    return int(np.percentile(arr, 50)), int(np.percentile(arr, 95)), int(arr.max())


def _token_lengths(texts: list[str], tokenizer: Any, desc: str, batch: int = 512) -> list[int]:
    from tqdm.auto import tqdm

    out: list[int] = []
    starts = range(0, len(texts), batch)
    for i in tqdm(starts, desc=desc, unit="batch", leave=False, mininterval=1.0, disable=len(starts) < 4):
        out.extend(len(ids) for ids in tokenizer(texts[i : i + batch], add_special_tokens=False)["input_ids"])
    return out


def _label_distribution(task: Task, rows: list[dict]) -> str:
    if not task.is_classification or not rows:
        return "-"
    counts = Counter(task.label_index(r) for r in rows)
    words = task.label_words or ()
    return " ".join(f"{words[i]}:{100 * counts.get(i, 0) / len(rows):.0f}%" for i in range(len(words)))


def _sample(rows: list[dict], limit: int | None, seed: int) -> list[dict]:
    if limit is None or len(rows) <= limit:
        return rows

    return [rows[i] for i in sorted(permutation(len(rows), seed)[:limit])]


def check_task(data: TaskData, sample: int | None = None) -> TaskReport:
    """Load and validate the task's splits as a run prepares them (`TaskData`);
    measure them with its tokenizer, if any. A DataError (or a row that
    cannot be formatted) becomes a failed report."""
    task, settings, tokenizer, family = data.task, data.settings, data.tokenizer, data.family
    report = TaskReport(task=task.name)
    try:
        prepared = data.prepared(progress=True)
        report.source, report.rule = prepared.source.where, prepared.rule
        report.sizes = {k: len(v) for k, v in prepared.splits.items()}
        report.labels = _label_distribution(task, prepared.splits["train"])
        sources: list[str] = []
        targets: list[str] = []
        for split, rows in prepared.splits.items():
            for n, row in enumerate(_sample(rows, sample, settings.split_seed), start=1):
                try:
                    src, tgt = task.format(row)
                    task.reference(row)
                except Exception as err:  # a row the checks let through but the formatter rejects
                    raise DataError(
                        f"task '{task.name}': {split} row {n} cannot be formatted "
                        f"({type(err).__name__}: {err}); source {prepared.source.where}"
                    ) from err
                sources.append(src)
                targets.append(tgt)
        report.rows = len(sources)
        if tokenizer is not None and sources:
            src_len = _token_lengths(sources, tokenizer, f"{task.name} sources")
            tgt_len = _token_lengths(targets, tokenizer, f"{task.name} targets")
            report.source_tokens, report.target_tokens = _stats(src_len), _stats(tgt_len)
            budget = source_budget(task, tokenizer, family)
            report.truncated = sum(n > budget for n in src_len)
            report.long_targets = sum(n + 1 > task.max_target_length for n in tgt_len)
    except DataError as err:
        report.ok, report.error = False, str(err)
    return report


def _fmt_tokens(stats: tuple[int, int, int] | None) -> str:
    return "-" if stats is None else "/".join(map(str, stats))


def format_table(reports: Sequence[TaskReport], tasks: dict[str, Task]) -> str:
    """One table for all tasks, then each loaded task's source and split rule
    (failures are reported by the caller, with their full message)."""
    head = ("task", "status", "train", "valid", "test", "labels (train)", "src tok p50/p95/max",
            "tgt tok p50/p95/max", "src truncated", "tgt > max")
    rows = []
    for r in reports:
        t = tasks[r.task]
        trunc = "-" if r.truncated is None else f"{r.truncated} (>{t.max_source_length})"
        longt = "-" if r.long_targets is None else f"{r.long_targets} (>{t.max_target_length})"
        rows.append((
            r.task, "ok" if r.ok else "FAILED",
            *(str(r.sizes.get(s, "-")) for s in ("train", "validation", "test")),
            r.labels, _fmt_tokens(r.source_tokens), _fmt_tokens(r.target_tokens), trunc, longt,
        ))
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()  # noqa: E731
    out = [line(head), line(tuple("-" * w for w in widths))] + [line(r) for r in rows]
    notes = [f"{r.task}: {r.source}; {r.rule}" for r in reports if r.ok]
    return "\n".join(out + ([""] + notes if notes else []))
