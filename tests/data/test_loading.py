"""Loading original splits from local files; bad rows; offline errors."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
from pathlib import Path

import pytest

from dtvg_dist.data import DataSettings, load_splits
from dtvg_dist.data.sources import load_original
from dtvg_dist.tasks import DataError, get_task

RTE_TRAIN = [
    {"sentence1": f"Premise number {i}.", "sentence2": f"Hypothesis {i}.", "label": i % 2, "idx": i}
    for i in range(12)
]
RTE_VALID = [
    {"sentence1": f"Valid premise {i}.", "sentence2": f"Valid hypothesis {i}.", "label": (i + 1) % 2, "idx": i}
    for i in range(6)
]


def write_jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_csv(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_parquet(path: Path, rows: list[dict]) -> Path:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


WRITERS = {"jsonl": write_jsonl, "csv": write_csv, "parquet": write_parquet}


@pytest.mark.parametrize("ext", sorted(WRITERS))
def test_local_dir_reads_every_format(tmp_path, ext):
    WRITERS[ext](tmp_path / "rte" / f"train.{ext}", RTE_TRAIN)
    WRITERS[ext](tmp_path / "rte" / f"validation.{ext}", RTE_VALID)
    original = load_original(get_task("rte"), local_dir=str(tmp_path))
    # CSV cells are strings: the columns the task reads come back as the hub's types.
    if ext == "csv":
        for row in original["train"] + original["validation"]:
            row["idx"] = int(row["idx"])
    assert original["train"] == RTE_TRAIN
    assert original["validation"] == RTE_VALID
    assert set(original) == {"train", "validation"}


def test_csv_decodes_list_and_dict_columns(tmp_path):
    row = {
        "paragraph": "P.", "question": "Q?", "answer": "A", "label": "1",
        "idx": json.dumps({"paragraph": 0, "question": 2, "answer": 1}),
    }
    write_csv(tmp_path / "multirc" / "train.csv", [row])
    write_csv(tmp_path / "multirc" / "validation.csv", [row])
    original = load_original(get_task("multirc"), local_dir=str(tmp_path))
    assert original["train"][0]["idx"] == {"paragraph": 0, "question": 2, "answer": 1}
    assert get_task("multirc").reference(original["train"][0]) == "1\t0-2"


def test_hub_split_names_and_shards(tmp_path):
    """MNLI's validation is `validation_matched`; parquet shards as the hub stores them."""
    folder = tmp_path / "mnli_snapshot"
    rows = [{"premise": "p", "hypothesis": "h", "label": 2, "idx": 0}]
    write_parquet(folder / "train-00000-of-00002.parquet", rows)
    write_parquet(folder / "train-00001-of-00002.parquet", rows * 2)
    write_parquet(folder / "validation_matched-00000-of-00001.parquet", rows)
    write_parquet(folder / "validation_mismatched-00000-of-00001.parquet", rows * 5)
    original = load_original(get_task("mnli"), paths={"mnli": str(folder)})
    # ATTEMPT's MNLI: validation = validation_mismatched, test = validation_matched.
    assert len(original["train"]) == 3
    assert (len(original["validation_mismatched"]), len(original["validation_matched"])) == (5, 1)


def test_paths_template_and_single_file(tmp_path):
    write_jsonl(tmp_path / "rte_train.jsonl", RTE_TRAIN)
    write_jsonl(tmp_path / "rte_validation.jsonl", RTE_VALID)
    by_template = load_original(get_task("rte"), paths={"rte": str(tmp_path / "rte_{split}.jsonl")})
    assert by_template["validation"] == RTE_VALID

    combined = [{**r, "split": "train"} for r in RTE_TRAIN] + [{**r, "split": "validation"} for r in RTE_VALID]
    write_jsonl(tmp_path / "all.jsonl", combined)
    single = load_original(get_task("rte"), paths={"rte": str(tmp_path / "all.jsonl")})
    assert [r["sentence1"] for r in single["validation"]] == [r["sentence1"] for r in RTE_VALID]


def test_labelled_test_split_is_read(tmp_path):
    rows = [{"id": i, "sentence1": "a", "sentence2": "b", "label": i % 2} for i in range(4)]
    for split in ("train", "validation", "test"):
        write_jsonl(tmp_path / "paws" / f"{split}.jsonl", rows)
    assert set(load_original(get_task("paws"), local_dir=str(tmp_path))) == {"train", "validation", "test"}


def test_role_named_file_stands_in_for_the_hub_split_name(tmp_path):
    """QQP tests on the hub's validation split: `validation.jsonl`, or else `test.jsonl`."""
    row = {"question1": "a?", "question2": "b?", "label": 1, "idx": 0}
    write_jsonl(tmp_path / "qqp" / "train.jsonl", [row])
    write_jsonl(tmp_path / "qqp" / "test.jsonl", [row, row])
    assert {k: len(v) for k, v in load_original(get_task("qqp"), local_dir=str(tmp_path)).items()} == {
        "train": 1, "validation": 2,
    }


# ---- errors -------------------------------------------------------------------------------
def test_offline_without_local_files_names_task_hub_and_setting(tmp_path):
    with pytest.raises(DataError) as err:
        load_splits(get_task("rte"), DataSettings(local_dir=str(tmp_path)))
    message = str(err.value)
    for needle in ("'rte'", "nyu-mll/glue", "offline", "data.local_dir", "data.paths.rte"):
        assert needle in message


def test_missing_paths_entry_and_missing_split_file(tmp_path):
    with pytest.raises(DataError, match=r"data.paths.rte=.*no such file or folder"):
        load_original(get_task("rte"), paths={"rte": str(tmp_path / "nope")})
    write_jsonl(tmp_path / "rte" / "train.jsonl", RTE_TRAIN)
    with pytest.raises(DataError, match="no validation split file"):
        load_original(get_task("rte"), local_dir=str(tmp_path))


BAD_ROWS = [
    ({"sentence1": "a", "label": 1}, "sentence2", "missing column"),
    ({"sentence1": "a", "sentence2": "b", "label": 7}, "label", "out of range"),
    ({"sentence1": "   ", "sentence2": "b", "label": 0}, "sentence1", "empty text"),
    ({"sentence1": "a", "sentence2": "b", "label": "yes"}, "label", "expected an integer label"),
]


@pytest.mark.parametrize(("bad", "column", "problem"), BAD_ROWS)
def test_bad_row_is_an_error_naming_file_row_column(tmp_path, bad, column, problem):
    train = write_jsonl(tmp_path / "rte" / "train.jsonl", RTE_TRAIN[:2] + [bad] + RTE_TRAIN[2:])
    write_jsonl(tmp_path / "rte" / "validation.jsonl", RTE_VALID)
    with pytest.raises(DataError) as err:
        load_original(get_task("rte"), local_dir=str(tmp_path))
    message = str(err.value)
    assert str(train) in message and "row 3" in message
    assert f"column '{column}'" in message and problem in message


@pytest.mark.parametrize(("bad", "column", "problem"), BAD_ROWS)
def test_bad_rows_skipped_and_counted_when_asked(tmp_path, caplog, bad, column, problem):
    write_jsonl(tmp_path / "rte" / "train.jsonl", RTE_TRAIN[:2] + [bad, bad] + RTE_TRAIN[2:])
    write_jsonl(tmp_path / "rte" / "validation.jsonl", RTE_VALID)
    with caplog.at_level(logging.WARNING, logger="dtvg_dist.data"):
        original = load_original(get_task("rte"), local_dir=str(tmp_path), on_bad_row="skip")
    assert original["train"] == RTE_TRAIN
    assert "skipped 2 bad row(s) in train" in caplog.text and column in caplog.text


def test_bad_csv_row_and_invalid_json_line(tmp_path):
    rows = [{k: str(v) for k, v in r.items()} for r in RTE_VALID]
    rows[4]["label"] = "5"
    valid = write_csv(tmp_path / "rte" / "validation.csv", rows)
    write_jsonl(tmp_path / "rte" / "train.jsonl", RTE_TRAIN)
    with pytest.raises(DataError, match=rf"{valid}: row 5: column 'label': label 5 out of range 0..1"):
        load_original(get_task("rte"), local_dir=str(tmp_path))

    train = tmp_path / "rte" / "train.jsonl"
    train.write_text(json.dumps(RTE_TRAIN[0]) + "\n{not json\n", encoding="utf-8")
    write_jsonl(tmp_path / "rte" / "validation.jsonl", RTE_VALID)
    (tmp_path / "rte" / "validation.csv").unlink()
    with pytest.raises(DataError, match=rf"{train}: row 2: .*invalid JSON"):
        load_original(get_task("rte"), local_dir=str(tmp_path))


def test_choice_label_out_of_range(tmp_path):
    row = {"sentence1": "a", "sentence2": "b", "gold_label": "contradiction"}
    write_jsonl(tmp_path / "scitail" / "train.jsonl", [row])
    write_jsonl(tmp_path / "scitail" / "validation.jsonl", [{**row, "gold_label": "neutral"}])
    with pytest.raises(DataError, match="column 'gold_label': label 'contradiction' out of range"):
        load_original(get_task("scitail"), local_dir=str(tmp_path))


def test_qa_answers_must_be_non_empty(tmp_path):
    good = {"context": "c", "question": "q", "answers": ["a"]}
    write_jsonl(tmp_path / "nq" / "train.jsonl", [good, {**good, "answers": []}])
    write_jsonl(tmp_path / "nq" / "validation.jsonl", [good])
    with pytest.raises(DataError, match="row 2: column 'answers': expected a non-empty list"):
        load_original(get_task("nq"), local_dir=str(tmp_path))


# ---- the hub path, with huggingface_hub.snapshot_download replaced by a local folder -----
def test_hub_path_requests_only_the_splits_a_task_reads(fake_hub):
    calls = fake_hub
    original = load_original(get_task("mnli"))
    (repo, revision, patterns), = calls
    assert (repo, revision) == ("nyu-mll/glue", "main")
    hub_splits = ("train", "validation_matched", "validation_mismatched", "test_matched", "test_mismatched")
    assert {s for s in hub_splits if f"mnli/{s}/*.parquet" in patterns} == {
        "train", "validation_matched", "validation_mismatched",
    }
    assert all(p.startswith("mnli/") for p in patterns)
    assert original["validation_matched"][-1]["premise"] == "PROBE matched premise."


def test_hub_failure_says_what_to_do(monkeypatch):
    import huggingface_hub

    def failing(*args, **kwargs):
        raise ConnectionError("name resolution failed")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", failing)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE")
    with pytest.raises(DataError) as err:
        load_original(get_task("cb"))
    message = str(err.value)
    for needle in ("'cb'", "aps/super_glue", "refs/convert/parquet", "name resolution failed",
                   "python -m dtvg_dist.dataset download", "data.paths.cb"):
        assert needle in message


def test_hub_snapshot_without_the_split_files_names_the_patterns(fake_hub, monkeypatch):
    from dtvg_dist.data import hub

    task = dataclasses.replace(get_task("rte"), hub_dir="no_such_config")
    with pytest.raises(DataError, match=r"'rte'.*no Parquet files for split\(s\) \['train', 'validation'\].*"
                                       r"no_such_config/train/\*\.parquet"):
        hub.fetch(task)
