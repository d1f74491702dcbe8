"""MRQA 2019: SQuAD (source; the canonical `rajpurkar/squad`), NQ, HotpotQA,
SearchQA, NewsQA (the `lucadiliello/*` copies DePT loads).

As in ATTEMPT/DePT, question, context and answers get T5's punctuation
padding; the references are padded the same way so EM/F1 compare like with like.

Hub ids: ATTEMPT's `Squad` task loads the canonical SQuAD
(`datasets.load_dataset("squad")`, attempt/data/tasks.py), as does DePT
(src/tasks.py); its hub home is `rajpurkar/squad`, config `plain_text`,
Parquet files `plain_text/{train,validation}-*` and `answers` a struct
`{"text": [...], "answer_start": [...]}` (dataset card,
https://huggingface.co/datasets/rajpurkar/squad/blob/main/README.md). There
is no `lucadiliello/squad`. ATTEMPT maps NQ/HotpotQA/SearchQA/NewsQA to that
same Squad class (loading SQuAD); DePT's src/tasks.py loads
`lucadiliello/naturalquestionsshortqa`, `lucadiliello/hotpotqa`,
`lucadiliello/searchqa` and `lucadiliello/newsqa`, whose `answers` is a
list of strings and whose files are `data/{train,validation}-*.parquet`
(https://huggingface.co/datasets/lucadiliello/hotpotqa/tree/main/data).

Splits: all five are in ATTEMPT's `large_data_without_all_splits` (1,000
training rows held out as validation); the test set is the hub validation
split (DePT's src/tasks.py: `split_to_data_split = {..., "test": "validation"}`
for these five; ATTEMPT's Squad class names a "test" split the hub lacks).
"""

from __future__ import annotations

from dtvg_dist.tasks.base import Task, pad_punctuation
from dtvg_dist.tasks.schema import Column

COLUMNS = (Column("context"), Column("question"), Column("answers", "list"))
# rajpurkar/squad: answers = {"text": [...], "answer_start": [...]} (dataset card).
SQUAD_COLUMNS = (Column("context"), Column("question"), Column("answers", "list", key="text"))
HOLD_OUT = {"split_rule": "hold_out", "validation_split": None, "test_split": "validation"}


def _source(ex: dict) -> list[tuple[str, str]]:
    return [("question", pad_punctuation(ex["question"])), ("context", pad_punctuation(ex["context"]))]


def _answers(ex: dict) -> list[str]:
    answers = ex["answers"]
    return list(answers["text"]) if isinstance(answers, dict) else list(answers)


def _target(ex: dict) -> str:
    return pad_punctuation(_answers(ex)[0])


def _reference(ex: dict) -> list[str]:
    return [pad_punctuation(a) for a in _answers(ex)]


def _mrqa(name: str, hub_id: str, **kw) -> Task:
    kw.setdefault("columns", COLUMNS)
    return Task(
        name=name, hub_id=hub_id, benchmark="mrqa", kind="qa",
        source_fn=_source, target_fn=_target, reference_fn=_reference,
        max_source_length=512, **HOLD_OUT, **kw,
    )


MRQA_TASKS: tuple[Task, ...] = (
    # Table 6 underlines both F1 and EM for SQuAD: its primary score is their mean
    # (also the released DTVG code's average_metric over TASK_TO_METRICS["squad"]).
    _mrqa(
        "squad", "rajpurkar/squad", hub_config="plain_text", columns=SQUAD_COLUMNS, is_source=True,
        metrics=("f1", "em", "f1_em"), primary_metric="f1_em", selection_metrics=("f1", "em"),
    ),
    _mrqa("nq", "lucadiliello/naturalquestionsshortqa", metrics=("f1", "em"), primary_metric="f1"),
    _mrqa("hotpotqa", "lucadiliello/hotpotqa", metrics=("f1", "em"), primary_metric="f1"),
    _mrqa("searchqa", "lucadiliello/searchqa", metrics=("f1", "em"), primary_metric="f1"),
    _mrqa("newsqa", "lucadiliello/newsqa", metrics=("f1", "em"), primary_metric="f1"),
)
