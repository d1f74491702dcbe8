"""SuperGLUE (hub `aps/super_glue`): ReCoRD (source), MultiRC, BoolQ, WiC, WSC, CB.

Formatting follows ATTEMPT, which follows T5's preprocessors (ReCoRD
highlights, MultiRC markup, WSC span marks).
"""

from __future__ import annotations

import re

from dtvg_dist.tasks.base import GROUP_SEP, Task, remove_markup
from dtvg_dist.tasks.schema import Column

HUB = "aps/super_glue"
BINARY = ("0", "1")


def _record_passage(passage: str) -> str:
    passage = re.sub(r"(\.|\?|\!|\"|\')\n@highlight\n", r"\1 ", passage)
    return re.sub(r"\n@highlight\n", ". ", passage)


def _record_source(ex: dict) -> list[tuple[str, str]]:
    return [
        ("query", ex["query"]),
        ("entities", ", ".join(ex["entities"])),
        ("passage", _record_passage(ex["passage"])),
    ]


def _multirc_source(ex: dict) -> list[tuple[str, str]]:
    return [
        ("question", remove_markup(ex["question"])),
        ("answer", remove_markup(ex["answer"])),
        ("paragraph", remove_markup(ex["paragraph"])),
    ]


def _multirc_reference(ex: dict) -> str:
    # EM is per question, so the reference carries the question id.
    idx = ex["idx"]
    return f"{int(ex['label'])}{GROUP_SEP}{idx['paragraph']}-{idx['question']}"


def _mark_span(text: str, span: str, word_index: int, mark: str) -> str:
    pattern = rf"^((?:\S+\s){{{word_index}}})({re.escape(span)})"
    return re.sub(pattern, lambda m: f"{m.group(1)}{mark} {m.group(2)} {mark}", text, count=1)


def _wsc_source(ex: dict) -> list[tuple[str, str]]:
    """T5's WSC marking: `* noun *` and `# pronoun #` around the two spans."""
    i1, i2 = int(ex["span1_index"]), int(ex["span2_index"])
    text = _mark_span(ex["text"], ex["span1_text"], i1, "*")
    # The first mark added two words before the pronoun when the noun comes first.
    text = _mark_span(text, ex["span2_text"], i2 + 2 * int(i1 < i2), "#")
    return [("text", text)]


SUPERGLUE_TASKS: tuple[Task, ...] = (
    Task(
        name="record", hub_id=HUB, hub_config="record", benchmark="superglue", kind="qa",
        is_source=True, source_fn=_record_source,
        columns=(Column("passage"), Column("query"), Column("entities", "list"), Column("answers", "list")),
        metrics=("f1", "em"), primary_metric="f1",
    ),
    Task(
        name="multirc", hub_id=HUB, hub_config="multirc", benchmark="superglue",
        source_fn=_multirc_source, reference_fn=_multirc_reference, label_words=BINARY,
        columns=(
            Column("paragraph"), Column("question"), Column("answer"),
            Column("idx", "json"), Column("label", "label"),
        ),
        metrics=("f1a", "em"), primary_metric="f1a", max_source_length=348,
    ),
    Task(
        name="boolq", hub_id=HUB, hub_config="boolq", benchmark="superglue",
        fields=(("question", "question"), ("passage", "passage")), label_words=BINARY,
    ),
    Task(
        name="wic", hub_id=HUB, hub_config="wic", benchmark="superglue",
        fields=(("sentence1", "sentence1"), ("sentence2", "sentence2"), ("word", "word")),
        label_words=BINARY,
    ),
    Task(
        name="wsc", hub_id=HUB, hub_config="wsc.fixed", benchmark="superglue",
        source_fn=_wsc_source, label_words=BINARY,
        columns=(
            Column("text"), Column("span1_text"), Column("span2_text"),
            Column("span1_index", "int"), Column("span2_index", "int"), Column("label", "label"),
        ),
    ),
    # CB labels: 0 entailment, 1 contradiction, 2 neutral.
    Task(
        name="cb", hub_id=HUB, hub_config="cb", benchmark="superglue",
        fields=(("premise", "premise"), ("hypothesis", "hypothesis")),
        label_words=("0", "1", "2"), metrics=("accuracy", "f1_macro"),
    ),
)
