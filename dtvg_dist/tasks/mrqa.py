"""MRQA 2019 (hub `lucadiliello/*`, the copies DePT loads): SQuAD (source), NQ,
HotpotQA, SearchQA, NewsQA.

As in ATTEMPT/DePT, question, context and answers get T5's punctuation
padding; the references are padded the same way so EM/F1 compare like with like.
"""

from __future__ import annotations

from dtvg_dist.tasks.base import Task, pad_punctuation
from dtvg_dist.tasks.schema import Column

COLUMNS = (Column("context"), Column("question"), Column("answers", "list"))


def _source(ex: dict) -> list[tuple[str, str]]:
    return [("question", pad_punctuation(ex["question"])), ("context", pad_punctuation(ex["context"]))]


def _target(ex: dict) -> str:
    return pad_punctuation(ex["answers"][0])


def _reference(ex: dict) -> list[str]:
    return [pad_punctuation(a) for a in ex["answers"]]


def _mrqa(name: str, hub_id: str, **kw) -> Task:
    return Task(
        name=name, hub_id=hub_id, benchmark="mrqa", kind="qa", columns=COLUMNS,
        source_fn=_source, target_fn=_target, reference_fn=_reference,
        max_source_length=512, **kw,
    )


MRQA_TASKS: tuple[Task, ...] = (
    # Table 6 underlines both F1 and EM for SQuAD: its primary score is their mean.
    _mrqa("squad", "lucadiliello/squad", is_source=True, metrics=("f1", "em", "f1_em"), primary_metric="f1_em"),
    _mrqa("nq", "lucadiliello/naturalquestionsshortqa", metrics=("f1", "em"), primary_metric="f1"),
    _mrqa("hotpotqa", "lucadiliello/hotpotqa", metrics=("f1", "em"), primary_metric="f1"),
    _mrqa("searchqa", "lucadiliello/searchqa", metrics=("f1", "em"), primary_metric="f1"),
    _mrqa("newsqa", "lucadiliello/newsqa", metrics=("f1", "em"), primary_metric="f1"),
)
