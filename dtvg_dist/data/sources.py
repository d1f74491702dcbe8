"""Where a task's original splits come from: built-in rows, local files or the hub.

The original splits are keyed by the hub's split names (`Task.hub_splits`),
before any split rule. Local files (JSONL / JSON / CSV / Parquet, with the
hub's column names) make offline runs and tests possible; the hub is read
as Parquet files (see `dtvg_dist.data.hub`). Every row is checked against
the task's column schema as it is read, so errors name the file, row and
column.

`read_original` gives Python rows. `read_tables` keeps Parquet splits as
Arrow (`RowTable`: checked a record batch at a time, rows made only when
used), so the large stage-1 sources never exist as one dict per row.
`locate_original` finds the files without reading them (the tokenized-split
cache keys on them).
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dtvg_dist.data import hub
from dtvg_dist.data.manifest import MANIFEST, verify_task
from dtvg_dist.data.rowtable import RowTable, clean_batch
from dtvg_dist.tasks.base import Task
from dtvg_dist.tasks.schema import DataError, check_row

__all__ = [
    "EXTENSIONS", "Part", "Source", "load_original", "locate_original", "read_original", "read_tables",
    "parquet_rows", "read_file", "Unreadable",
]

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
        f"On a machine with hub access run `python -m dtvg_dist.dataset download --to DIR tasks={task.name}` "
        "and set data.local_dir=DIR here; or put its splits (.parquet, .jsonl or .csv with the hub's "
        f"column names) in <dir>/{task.name}/ and set data.local_dir=<dir>, or set data.paths.{task.name}="
        "<folder, file with a 'split' column, or path with '{split}'>"
    )


def _names(task: Task, hub_split: str) -> list[str]:
    """File names that may hold a hub split: its own name, then the role(s) it plays."""
    roles = [role for role, name in task.hub_splits().items() if name == hub_split]
    return list(dict.fromkeys([hub_split, *roles]))


# ---- readers ------------------------------------------------------------------
class Unreadable(str):
    """A row that could not be parsed; the text says why."""


def _read_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as err:
                yield n, Unreadable(f"invalid JSON ({err.msg})")


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


def read_file(path: Path) -> Iterator[tuple[int, Any]]:
    """(1-based row number, row) of a .jsonl/.json/.csv/.parquet file; a row
    that cannot be parsed comes as an `Unreadable` saying why."""
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
def _checked(
    task: Task, where: str, split: str, numbered: Numbered, on_bad_row: str, skipped: list
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(row number, checked row) of the good rows; a bad row is an error
    naming file, row and column, or (on_bad_row=skip) noted in `skipped`."""
    n_labels = task.num_labels
    for n, raw in numbered:
        if isinstance(raw, Unreadable):
            row, column, problem = None, "-", str(raw)
        else:
            row, column, problem = check_row(raw, task.columns, n_labels)
        if row is not None:
            yield n, row
            continue
        message = f"{where}: row {n}: column '{column}': {problem}"
        if on_bad_row != "skip":
            raise DataError(
                f"{message} (task '{task.name}', split {split}; set data.on_bad_row=skip to drop such rows)"
            )
        skipped.append(message)


def _validate(
    task: Task, where: str, split: str, numbered: Numbered, on_bad_row: str, skipped: list
) -> Rows:
    return [row for _, row in _checked(task, where, split, numbered, on_bad_row, skipped)]


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


@dataclass
class Part:
    """One file of a hub split, or rows already in memory (built-in rows, or a
    single file's rows of that split); `where` names it in messages."""

    where: str
    path: Path | None = None
    numbered: list[tuple[int, Any]] | None = None

    def rows(self) -> Numbered:
        if self.numbered is not None:
            return iter(self.numbered)
        assert self.path is not None
        return read_file(self.path)

    @property
    def is_parquet(self) -> bool:
        return self.numbered is None and self.path is not None and self.path.name.lower().endswith(".parquet")


def _local_parts(task: Task, kind: str, path: Path) -> dict[str, list[Part]]:
    parts: dict[str, list[Part]] = {}
    splits = list(dict.fromkeys(task.hub_splits().values()))
    if kind == "file":
        by_split: dict[str, list[tuple[int, Any]]] = {}
        for n, row in read_file(path):
            key = row.get("split") if isinstance(row, dict) else None
            by_split.setdefault(str(key), []).append((n, row))
        for split in splits:
            rows = next((by_split[n] for n in _names(task, split) if n in by_split), None)
            if rows is None:
                raise DataError(
                    f"{path}: task '{task.name}' needs rows whose 'split' column is "
                    f"{' or '.join(map(repr, _names(task, split)))} (found: {sorted(by_split)})"
                )
            parts[split] = [Part(str(path), path, rows)]
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
        parts[split] = [Part(str(f), f) for f in files]
    return parts


def _check_against_manifest(task: Task, folder: Path, parts: dict[str, list[Part]]) -> str:
    """Verify a mirror folder's files (sha256, and nothing unlisted); describe the source."""
    root = folder.parent
    entry = verify_task(root, task.name)
    if entry is None:
        return f"local {folder}"
    listed = {str((root / rel).resolve()) for rel in entry.get("files", {})}
    for files in parts.values():
        for part in files:
            if str(Path(part.where).resolve()) not in listed:
                raise DataError(
                    f"task '{task.name}': {part.where} is not in {root / MANIFEST}; remove it or download "
                    "the task again"
                )
    commit = entry.get("commit") or entry.get("revision")
    return f"local {folder} (mirror of {entry.get('hub_id')}@{entry.get('revision')}, {str(commit)[:12]})"


# ---- the hub ----------------------------------------------------------------------
def _hub_parts(task: Task, local_dir: str | None, revision: str | None) -> tuple[dict, hub.HubFiles]:
    looked = f"no folder {Path(local_dir).expanduser() / task.name}; " if local_dir else ""
    found = hub.fetch(task, revision, hint=(looked + _setting_hint(task)))
    parts = {split: [Part(str(f), f) for f in files] for split, files in found.files.items()}
    return parts, found


def _progress(numbered: Numbered, total: int | None, desc: str) -> Numbered:
    from tqdm.auto import tqdm

    return tqdm(numbered, total=total, desc=desc, unit="row", leave=False, mininterval=1.0)


# ---- reading ----------------------------------------------------------------------
def locate_original(
    task: Task,
    local_dir: str | None = None,
    paths: dict[str, str] | None = None,
    revision: str | None = None,
) -> tuple[dict[str, list[Part]], Source]:
    """Where the task's original splits are (built-in rows, then local files,
    then the hub), keyed by hub split name; Parquet files are not read yet."""
    if task.builtin_rows is not None:
        splits = task.builtin_rows()
        missing = {"train", "validation"} - set(splits)
        if missing:
            raise DataError(f"task '{task.name}': builtin_rows() gave no {sorted(missing)} split")
        parts = {
            s: [Part(f"builtin rows of task '{task.name}' [{s}]", numbered=list(enumerate(rows, start=1)))]
            for s, rows in splits.items()
        }
        return parts, Source("builtin", f"builtin rows of task '{task.name}'")
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
    source.files = {split: [part.where for part in files] for split, files in parts.items()}
    return parts, source


def _read_parquet(path: Path) -> Any:
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path).read()
    except Exception as err:  # not Parquet, truncated, ...
        raise DataError(f"{path}: not a readable Parquet file ({err})") from err


def _checked_table(
    task: Task, where: str, split: str, table: Any, on_bad_row: str, skipped: list, progress: bool
) -> tuple[Any, bool]:
    """Positions of the good rows of an Arrow table, a record batch at a time:
    a batch `clean_batch` clears makes no rows; any other is checked row by
    row. Also: whether every batch was clean."""
    import numpy as np

    good, clean, offset = [], True, 0
    bar = None
    if progress and table.num_rows >= _PROGRESS_ROWS:
        from tqdm.auto import tqdm

        bar = tqdm(total=table.num_rows, desc=f"{task.name} {split}", unit="row", leave=False, mininterval=1.0)
    for batch in table.to_batches(max_chunksize=4096):
        if clean_batch(batch, task.columns, task.num_labels):
            good.append(np.arange(offset, offset + batch.num_rows, dtype=np.int64))
        else:
            clean = False
            numbered = enumerate(batch.to_pylist(), start=offset + 1)
            checked = _checked(task, where, split, numbered, on_bad_row, skipped)
            good.append(np.fromiter((n - 1 for n, _ in checked), dtype=np.int64))
        offset += batch.num_rows
        if bar is not None:
            bar.update(batch.num_rows)
    if bar is not None:
        bar.close()
    return (np.concatenate(good) if good else np.zeros(0, dtype=np.int64)), clean


def _parquet_split(
    task: Task, split: str, files: list[Part], on_bad_row: str, skipped: list, progress: bool
) -> RowTable | Rows:
    """A split's Parquet files as one Arrow table with the positions of its good rows."""
    import numpy as np
    import pyarrow as pa

    tables, good, clean = [], [], True
    for part in files:
        assert part.path is not None
        table = _read_parquet(part.path)
        rows, ok = _checked_table(task, part.where, split, table, on_bad_row, skipped, progress)
        tables.append(table)
        good.append(rows)
        clean = clean and ok
    where = f"task '{task.name}' [{split}]"
    if len(tables) == 1:
        return RowTable(tables[0], good[0], task.columns, task.num_labels, where, clean)
    try:
        table = pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        log.info("task %s: the %s files' schemas differ; reading them as Python rows", task.name, split)
        return [row for t, g in zip(tables, good, strict=True)
                for row in RowTable(t, g, task.columns, task.num_labels, where)]
    offsets = np.cumsum([0] + [t.num_rows for t in tables[:-1]])
    index = np.concatenate([g + o for g, o in zip(good, offsets, strict=True)])
    return RowTable(table, index, task.columns, task.num_labels, where, clean)


def read_tables(
    task: Task,
    parts: dict[str, list[Part]],
    on_bad_row: str = "error",
    progress: bool = False,
    arrow: bool = True,
) -> dict[str, Rows | RowTable]:
    """The checked rows of each located split: a `RowTable` for Parquet splits
    (with `arrow`), else Python rows."""
    out: dict[str, Rows | RowTable] = {}
    for split, files in parts.items():
        skipped: list[str] = []
        rows: Rows | RowTable
        if arrow and all(part.is_parquet for part in files):
            rows = _parquet_split(task, split, files, on_bad_row, skipped, progress)
        else:
            rows = []
            for part in files:
                numbered = part.rows()
                total = _row_count(part.path) if progress and part.path is not None else None
                if total is not None and total >= _PROGRESS_ROWS:
                    numbered = _progress(numbered, total, f"{task.name} {split}")
                rows.extend(_validate(task, part.where, split, numbered, on_bad_row, skipped))
        if skipped:
            log.warning(
                "task %s: skipped %d bad row(s) in %s (on_bad_row=skip); first: %s",
                task.name, len(skipped), split, skipped[0],
            )
        if not len(rows):
            raise DataError(f"task '{task.name}': the {split} split has no usable rows")
        out[split] = rows
    return out


def read_original(
    task: Task,
    local_dir: str | None = None,
    paths: dict[str, str] | None = None,
    on_bad_row: str = "error",
    revision: str | None = None,
    progress: bool = False,
    arrow: bool = False,
    located: tuple[dict[str, list[Part]], Source] | None = None,
) -> tuple[dict[str, Any], Source]:
    """The task's original, validated splits keyed by hub split name (built-in
    rows, then local files, then the hub), and where they came from. Python
    rows, or with `arrow` a `RowTable` per Parquet split (see `read_tables`).
    `located`: what `locate_original` already returned for these settings
    (the tokenized-split cache locates first, for its key), not located again."""
    parts, source = located or locate_original(task, local_dir, paths, revision)
    return read_tables(task, parts, on_bad_row, progress, arrow), source


def load_original(
    task: Task,
    local_dir: str | None = None,
    paths: dict[str, str] | None = None,
    on_bad_row: str = "error",
    revision: str | None = None,
) -> dict[str, Rows]:
    """The task's original, validated splits keyed by hub split name."""
    return read_original(task, local_dir, paths, on_bad_row, revision)[0]
