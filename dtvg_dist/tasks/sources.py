"""Where a task's original splits come from: built-in rows, local files or the hub.

The original splits are keyed by the hub's split names (`Task.hub_splits`),
before any split rule. Local files (JSONL / JSON / CSV / Parquet, with the
hub's column names) make offline runs and tests possible; the hub is read
as Parquet files (see `dtvg_dist.tasks.hub`). Every row is checked against
the task's column schema as it is read, so errors name the file, row and
column.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dtvg_dist.tasks import hub
from dtvg_dist.tasks.base import Task
from dtvg_dist.tasks.manifest import MANIFEST, verify_task
from dtvg_dist.tasks.schema import DataError, check_row

__all__ = ["EXTENSIONS", "Source", "load_original", "read_original", "parquet_rows"]

log = logging.getLogger("dtvg_dist.data")

EXTENSIONS = ("jsonl", "json", "csv", "parquet")

Rows = list[dict[str, Any]]
_PROGRESS_ROWS = 20_000  # a progress bar for files at least this long
# (row number, row or the reason it could not be read)
Numbered = Iterable[tuple[int, Any]]


@dataclass
class Source:
    """What a task's original splits were read from (for logs and `data check`)."""

    kind: str  # "builtin" | "local" | "hub"
    where: str
    files: dict[str, list[str]] = field(default_factory=dict)  # hub split -> files read
    commit: str | None = None


def _setting_hint(task: Task) -> str:
    return (
        f"On a machine with hub access run `python -m dtvg_dist.data download --to DIR tasks={task.name}` "
        "and set data.local_dir=DIR here; or put its splits (.parquet, .jsonl or .csv with the hub's "
        f"column names) in <dir>/{task.name}/ and set data.local_dir=<dir>, or set data.paths.{task.name}="
        "<folder, file with a 'split' column, or path with '{split}'>"
    )


def _names(task: Task, hub_split: str) -> list[str]:
    """File names that may hold a hub split: its own name, then the role(s) it plays."""
    roles = [role for role, name in task.hub_splits().items() if name == hub_split]
    return list(dict.fromkeys([hub_split, *roles]))


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


def parquet_rows(path: Path, batch_size: int = 4096) -> Iterator[tuple[int, Any]]:
    """(1-based row number, row) of a Parquet file, a record batch at a time."""
    import pyarrow.parquet as pq

    try:
        reader = pq.ParquetFile(path)
    except Exception as err:  # not Parquet, truncated, ...
        raise DataError(f"{path}: not a readable Parquet file ({err})") from err
    n = 0
    for batch in reader.iter_batches(batch_size=batch_size):
        for row in batch.to_pylist():
            n += 1
            yield n, row


_READERS = {"jsonl": _read_jsonl, "json": _read_json, "csv": _read_csv, "parquet": parquet_rows}


def _read_file(path: Path) -> Iterator[tuple[int, Any]]:
    ext = path.name.rsplit(".", 1)[-1].lower()
    if ext not in _READERS:
        raise DataError(f"{path}: unsupported file type; use one of {', '.join(EXTENSIONS)}")
    return _READERS[ext](path)


def _row_count(path: Path) -> int | None:
    if path.name.endswith(".parquet"):
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(path).metadata.num_rows
        except Exception:  # noqa: BLE001 - the reader reports the problem
            return None
    return None


# ---- validation ---------------------------------------------------------------
def _validate(
    task: Task, where: str, split: str, numbered: Numbered, on_bad_row: str, skipped: list
) -> Rows:
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
            raise DataError(
                f"{message} (task '{task.name}', split {split}; set data.on_bad_row=skip to drop such rows)"
            )
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
    splits = list(dict.fromkeys(task.hub_splits().values()))
    if kind == "file":
        by_split: dict[str, list[tuple[int, Any]]] = {}
        for n, row in _read_file(path):
            key = row.get("split") if isinstance(row, dict) else None
            by_split.setdefault(str(key), []).append((n, row))
        for split in splits:
            rows = next((by_split[n] for n in _names(task, split) if n in by_split), None)
            if rows is None:
                raise DataError(
                    f"{path}: task '{task.name}' needs rows whose 'split' column is "
                    f"{' or '.join(map(repr, _names(task, split)))} (found: {sorted(by_split)})"
                )
            parts[split] = [(str(path), rows)]
        return parts
    for split in splits:
        names = _names(task, split)
        if kind == "template":
            files = [p for p in (Path(str(path).format(split=s)).expanduser() for s in names) if p.is_file()][:1]
            tried = [str(path).format(split=s) for s in names]
        else:
            files = _split_files(path, names)
            tried = [f"{path}/{s}[-*].{{{','.join(EXTENSIONS)}}}" for s in names]
        if not files:
            raise DataError(f"task '{task.name}': no {split} split file; looked for {' or '.join(tried)}")
        parts[split] = [(str(f), _read_file(f)) for f in files]
    return parts


def _check_against_manifest(task: Task, folder: Path, parts: dict[str, list[tuple[str, Numbered]]]) -> str:
    """Verify a mirror folder's files (sha256, and nothing unlisted); describe the source."""
    root = folder.parent
    entry = verify_task(root, task.name)
    if entry is None:
        return f"local {folder}"
    listed = {str((root / rel).resolve()) for rel in entry.get("files", {})}
    for files in parts.values():
        for name, _ in files:
            if str(Path(name).resolve()) not in listed:
                raise DataError(
                    f"task '{task.name}': {name} is not in {root / MANIFEST}; remove it or download "
                    "the task again"
                )
    commit = entry.get("commit") or entry.get("revision")
    return f"local {folder} (mirror of {entry.get('hub_id')}@{entry.get('revision')}, {str(commit)[:12]})"


# ---- the hub ----------------------------------------------------------------------
def _hub_parts(task: Task, local_dir: str | None, revision: str | None) -> tuple[dict, hub.HubFiles]:
    looked = f"no folder {Path(local_dir).expanduser() / task.name}; " if local_dir else ""
    found = hub.fetch(task, revision, hint=(looked + _setting_hint(task)))
    parts = {split: [(str(f), parquet_rows(f)) for f in files] for split, files in found.files.items()}
    return parts, found


def _progress(numbered: Numbered, total: int | None, desc: str) -> Numbered:
    from tqdm.auto import tqdm

    return tqdm(numbered, total=total, desc=desc, unit="row", leave=False, mininterval=1.0)


def read_original(
    task: Task,
    local_dir: str | None = None,
    paths: dict[str, str] | None = None,
    on_bad_row: str = "error",
    revision: str | None = None,
    progress: bool = False,
) -> tuple[dict[str, Rows], Source]:
    """The task's original, validated splits keyed by hub split name (built-in
    rows, then local files, then the hub), and where they came from."""
    if task.builtin_rows is not None:
        splits = task.builtin_rows()
        missing = {"train", "validation"} - set(splits)
        if missing:
            raise DataError(f"task '{task.name}': builtin_rows() gave no {sorted(missing)} split")
        parts = {
            s: [(f"builtin rows of task '{task.name}' [{s}]", enumerate(rows, start=1))]
            for s, rows in splits.items()
        }
        source = Source("builtin", f"builtin rows of task '{task.name}'")
    else:
        local = _local_source(task, local_dir, paths or {})
        if local:
            parts = _local_parts(task, *local)
            where = f"local {local[1]}"
            if local[0] == "folder":
                where = _check_against_manifest(task, local[1], parts)
            source = Source("local", where)
        else:
            parts, found = _hub_parts(task, local_dir, revision)
            source = Source("hub", found.describe(), commit=found.commit)
        source.files = {split: [name for name, _ in files] for split, files in parts.items()}

    out: dict[str, Rows] = {}
    for split, files in parts.items():
        skipped: list[str] = []
        rows: Rows = []
        for where, numbered in files:
            total = _row_count(Path(where)) if progress else None
            if total is not None and total >= _PROGRESS_ROWS:
                numbered = _progress(numbered, total, f"{task.name} {split}")
            rows.extend(_validate(task, where, split, numbered, on_bad_row, skipped))
        if skipped:
            log.warning(
                "task %s: skipped %d bad row(s) in %s (on_bad_row=skip); first: %s",
                task.name, len(skipped), split, skipped[0],
            )
        if not rows:
            raise DataError(f"task '{task.name}': the {split} split has no usable rows")
        out[split] = rows
    return out, source


def load_original(
    task: Task,
    local_dir: str | None = None,
    paths: dict[str, str] | None = None,
    on_bad_row: str = "error",
    revision: str | None = None,
) -> dict[str, Rows]:
    """The task's original, validated splits keyed by hub split name."""
    return read_original(task, local_dir, paths, on_bad_row, revision)[0]
