"""Where a task's original splits come from: built-in rows, local files or the hub.

Local files (JSONL / JSON / CSV / Parquet, with the hub's column names) make
offline runs and tests possible; every row is checked against the task's
column schema as it is read, so errors can name the file, row and column.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from dtvg_dist.tasks.base import Task
from dtvg_dist.tasks.schema import DataError, check_row

__all__ = ["EXTENSIONS", "load_original", "wanted_splits", "hub_offline"]

log = logging.getLogger("dtvg_dist.data")

EXTENSIONS = ("jsonl", "json", "csv", "parquet")
_TRUE = {"1", "true", "yes", "on"}

Rows = list[dict[str, Any]]
# (row number, row or the reason it could not be read)
Numbered = Iterable[tuple[int, Any]]


def hub_offline() -> bool:
    """True when the environment forbids hub downloads."""
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def wanted_splits(task: Task) -> dict[str, str]:
    """Generic split name -> the hub's split name, for the splits this task uses."""
    out = {"train": task.train_split}
    if task.validation_split:
        out["validation"] = task.validation_split
    if task.test_split:
        out["test"] = task.test_split
    return out


def _setting_hint(task: Task) -> str:
    return (
        f"put its splits (train/validation[/test] .jsonl, .csv or .parquet, with the hub's column "
        f"names) in <dir>/{task.name}/ and set data.local_dir=<dir>, or set data.paths.{task.name}="
        "<folder, file with a 'split' column, or path with '{split}'>"
    )


# ---- readers ------------------------------------------------------------------
class _Unreadable(str):
    """A row that could not be parsed; the text says why."""


def _read_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as err:
                yield n, _Unreadable(f"invalid JSON ({err.msg})")


def _read_json(path: Path) -> Iterator[tuple[int, Any]]:
    text = path.read_text(encoding="utf-8")
    if not text.lstrip().startswith("["):
        yield from _read_jsonl(path)
        return
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: invalid JSON array ({err.msg}, line {err.lineno})") from err
    yield from enumerate(rows, start=1)


def _read_csv(path: Path) -> Iterator[tuple[int, Any]]:
    with path.open(encoding="utf-8", newline="") as fh:
        yield from enumerate(csv.DictReader(fh), start=1)


def _read_parquet(path: Path) -> Iterator[tuple[int, Any]]:
    import pyarrow.parquet as pq

    yield from enumerate(pq.read_table(path).to_pylist(), start=1)


_READERS = {"jsonl": _read_jsonl, "json": _read_json, "csv": _read_csv, "parquet": _read_parquet}


def _read_file(path: Path) -> Iterator[tuple[int, Any]]:
    ext = path.name.rsplit(".", 1)[-1].lower()
    if ext not in _READERS:
        raise DataError(f"{path}: unsupported file type; use one of {', '.join(EXTENSIONS)}")
    return _READERS[ext](path)


# ---- validation ---------------------------------------------------------------
def _validate(task: Task, where: str, split: str, numbered: Numbered, on_bad_row: str, skipped: list) -> Rows:
    out: Rows = []
    n_labels = task.num_labels
    for n, raw in numbered:
        if isinstance(raw, _Unreadable):
            row, column, problem = None, "-", str(raw)
        else:
            row, column, problem = check_row(raw, task.columns, n_labels)
        if row is not None:
            out.append(row)
            continue
        message = f"{where}: row {n}: column '{column}': {problem}"
        if on_bad_row != "skip":
            raise DataError(f"{message} (task '{task.name}', split {split}; set data.on_bad_row=skip to drop such rows)")
        skipped.append(message)
    return out


# ---- local files ----------------------------------------------------------------
def _split_files(folder: Path, names: list[str]) -> list[Path]:
    for name in names:
        for ext in EXTENSIONS:
            single = folder / f"{name}.{ext}"
            if single.is_file():
                return [single]
            shards = sorted(folder.glob(f"{name}-*.{ext}"))
            if shards:
                return shards
    return []


def _local_source(task: Task, local_dir: str | None, paths: dict[str, str]) -> tuple[str, Path] | None:
    """('folder' | 'template' | 'file', path) for the task's local data, or None."""
    if task.name in paths:
        spec = str(paths[task.name])
        if "{split}" in spec:
            return "template", Path(spec)
        path = Path(spec).expanduser()
        if path.is_dir():
            return "folder", path
        if path.is_file():
            return "file", path
        raise DataError(f"data.paths.{task.name}={spec!r}: no such file or folder")
    if local_dir:
        folder = Path(local_dir).expanduser() / task.name
        if folder.is_dir():
            return "folder", folder
        log.info("task %s: no folder %s; falling back to the hub (%s)", task.name, folder, task.hub_id)
    return None


def _local_parts(task: Task, kind: str, path: Path) -> dict[str, list[tuple[str, Numbered]]]:
    parts: dict[str, list[tuple[str, Numbered]]] = {}
    if kind == "file":
        by_split: dict[str, list[tuple[int, Any]]] = {}
        for n, row in _read_file(path):
            key = row.get("split") if isinstance(row, dict) else None
            by_split.setdefault(str(key), []).append((n, row))
        for generic, hub_name in wanted_splits(task).items():
            rows = by_split.get(hub_name) or by_split.get(generic)
            if rows is None:
                raise DataError(
                    f"{path}: task '{task.name}' needs rows whose 'split' column is {generic!r}"
                    f" (found: {sorted(by_split)})"
                )
            parts[generic] = [(str(path), rows)]
        return parts
    for generic, hub_name in wanted_splits(task).items():
        names = list(dict.fromkeys([hub_name, generic]))
        if kind == "template":
            files = [p for p in (Path(str(path).format(split=s)).expanduser() for s in names) if p.is_file()][:1]
            tried = [str(path).format(split=s) for s in names]
        else:
            files = _split_files(path, names)
            tried = [f"{path}/{s}[-*].{{{','.join(EXTENSIONS)}}}" for s in names]
        if not files:
            raise DataError(f"task '{task.name}': no {generic} split file; looked for {' or '.join(tried)}")
        parts[generic] = [(str(f), _read_file(f)) for f in files]
    return parts


# ---- the hub ----------------------------------------------------------------------
def _hub_parts(task: Task, local_dir: str | None) -> dict[str, list[tuple[str, Numbered]]]:
    config = f" (config {task.hub_config!r})" if task.hub_config else ""
    if hub_offline():
        looked = f" (no folder {Path(local_dir).expanduser() / task.name})" if local_dir else ""
        raise DataError(
            f"task '{task.name}': no local files{looked} and the hub is offline (HF_HUB_OFFLINE/"
            f"HF_DATASETS_OFFLINE), so hub dataset '{task.hub_id}'{config} cannot be loaded; "
            + _setting_hint(task)
        )
    import datasets

    parts: dict[str, list[tuple[str, Numbered]]] = {}
    for generic, hub_name in wanted_splits(task).items():
        try:
            rows = datasets.load_dataset(task.hub_id, task.hub_config, split=hub_name).to_list()
        except Exception as err:  # any hub/network/schema failure: say what to do instead
            raise DataError(
                f"task '{task.name}': could not load hub dataset '{task.hub_id}'{config} split "
                f"{hub_name!r}: {err}. To read local files instead, " + _setting_hint(task)
            ) from err
        parts[generic] = [(f"hub {task.hub_id}{config} [{hub_name}]", enumerate(rows, start=1))]
    return parts


def load_original(
    task: Task, local_dir: str | None = None, paths: dict[str, str] | None = None, on_bad_row: str = "error"
) -> dict[str, Rows]:
    """The task's original, validated splits: "train", "validation" and, where it
    has a labelled one, "test" (built-in rows, then local files, then the hub)."""
    if task.builtin_rows is not None:
        splits = task.builtin_rows()
        missing = {"train", "validation"} - set(splits)
        if missing:
            raise DataError(f"task '{task.name}': builtin_rows() gave no {sorted(missing)} split")
        parts = {
            s: [(f"builtin rows of task '{task.name}' [{s}]", enumerate(rows, start=1))]
            for s, rows in splits.items()
            if s in ("train", "validation", "test")
        }
    else:
        source = _local_source(task, local_dir, paths or {})
        parts = _local_parts(task, *source) if source else _hub_parts(task, local_dir)

    out: dict[str, Rows] = {}
    for split, files in parts.items():
        skipped: list[str] = []
        out[split] = [r for where, numbered in files for r in _validate(task, where, split, numbered, on_bad_row, skipped)]
        if skipped:
            log.warning(
                "task %s: skipped %d bad row(s) in %s (on_bad_row=skip); first: %s",
                task.name, len(skipped), split, skipped[0],
            )
        if not out[split]:
            raise DataError(f"task '{task.name}': the {split} split has no usable rows")
    return out
