"""predict: a finished run's prompt on new rows gives the predictions that the
evaluation gives on the same rows, from any input format, with or without the
answer column; bad rows are named or counted; two processes write the same
ordered file as one."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from accelerate import Accelerator
from cli_runs import REPO, jsonl, results
from trained_prompts import rebuilt_prompt, run_backbone, run_config, run_data

from dtvg_dist.model.prompt import PromptedModel
from dtvg_dist.predict import main
from dtvg_dist.tasks import get_task
from dtvg_dist.training.evaluation import evaluate, rank_scores

TARGET = "syn_target"


@pytest.fixture(autouse=True)
def one_thread():
    """The runs trained and evaluated with one thread: greedy decoding here does the same arithmetic."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _test_rows(run_dir: Path) -> list[dict]:
    """The run's test rows, exactly as its evaluation read them."""
    return run_data(run_dir).prepared().splits["test"]


def _evaluation(run_dir: Path, rows: list[dict], rank: bool = False) -> tuple[dict, list[str], object]:
    """The evaluation's (metrics, predictions) on the first len(rows) test
    examples as training tokenized them (the tokenized-split cache, not the
    rows re-encoded: predict's encoding is checked against training's), with
    the prompt module rebuilt from the bank and the best checkpoint (not the
    run's soft_prompt)."""
    cfg = run_config(run_dir)
    backbone = run_backbone(run_dir)
    task = get_task(TARGET)
    model = PromptedModel(backbone, rebuilt_prompt(run_dir)).eval()
    data = run_data(run_dir, backbone)
    features = list(data.splits()["test"])[: len(rows)]
    assert [f["reference"] for f in features] == [task.reference(r) for r in rows]
    metrics, predictions = evaluate(
        Accelerator(cpu=True), model, task, features, backbone.tokenizer, backbone.family,
        cfg.eval.batch_size, cfg.eval.max_new_tokens, rank_classification=rank,
    )
    return metrics, predictions, (model, features, backbone)


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _predict(run_dir: Path, source: Path, out: Path, *extra: str) -> list[dict]:
    assert main([str(run_dir), "--input", str(source), "--output", str(out), *extra]) == 0
    return jsonl(out)


@pytest.mark.parametrize("recipe", ["tiny-t5", "tiny-llama"])
def test_predictions_equal_the_evaluation_on_the_test_rows(tiny_runs, recipe, tmp_path):
    _predictions_equal_the_evaluation(tiny_runs[recipe], tmp_path)


@pytest.mark.slow
def test_real_model_predictions_equal_the_evaluation(smollm2_run, tmp_path):
    """The same on SmolLM2-135M (tests/real_model.py): a real tokenizer's ids
    and the KV-cached generation of a real model through both paths."""
    _predictions_equal_the_evaluation(smollm2_run, tmp_path)


def _predictions_equal_the_evaluation(run: Path, tmp_path: Path) -> None:
    rows = _test_rows(run)
    got = _predict(run, _write_jsonl(tmp_path / "test.jsonl", rows), tmp_path / "out.jsonl")
    metrics, expected, _ = _evaluation(run, rows)
    # The rebuilt evaluation is the run's own: it scores what results.json says.
    test = results(run)["test"]
    assert {k: metrics[k] for k in test} == test
    assert [p["row"] for p in got] == list(range(1, len(rows) + 1))
    assert [p["prediction"] for p in got] == expected
    words = get_task(TARGET).label_words
    for p in got:
        assert p["label"] == (words.index(p["prediction"]) if p["prediction"] in words else None)
    accuracy = 100 * sum(p["label"] == r["label"] for p, r in zip(got, rows, strict=True)) / len(rows)
    assert accuracy == pytest.approx(test["accuracy"])


def test_stage1_prompt_from_csv_and_parquet_without_labels(tiny_runs, tmp_path):
    """A PT run (stage 1), rows without the answer column, as CSV and as Parquet."""
    run = tiny_runs["tiny-llama"] / "stage1" / TARGET
    rows = _test_rows(run)
    with open(tmp_path / "rows.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["sentence"])
        writer.writeheader()
        writer.writerows({"sentence": r["sentence"]} for r in rows)
    pq.write_table(pa.Table.from_pylist([{"sentence": r["sentence"]} for r in rows]), tmp_path / "rows.parquet")
    from_csv = _predict(run, tmp_path / "rows.csv", tmp_path / "csv.jsonl")
    from_parquet = _predict(run, tmp_path / "rows.parquet", tmp_path / "parquet.jsonl")
    _, expected, _ = _evaluation(run, rows)
    assert [p["prediction"] for p in from_csv] == expected
    assert from_parquet == from_csv


def test_rank_classification_scores(tiny_runs, tmp_path):
    run = tiny_runs["tiny-t5"]
    rows = _test_rows(run)[:6]
    got = _predict(run, _write_jsonl(tmp_path / "rows.jsonl", rows), tmp_path / "out.jsonl",
                   "eval.rank_classification=true", "--scores", "eval.batch_size=4")
    _, expected, (model, features, backbone) = _evaluation(run, rows, rank=True)
    words = list(get_task(TARGET).label_words)
    assert [p["prediction"] for p in got] == expected
    with torch.no_grad():
        scores = rank_scores(model, features, words, backbone.tokenizer, backbone.family,
                             backbone.tokenizer.pad_token_id, torch.device("cpu"))
    for p, row_scores in zip(got, scores.tolist(), strict=True):
        assert list(p["scores"]) == words
        assert list(p["scores"].values()) == pytest.approx(row_scores, abs=1e-5)
        assert p["prediction"] == max(words, key=p["scores"].__getitem__)
        assert p["label"] == words.index(p["prediction"])


def test_bad_rows_are_named_or_skipped(tiny_runs, tmp_path, capsys):
    run = tiny_runs["tiny-t5"]
    source = tmp_path / "rows.jsonl"
    source.write_text(
        '{"sentence": "a good day"}\n'
        '{"label": 1}\n'  # row 2: no input column
        "{oops\n"  # row 3: not JSON
        '{"sentence": "   "}\n'  # row 4: empty text
        '{"sentence": "a bad day", "label": 7}\n'  # row 5: label out of range
        '{"sentence": "so sad", "label": 1}\n'
    )
    assert main([str(run), "--input", str(source)]) == 2
    err = capsys.readouterr().err
    assert f"{source}: row 2: column 'sentence': missing column" in err and "--on-bad-row skip" in err

    got = _predict(run, source, tmp_path / "out.jsonl", "--on-bad-row", "skip")
    assert [p["row"] for p in got] == [1, 6]
    assert "4 bad row(s) skipped" in capsys.readouterr().out

    assert main([str(run), "--input", str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl: no such file" in capsys.readouterr().err
    assert main([str(run), "--input", str(source), "eval.batch_sise=2"]) == 2
    assert "eval.batch_size" in capsys.readouterr().err


@pytest.mark.distributed
def test_two_processes_write_one_ordered_file(tiny_runs, tmp_path):
    """15 rows in batches of 4 over 2 ranks (shards of 8 and 7): the gathered file
    equals the one-process file byte for byte."""
    run = tiny_runs["tiny-llama"]
    source = _write_jsonl(tmp_path / "rows.jsonl", _test_rows(run)[:15])
    _predict(run, source, tmp_path / "one.jsonl", "eval.batch_size=4")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(REPO / "launch_configs" / "cpu_ddp_2proc.yaml"),
        "--main_process_port", str(port),
        "-m", "dtvg_dist.predict", str(run), "--input", str(source),
        "--output", str(tmp_path / "two.jsonl"), "eval.batch_size=4",
    ]
    env = {
        **os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "2 process(es)" in proc.stderr
    assert (tmp_path / "two.jsonl").read_text() == (tmp_path / "one.jsonl").read_text()
