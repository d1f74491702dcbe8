"""Command line: python -m dtvg_dist.predict RUN_DIR --input FILE [--output FILE] [key=value ...]

Runs a finished run's trained prompt (any method: its `soft_prompt`) on new
rows and writes one JSON line per row, in input order:
``{"row": 3, "prediction": "1", "label": 1}`` (classification: the label word
and the label it stands for, null when the output is no label word;
regression: the number; QA and generation: the text only). With
``--scores`` each line also has ``"scores"``: every label word's summed
log-probability (EOS included) after the row's input, as rank classification
computes it. ``eval.rank_classification=true`` predicts the most likely label
word instead of generating freely, as in training's evaluation.

Input files are .jsonl, .json, .csv or .parquet with the task's columns (the
hub's names, docs/data.md "Tasks"); the answer column may be left out.
Every row is checked with the task's column schema; a bad row is an error
naming the file, the row (1-based) and the column, or with
``--on-bad-row skip`` it is dropped and counted.

Under ``accelerate launch`` (data parallel: every process holds the backbone)
the rows are split over the processes and gathered back in order
(`evaluation.predict`); the main process writes the one output file.
`key=value` overrides change the run's recipe, e.g. ``eval.batch_size=8``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from dtvg_dist import cli
from dtvg_dist.data.sources import Unreadable, read_file  # the split-file readers
from dtvg_dist.orchestration.config import RecipeError
from dtvg_dist.orchestration.trained_run import TrainedRun, open_run
from dtvg_dist.tasks import DataError, Task, get_task
from dtvg_dist.tasks.schema import Column, check_row

log = logging.getLogger("dtvg_dist.predict")

BAD_ROW_CHOICES = ("error", "skip")


@dataclass
class InputRows:
    numbers: list[int]  # 1-based row numbers in the file
    rows: list[dict[str, Any]]  # checked rows, answer column filled where absent
    skipped: list[str]  # messages of the rows dropped with on_bad_row=skip


def answer_columns(task: Task) -> set[str]:
    """The columns that hold the answer: not needed to predict."""
    if task.kind == "qa":
        return {"answers"}
    if task.kind == "generation":
        return {"target"}
    return {task.label_column} if task.label_column else set()


def _placeholder(task: Task) -> dict[str, Any]:
    """An answer for rows that have none, so the encoder can tokenise them.
    Only the training fields and the reference use it; the prompt ids that
    prediction reads come from the input columns alone."""
    if task.kind == "qa":
        return {"answers": ["?"]}
    if task.kind == "generation":
        return {"target": "?"}
    if task.kind == "regression":
        return {task.label_column: 0.0}
    return {task.label_column: task.label_values[0] if task.label_values else 0}


def read_rows(task: Task, path: Path, on_bad_row: str = "error") -> InputRows:
    """The file's rows, checked against the task's columns (the answer optional)."""
    if not path.is_file():
        raise DataError(f"--input {path}: no such file")
    answers = answer_columns(task)
    inputs: tuple[Column, ...] = tuple(c for c in task.columns if c.name not in answers)
    out = InputRows([], [], [])
    for n, raw in read_file(path):
        if isinstance(raw, Unreadable):
            row, column, problem = None, "-", str(raw)
        else:
            has_answer = isinstance(raw, dict) and answers <= set(raw)
            columns = task.columns if has_answer else inputs
            row, column, problem = check_row(raw, columns, task.num_labels)
            if row is not None and not has_answer:
                row = {**row, **_placeholder(task)}
        if row is None:
            message = f"{path}: row {n}: column '{column}': {problem}"
            if on_bad_row != "skip":
                raise DataError(f"{message} (task '{task.name}'; pass --on-bad-row skip to drop such rows)")
            out.skipped.append(message)
            continue
        out.numbers.append(n)
        out.rows.append(row)
    if out.skipped:
        log.warning("skipped %d bad row(s) of %s; first: %s", len(out.skipped), path, out.skipped[0])
    if not out.rows:
        raise DataError(f"--input {path}: no usable rows")
    return out


def label_of(task: Task, prediction: str) -> Any:
    """The label a predicted text stands for (raw label value, or the number); None if none."""
    parsed = task.parse_prediction(prediction)
    if parsed is None or task.kind != "classification":
        return parsed
    return task.label_values[parsed] if task.label_values else parsed


def _scores(acc: Any, model: Any, features: list[dict[str, Any]], words: list[str], backbone: Any,
            batch_size: int) -> list[list[float]]:
    """Every label word's log-probability per example, sharded over ranks and gathered in order."""
    from dtvg_dist.data import padding_id
    from dtvg_dist.training.evaluation import gather_objects, rank_scores, shard_indices

    indices = shard_indices(len(features), acc.process_index, acc.num_processes)
    pad_id = padding_id(backbone.tokenizer)
    mine: list[tuple[int, list[float]]] = []
    batches = range(0, len(indices), batch_size)
    for start in tqdm(batches, desc="scores", leave=False, disable=not acc.is_main_process):
        chunk = indices[start : start + batch_size]
        real = [i if i >= 0 else indices[0] for i in chunk]
        with torch.no_grad():
            scores = rank_scores(
                model, [features[i] for i in real], words, backbone.tokenizer, backbone.family,
                pad_id, acc.device,
            ).tolist()
        mine.extend((i, s) for i, s in zip(chunk, scores, strict=True) if i >= 0)
    by_index = dict(gather_objects(acc, mine))
    return [by_index[i] for i in range(len(features))]


def predict_file(
    run: TrainedRun, input_path: Path, output_path: Path, on_bad_row: str = "error",
    scores: bool = False,
) -> dict[str, Any]:
    """Predict every row of `input_path` with `run`'s prompt; the main process
    writes `output_path`. Returns counts (rows, skipped)."""
    from accelerate.utils import DistributedType

    from dtvg_dist.data import DataSettings
    from dtvg_dist.data.module import TaskData
    from dtvg_dist.model.backbone import load_backbone
    from dtvg_dist.model.prompt import PromptedModel
    from dtvg_dist.orchestration.pipeline import backbone_settings, check_tasks
    from dtvg_dist.store.run_files import atomic_write_text
    from dtvg_dist.training.distributed import LaunchError, build_accelerator
    from dtvg_dist.training.evaluation import predict

    cfg = run.cfg
    check_tasks(cfg)
    try:
        task = get_task(run.task)
    except ValueError as err:  # a task registered in code by the training launcher
        raise RecipeError(
            f"{err}. A task registered in code must be registered before predicting: import the "
            "module that registers it and call dtvg_dist.predict.main(argv) from there"
        ) from None
    if scores and not task.is_classification:
        raise RecipeError(f"--scores needs a task with label words; {task.name!r} is {task.kind}")
    rows = read_rows(task, input_path, on_bad_row)
    acc = build_accelerator(cfg.distributed.timeout_s, [], str(run.run_dir))
    if acc.distributed_type == DistributedType.DEEPSPEED:
        raise LaunchError(
            "predict runs data-parallel (every process holds the whole backbone); launch it "
            "without DeepSpeed, e.g. --config_file launch_configs/multi_gpu_ddp.yaml"
        )
    with acc.main_process_first():
        settings = backbone_settings(cfg, run.root)
    backbone = load_backbone(settings, device=acc.device)
    r, d = run.soft_prompt.shape
    if d != backbone.hidden_size:
        raise RecipeError(
            f"{run.run_dir}: the soft prompt is [{r}, {d}] but backbone {backbone.name} has width "
            f"{backbone.hidden_size}"
        )
    model = PromptedModel(backbone, run.prompt_module().to(acc.device)).eval()
    # Training's encoder (one tokenization path): the same ids as the run's own examples.
    settings = DataSettings.coerce(OmegaConf.to_container(cfg.data, resolve=True))
    features = TaskData(task, settings, backbone.tokenizer, backbone.family, seed=cfg.seed).encode(rows.rows)
    words = list(task.label_words) if task.is_classification else None
    rank = bool(cfg.eval.rank_classification) and words is not None
    log.info(
        "predict: %s (task %s, method %s, backbone %s), %d row(s) of %s, batch %d, %d process(es)%s",
        run.run_dir, task.name, run.method, backbone.name, len(features), input_path,
        cfg.eval.batch_size, acc.num_processes, ", rank classification" if rank else "",
    )
    word_scores = _scores(acc, model, features, words, backbone, cfg.eval.batch_size) if scores else None
    if word_scores is not None and rank:  # rank classification is the argmax of these scores
        texts = [words[max(range(len(words)), key=s.__getitem__)] for s in word_scores]
    else:
        texts = predict(
            acc, model, features, backbone.tokenizer, backbone.family, cfg.eval.batch_size,
            cfg.eval.max_new_tokens or task.max_target_length, desc=f"predict {task.name}",
            rank_words=words if rank else None,
        )
    if acc.is_main_process:
        lines = []
        for i, (number, text) in enumerate(zip(rows.numbers, texts, strict=True)):
            item: dict[str, Any] = {"row": number, "prediction": text}
            if task.kind in ("classification", "regression"):
                item["label"] = label_of(task, text)
            if word_scores is not None:
                item["scores"] = dict(zip(words, word_scores[i], strict=True))
            lines.append(json.dumps(item) + "\n")
        output_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(output_path, "".join(lines))
        log.info("wrote %d prediction(s) to %s (%d bad row(s) skipped)", len(lines), output_path,
                 len(rows.skipped))
    acc.end_training()  # waits for every rank, then ends the process group
    return {"rows": len(features), "skipped": len(rows.skipped)}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dtvg_dist.predict",
        description="Predict new rows with a finished run's trained prompt.",
        epilog="key=value overrides change the run's recipe, e.g. eval.batch_size=8 "
        "eval.rank_classification=true eval.max_new_tokens=16",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run's output_dir (or its stage1/<task>)")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    parser.add_argument("--input", required=True, metavar="FILE", help=".jsonl, .json, .csv or .parquet")
    parser.add_argument("--output", metavar="FILE", help="JSON lines (default: FILE.predictions.jsonl)")
    parser.add_argument("--on-bad-row", choices=BAD_ROW_CHOICES, default="error")
    parser.add_argument("--scores", action="store_true", help="add every label word's log-probability")
    return parser


@cli.command
def main(argv: list[str] | None = None) -> int:
    import os

    args = _parser().parse_intermixed_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=logging.INFO if int(os.environ.get("RANK", "0")) == 0 else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
    )
    input_path = Path(args.input).expanduser()
    output = Path(args.output).expanduser() if args.output else input_path.with_name(
        input_path.name + ".predictions.jsonl"
    )
    run = open_run(args.run_dir, args.overrides)
    counts = predict_file(run, input_path, output, args.on_bad_row, args.scores)
    if int(os.environ.get("RANK", "0")) == 0:
        skipped = f", {counts['skipped']} bad row(s) skipped" if counts["skipped"] else ""
        print(f"wrote {counts['rows']} prediction(s) to {output}{skipped}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
