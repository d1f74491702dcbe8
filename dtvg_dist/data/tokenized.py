"""Tokenized splits as Arrow files: built once, memory-mapped by every rank, reused by later runs.

The stage-1 sources are large (MNLI 393k rows, QQP 364k), and a list of
Python dicts costs about 30 KB per tokenized row. Here a task's three
splits are tokenized a batch at a time (`datasets.Dataset.map`, the fast
tokenizer on a whole batch, int32 columns) into one cache folder, keyed by
everything that decides its contents: the task and this package's data
code, the split protocol (split rule and seed, k-shot settings and the run
seed that draws them, caps, quirks), the source files (path, size and
modification time; hub snapshots by commit) and the tokenizer (its
tokenizer.json), the model family and the lengths. Every process then
memory-maps the files: items are the dicts `dtvg_dist.data.encoding.Encoder`
makes (the one tokenization path, also `predict`'s), so the trainer and evaluation read them as before.

Where: `data.cache_dir`, else $DTVG_DATA_CACHE, else runs/.cache/tokenized.
A folder is built under a temporary name and renamed when complete, so a
crash never leaves a half cache; `key.json` beside the files holds the key.
Under DDP/ZeRO the main process builds while the others wait (then the
first process of every other node, in case its disk is not shared), and
everyone memory-maps the result.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import inspect
import json
import logging
import os
import re
import shutil
import time
import uuid
import weakref
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from dtvg_dist.data import DataSettings, expansion_rule, prepare_splits
from dtvg_dist.data.encoding import Encoder, TokenizedSplit
from dtvg_dist.data.rowtable import RowTable
from dtvg_dist.data.sources import Part, Source, locate_original
from dtvg_dist.store import run_files
from dtvg_dist.tasks import Task

__all__ = [
    "CACHE_ENV",
    "DEFAULT_CACHE_DIR",
    "SPLITS",
    "TokenizedSplit",
    "cache_dir",
    "cache_key",
    "tokenized_splits",
]

log = logging.getLogger("dtvg_dist.data")

CACHE_ENV = "DTVG_DATA_CACHE"
DEFAULT_CACHE_DIR = "tokenized"  # under run_files.cache_root()
FORMAT = 1  # the files' layout; part of the key
SPLITS = ("train", "validation", "test")
BATCH_ROWS = 1000  # rows formatted and tokenized at a time
_IDS = pa.list_(pa.int32())
_KEY_FILE = "key.json"
# This package's code that decides what an example is: any edit rebuilds.
_CODE = ("data", "tasks")  # folders under the package, every .py in them


def _open(folder: Path, family: str) -> dict[str, TokenizedSplit]:
    out = {}
    for split in SPLITS:
        with pa.memory_map(str(folder / f"{split}.arrow"), "r") as source:
            table = pa.ipc.open_stream(source).read_all()  # buffers point into the map
        out[split] = TokenizedSplit(table, family)
    return out


# ---- building ----------------------------------------------------------------------
def _write_split(
    rows: Any, row_fn: Callable[[dict], list[dict]] | None, encoder: Encoder, path: Path, desc: str
) -> int:
    """Tokenize `rows` (a RowTable or a list) into the Arrow file `path`; the number of examples."""
    import datasets

    def batch(indices: pa.Table) -> pa.Table:
        picked = indices.column("i").to_numpy()
        got = rows.rows(picked) if isinstance(rows, RowTable) else [rows[i] for i in picked]
        if row_fn is not None:
            got = [example for row in got for example in row_fn(row)]
        return encoder(got)

    positions = datasets.Dataset.from_dict({"i": np.arange(len(rows), dtype=np.int64)}).with_format("arrow")
    written = positions.map(
        batch, batched=True, batch_size=BATCH_ROWS, remove_columns=["i"], cache_file_name=str(path),
        load_from_cache_file=False, new_fingerprint=hashlib.sha256(str(path).encode()).hexdigest()[:16],
        desc=desc,
    )
    return len(written)


def _build(
    task: Task, cfg: DataSettings, seed: int | None, tokenizer: Any, family: str, folder: Path, key: dict,
    located: tuple[dict[str, list[Part]], Source],
) -> dict[str, Any]:
    """Build the cache folder (under a temporary name, renamed when complete); its metadata."""
    started = time.perf_counter()
    with _system_arrow_pool():
        return _build_in(task, cfg, seed, tokenizer, family, folder, key, started, located)


@contextlib.contextmanager
def _system_arrow_pool() -> Iterator[None]:
    """Arrow's default pool (mimalloc/jemalloc) keeps the pages a Parquet read
    decompresses into (MNLI: 100 MB held for an 18 MB table); the system
    allocator returns them. Buffers remember their pool, so switching back is safe."""
    previous = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        yield
    finally:
        pa.set_memory_pool(previous)


def _build_in(
    task: Task, cfg: DataSettings, seed: int | None, tokenizer: Any, family: str, folder: Path, key: dict,
    started: float, located: tuple[dict[str, list[Part]], Source],
) -> dict[str, Any]:
    prepared = prepare_splits(task, cfg, seed, progress=True, tables=True, located=located)
    encoder = Encoder(task, tokenizer, family, cfg.template)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        sizes = {split: len(prepared.splits[split]) for split in SPLITS}
        examples = {
            split: _write_split(prepared.splits[split], prepared.row_fn, encoder, tmp / f"{split}.arrow",
                                f"tokenize {task.name} {split}")
            for split in SPLITS
        }
        encoder.report()
        rule = prepared.rule
        if prepared.row_fn is not None and task.expand_fn is not None:
            rule += expansion_rule(sizes, examples)
        meta = {
            "key": key, "sizes": examples, "rule": rule, "source": prepared.source.where,
            "original_sizes": prepared.original_sizes, "built_in_s": round(time.perf_counter() - started, 2),
        }
        (tmp / _KEY_FILE).write_text(json.dumps(meta, indent=1, default=str) + "\n", encoding="utf-8")
        _publish(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return meta


def _publish(tmp: Path, folder: Path) -> None:
    """Rename the finished folder into place; another process that finished
    first wins (its folder has the same contents)."""
    try:
        os.rename(tmp, folder)
    except OSError:
        if not (folder / _KEY_FILE).is_file():
            raise


# ---- the key -----------------------------------------------------------------------
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _code_id(code: Any) -> str:
    parts = [code.co_code.hex()]
    for const in code.co_consts:
        parts.append(_code_id(const) if inspect.iscode(const) else repr(const))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _stable(value: Any, depth: int = 0) -> Any:
    """A JSON-able stand-in for a Task field: callables by name and bytecode
    (and the values they close over), dataclasses by fields."""
    if depth > 6:
        return _ADDRESS.sub("", repr(value))
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_stable(v, depth + 1) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _stable(v, depth + 1) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _stable(getattr(value, f.name), depth + 1) for f in dataclasses.fields(value)}
    if isinstance(value, functools.partial):
        return {"partial": _stable(value.func, depth + 1), "args": _stable(value.args, depth + 1),
                "keywords": _stable(value.keywords, depth + 1)}
    if callable(value):
        name = f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', type(value).__name__)}"
        code = getattr(value, "__code__", None)
        if code is None:
            return name
        cells = [c.cell_contents for c in (getattr(value, "__closure__", None) or ())]
        return {"fn": name, "code": _code_id(code), "closure": _stable(cells, depth + 1)}
    return _ADDRESS.sub("", repr(value))  # "<X object at 0x7f..>" differs between processes


@functools.cache
def _code_fingerprint() -> str:
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for name in _CODE:
        path = root / name
        for file in sorted(path.glob("*.py")) if path.is_dir() else [path]:
            digest.update(file.name.encode() + file.read_bytes())
    return digest.hexdigest()[:16]


_TOKENIZER_IDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def tokenizer_fingerprint(tokenizer: Any) -> dict[str, Any]:
    """What makes a tokenizer's ids: its class, special tokens and vocabulary
    (a fast tokenizer's whole tokenizer.json), hashed once per object."""
    with contextlib.suppress(TypeError):
        if tokenizer in _TOKENIZER_IDS:
            return _TOKENIZER_IDS[tokenizer]
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        content = backend.to_str()
    else:
        content = json.dumps(sorted(tokenizer.get_vocab().items()))
    fingerprint = {
        "class": type(tokenizer).__name__,
        "content": hashlib.sha256(content.encode()).hexdigest()[:16],
        "special": {k: str(v) for k, v in sorted(getattr(tokenizer, "special_tokens_map", {}).items())},
        "split_special_tokens": bool(getattr(tokenizer, "split_special_tokens", False)),
    }
    with contextlib.suppress(TypeError):
        _TOKENIZER_IDS[tokenizer] = fingerprint
    return fingerprint


def _file_id(part: Part) -> Any:
    if part.path is None:  # built-in rows: their content
        rows = [row for _, row in part.numbered or []]
        return {"rows": hashlib.sha256(json.dumps(rows, sort_keys=True, default=repr).encode()).hexdigest()[:16]}
    stat = part.path.resolve().stat()
    return {"path": str(part.path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def cache_key(
    task: Task, settings: DataSettings, seed: int | None, tokenizer: Any, family: str,
    parts: Mapping[str, list[Part]], source_where: str,
) -> dict[str, Any]:
    """Everything the tokenized splits depend on (see the module docstring)."""
    cfg = settings
    protocol = {
        "split_rule": task.split_rule, "split_seed": cfg.split_seed, "k_shot": cfg.k_shot,
        "k_shot_sampling": cfg.k_shot_sampling if cfg.k_shot else None,
        "sample_seed": (cfg.split_seed if seed is None else seed) if cfg.k_shot else None,
        "max_train_examples": cfg.max_train_examples, "max_eval_examples": cfg.max_eval_examples,
        "attempt_quirks": cfg.attempt_quirks, "on_bad_row": cfg.on_bad_row,
    }
    return {
        "format": FORMAT,
        "code": _code_fingerprint(),
        "task": _stable(task),
        "protocol": protocol,
        "source": {"where": source_where,
                   "files": {split: [_file_id(p) for p in files] for split, files in sorted(parts.items())}},
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "family": family,
        "template": cfg.template,
        "lengths": {"source": task.max_source_length, "target": task.max_target_length},
    }


def cache_dir(settings: DataSettings) -> Path:
    """data.cache_dir, else $DTVG_DATA_CACHE, else <$DTVG_CACHE or runs/.cache>/tokenized."""
    if settings.cache_dir or os.environ.get(CACHE_ENV):
        return Path(settings.cache_dir or os.environ[CACHE_ENV]).expanduser()
    return run_files.cache_root() / DEFAULT_CACHE_DIR


# ---- the entry point -------------------------------------------------------------------
@contextlib.contextmanager
def _builders_first(accelerator: Any) -> Iterator[None]:
    """The main process first, then the first process of each other node (a
    node-local cache folder is built there, a shared one is found), then the
    rest: every process runs the body, and only builders find no cache."""
    if accelerator is None or accelerator.num_processes == 1:
        yield
        return
    with accelerator.main_process_first(), accelerator.local_main_process_first():
        yield


def tokenized_splits(
    task: Task,
    settings: DataSettings | Mapping[str, Any] | None,
    tokenizer: Any,
    family: str,
    seed: int | None = None,
    accelerator: Any = None,
    locate: Callable[[], tuple[dict[str, list[Part]], Source]] | None = None,
) -> dict[str, TokenizedSplit]:
    """The task's train / validation / test examples for `tokenizer` and
    `family` (what `encode(task, load_splits(task, settings, seed)[split], ...)`
    gives), from the cache, built there first when missing. The task's files
    are located once (by `locate`, when given: `TaskData.located`): for the
    key, and (on a miss) for reading them.
    `dtvg_dist.data.module.TaskData` is the usual way here."""
    cfg = DataSettings.coerce(settings)
    with _builders_first(accelerator):
        started = time.perf_counter()
        # Inside the builders-first block: locating may fetch a hub snapshot.
        if locate is not None:
            parts, source = locate()
        else:
            parts, source = locate_original(task, cfg.local_dir, cfg.paths, cfg.revisions.get(task.name))
        key = cache_key(task, cfg, seed, tokenizer, family, parts, source.where)
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
        folder = cache_dir(cfg) / f"{task.name}-{family}-{digest}"
        meta = _read_meta(folder)
        if meta is not None and meta.get("key") != json.loads(json.dumps(key, default=str)):
            log.warning("tokenized cache %s holds another key; rebuilding it", folder)
            shutil.rmtree(folder, ignore_errors=True)
            meta = None
        hit = meta is not None
        if meta is None:
            log.info("tokenized splits of %s: cache miss, building %s", task.name, folder)
            if accelerator is not None and accelerator.num_processes > 1 and not accelerator.is_main_process:
                log.warning(
                    "process %d builds the tokenized splits of %s itself: the main process's cache "
                    "%s is not visible here (is data.cache_dir on a disk every node shares?)",
                    accelerator.process_index, task.name, folder,
                )
            meta = _build(task, cfg, seed, tokenizer, family, folder, key, (parts, source))
        splits = _open(folder, family)
        sizes = {k: len(v) for k, v in splits.items()}
        log.info(
            "tokenized splits of %s: cache %s, %s (train=%d validation=%d test=%d; %s; %s) in %.1f s",
            task.name, "hit" if hit else "miss, built", folder, sizes["train"], sizes["validation"],
            sizes["test"], meta.get("source"), meta.get("rule"), time.perf_counter() - started,
        )
    return splits


def _read_meta(folder: Path) -> dict[str, Any] | None:
    path = folder / _KEY_FILE
    if not path.is_file() or not all((folder / f"{s}.arrow").is_file() for s in SPLITS):
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
