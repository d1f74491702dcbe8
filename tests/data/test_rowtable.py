"""Parquet splits kept as Arrow (RowTable): the same rows, errors and skips as
the per-row reader, and a batch check that never clears a row check_row would
reject or change."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dtvg_dist.data import DataSettings, prepare_splits
from dtvg_dist.data.rowtable import PY_WHITESPACE, RowTable, clean_batch
from dtvg_dist.tasks import TASKS, Column, DataError, get_task
from dtvg_dist.tasks.schema import check_row


def rows_of(split) -> list[dict]:
    return split.to_list() if isinstance(split, RowTable) else list(split)


SETTINGS = [
    {},
    {"max_train_examples": 3, "max_eval_examples": 4},
    {"k_shot": 4, "k_shot_sampling": "per_class"},
    {"k_shot": 2, "attempt_quirks": True},
]


@pytest.mark.parametrize("settings", SETTINGS, ids=["default", "caps", "per_class", "k_shot_quirks"])
def test_every_hub_task_gives_the_same_rows_as_arrow(fake_hub, settings):
    """prepare_splits(tables=True) selects from Arrow what tables=False makes
    as dicts: same rows in the same order, for all 26 tasks; with the row
    transform (quirk, ReCoRD expansion) applied the same way."""
    arrow_splits = 0
    for name in sorted(TASKS):
        task = get_task(name)
        cfg = DataSettings(**settings)
        try:
            ref = prepare_splits(task, cfg, seed=5)
        except DataError as err:  # e.g. fewer training rows than k: the same error
            with pytest.raises(DataError, match=re.escape(str(err))):
                prepare_splits(task, cfg, seed=5, tables=True)
            continue
        got = prepare_splits(task, cfg, seed=5, tables=True)
        assert got.source.where == ref.source.where
        for split in ("train", "validation", "test"):
            rows = rows_of(got.splits[split])
            if got.row_fn is not None:
                rows = [e for r in rows for e in got.row_fn(r)]
            assert rows == ref.splits[split], (name, split)
            arrow_splits += isinstance(got.splits[split], RowTable)
        if task.expand_fn is None:
            assert got.rule == ref.rule
    assert arrow_splits >= 3 * 10  # the hub fixtures are Parquet: most splits stay Arrow


def write(path: Path, rows: list[dict], schema: pa.Schema | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


RTE = [{"sentence1": f"Premise {i}.", "sentence2": f"Hypothesis {i}.", "label": i % 2, "idx": i} for i in range(9000)]


@pytest.mark.parametrize("row", [5, 4097, 8999])  # in the first, second and last record batch
def test_bad_parquet_row_names_file_row_and_column(tmp_path, row):
    rows = [dict(r) for r in RTE]
    rows[row - 1]["label"] = 7
    train = write(tmp_path / "rte" / "train.parquet", rows)
    write(tmp_path / "rte" / "validation.parquet", RTE[:6])
    for tables in (False, True):
        with pytest.raises(DataError, match=rf"{train}: row {row}: column 'label': label 7 out of range 0..1"):
            prepare_splits(get_task("rte"), DataSettings(local_dir=str(tmp_path)), tables=tables)


def test_skipped_parquet_rows_are_the_same(tmp_path, caplog):
    rows = [dict(r) for r in RTE[:5000]]
    for i in (3, 4500):
        rows[i]["sentence1"] = "  "
    write(tmp_path / "rte" / "train.parquet", rows)
    write(tmp_path / "rte" / "validation.parquet", RTE[:6])
    cfg = DataSettings(local_dir=str(tmp_path), on_bad_row="skip")
    with caplog.at_level(logging.WARNING, logger="dtvg_dist.data"):
        got = prepare_splits(get_task("rte"), cfg, tables=True).splits["train"]
    assert "skipped 2 bad row(s) in train" in caplog.text
    assert isinstance(got, RowTable) and not got.clean  # rows are made through check_row again
    assert got.to_list() == prepare_splits(get_task("rte"), cfg).splits["train"]
    assert len(got) == 4998 and got[-1] == rows[-1] and got[3]["sentence1"] == "Premise 4."


def test_shards_with_different_schemas_fall_back_to_python_rows(tmp_path):
    folder = tmp_path / "rte"
    write(folder / "train-00000-of-00002.parquet", RTE[:3])
    write(folder / "train-00001-of-00002.parquet", [{**r, "label": str(r["label"])} for r in RTE[3:6]])
    write(folder / "validation.parquet", RTE[:6])
    cfg = DataSettings(local_dir=str(tmp_path))
    got = prepare_splits(get_task("rte"), cfg, tables=True).splits
    assert isinstance(got["validation"], RowTable) and got["validation"].clean
    assert rows_of(got["train"]) == prepare_splits(get_task("rte"), cfg).splits["train"]
    assert [r["label"] for r in rows_of(got["train"])] == [0, 1, 0, 1, 0, 1]  # "1" -> 1, as check_row does


def test_row_table_selects_without_copying():
    table = pa.table({"sentence": [f"s{i}" for i in range(10)], "label": list(range(10))})
    rows = RowTable(table, list(range(2, 10)), (Column("sentence"), Column("label", "int")), None, "t", clean=True)
    picked = rows.take([5, 0, 7])
    assert picked.table is table and [r["label"] for r in picked] == [7, 2, 9]
    assert rows[-1]["label"] == 9 and [r["label"] for r in rows[1:3]] == [3, 4]
    assert len(rows.take([])) == 0 and rows.take([]).to_list() == []
    with pytest.raises(IndexError):
        rows[8]


# ---- clean_batch ------------------------------------------------------------------------
def test_python_whitespace_is_what_str_strip_removes():
    assert set(PY_WHITESPACE) == {chr(c) for c in range(0x110000) if chr(c).isspace()}


TEXT = Column("t")
CASES = [
    # (column, Arrow array, whether check_row rejects or changes some row; None:
    # it does not, but the batch check leaves such a batch to it)
    (TEXT, pa.array(["a", "b c"]), False),
    (TEXT, pa.array(["a", " \u3000"]), True),  # blank to str.strip()
    (TEXT, pa.array(["a", "\x1c"]), True),
    (TEXT, pa.array(["a", None]), True),
    (TEXT, pa.array([1, 2]), True),
    (Column("t", allow_empty=True), pa.array(["", "x"]), False),
    (Column("l", "label"), pa.array([0, 2], pa.int32()), False),
    (Column("l", "label"), pa.array([0, 3]), True),  # 3 labels: out of range
    (Column("l", "label"), pa.array([0, -1]), True),
    (Column("l", "label"), pa.array(["0", "1"]), True),  # coerced to int
    (Column("l", "label"), pa.array([True, False]), True),
    (Column("l", "choice", choices=("yes", "no")), pa.array(["no", "yes"]), False),
    (Column("l", "choice", choices=("yes", "no")), pa.array(["no", "maybe"]), True),
    (Column("l", "choice", choices=("1", "2")), pa.array([1, 2]), True),  # coerced to "1"/"2"
    (Column("s", "score", low=0.0, high=5.0), pa.array([0.0, 3.8]), False),
    (Column("s", "score", low=0.0, high=5.0), pa.array([0.0, 5.5]), True),
    (Column("s", "score"), pa.array([1, 2]), True),  # ints become floats
    (Column("s", "score"), pa.array([1.0, float("nan")]), None),  # kept by check_row; checked row by row
    (Column("a", "list"), pa.array([["x"], ["y", "z"]]), False),
    (Column("a", "list"), pa.array([["x"], []]), True),
    (Column("a", "list"), pa.array([["x"], [" "]]), True),
    (Column("a", "list"), pa.array([["x"], [None]]), True),
    (Column("a", "list", key="text"), pa.array([{"text": ["x"], "answer_start": [0]}]), False),
    (Column("a", "list", key="text"), pa.array([{"text": [], "answer_start": []}]), True),
    (Column("a", "list", key="text"), pa.array([{"other": ["x"]}]), True),
    (Column("j", "json"), pa.array([{"paragraph": 0, "question": 1}]), False),
    (Column("j", "json"), pa.array([json.dumps({"paragraph": 0})]), True),  # decoded from text
    (Column("i", "int"), pa.array([3, 4]), False),
    (Column("i", "int"), pa.array([3.0, 4.0]), True),
]


@pytest.mark.parametrize(("col", "array", "touched"), CASES)
def test_clean_batch_clears_only_rows_check_row_keeps_unchanged(col, array, touched):
    batch = pa.RecordBatch.from_arrays([array], names=[col.name])
    rows = batch.to_pylist()
    checked = [check_row(row, (col,), 3)[0] for row in rows]
    unchanged = all(repr(out) == repr(row) for out, row in zip(checked, rows, strict=True))  # repr: 1 != 1.0
    assert unchanged is not bool(touched)  # the case's premise, by check_row itself
    assert clean_batch(batch, (col,), 3) is (touched is False)


def test_clean_batch_needs_every_column():
    batch = pa.RecordBatch.from_pylist([{"a": "x"}])
    assert clean_batch(batch, (Column("a"),), None)
    assert not clean_batch(batch, (Column("a"), Column("b")), None)
