"""SuperGLUE (hub `aps/super_glue`): ReCoRD (source), MultiRC, BoolQ, WiC, WSC, CB.

Formatting follows ATTEMPT, which follows T5's preprocessors (ReCoRD
highlights, MultiRC markup, WSC span marks).

Hub files: `aps/super_glue` is a loading-script repository, which
`datasets` >= 4 does not run (and 3.x only with trust_remote_code, never
turned on here). The hub's Parquet converter keeps a copy on the revision
`refs/convert/parquet`: `<config>/<split>/NNNN.parquet`, formerly
`<config>/super_glue-<split>.parquet` (commit listings
https://huggingface.co/datasets/aps/super_glue/commit/d870c6b3e4c7d4fd11daaa5df50565e76af8868c
and the converter's rename to `<config>/<split>/0000.parquet`, e.g.
https://huggingface.co/datasets/severo/glue/commit/114b31b9b2be072fb8f5d4f3742ad619616dea36);
the loader reads either layout.

Splits follow ATTEMPT's attempt/data/tasks.py: ReCoRD is in
`large_data_without_all_splits` (1,000 training rows held out; test =
`split_to_data_split["test"]` = the hub validation split); MultiRC, BoolQ,
WiC, WSC and CB are in `small_datasets_without_all_splits` (hub validation
halved) -- MultiRC too, although it has 27k training rows. DePT's released
test_results.json are consistent with halves (CB 92.857 = 26/28, WSC 67.308 =
35/52); RTE's (dtvg_dist/tasks/glue.py) shows it.
"""

from __future__ import annotations

import re

from dtvg_dist.tasks.base import GROUP_SEP, Task, remove_markup
from dtvg_dist.tasks.schema import Column

HUB = "aps/super_glue"
# Parquet copy of the script repository (see the module docstring).
CONVERTED = "refs/convert/parquet"
BINARY = ("0", "1")
RECORD_TARGET = "_target_answer"  # set by ReCoRD's expansion; not a hub column
HALVE = {"split_rule": "halve", "hub_revision": CONVERTED}


def _record_passage(passage: str) -> str:
    passage = re.sub(r"(\.|\?|\!|\"|\')\n@highlight\n", r"\1 ", passage)
    return re.sub(r"\n@highlight\n", ". ", passage)


def _record_source(ex: dict) -> list[tuple[str, str]]:
    return [
        ("query", ex["query"]),
        ("entities", ", ".join(ex["entities"])),
        ("passage", _record_passage(ex["passage"])),
    ]


def _record_expand(ex: dict) -> list[dict]:
    """One training example per gold answer, as ATTEMPT's SuperGLUERecord
    preprocessor does ("duplicates the samples based on number of answers",
    attempt/data/tasks.py; T5's `record` preprocessor likewise). ATTEMPT maps
    every split this way, so validation and test rows with several answers
    are scored once per answer, each against all of them."""
    return [{**ex, RECORD_TARGET: answer} for answer in ex["answers"]]


def _record_target(ex: dict) -> str:
    return str(ex.get(RECORD_TARGET, ex["answers"][0]))


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
    # Table 6 underlines F1 for ReCoRD; ATTEMPT scores it with the SQuAD metric.
    Task(
        name="record", hub_id=HUB, hub_config="record", hub_revision=CONVERTED,
        benchmark="superglue", kind="qa", is_source=True,
        source_fn=_record_source, target_fn=_record_target, expand_fn=_record_expand,
        columns=(Column("passage"), Column("query"), Column("entities", "list"), Column("answers", "list")),
        metrics=("f1", "em"), primary_metric="f1",
        split_rule="hold_out", validation_split=None, test_split="validation",
        # AkariAsai/ATTEMPT attempt/data/postprocessors.py, class Record:
        # labels = [info["answers"] for info in data_info]
        release_all_answers=True,
    ),
    # Table 6 underlines F1 (F1 over all answer options, "f1a"); DePT's MultiRC
    # test_f1 74.30 is Table 2's DePT 74.3.
    Task(
        name="multirc", hub_id=HUB, hub_config="multirc", benchmark="superglue",
        source_fn=_multirc_source, reference_fn=_multirc_reference, label_words=BINARY,
        columns=(
            Column("paragraph"), Column("question"), Column("answer"),
            Column("idx", "json"), Column("label", "label"),
        ),
        metrics=("f1a", "em"), primary_metric="f1a", max_source_length=348, **HALVE,
    ),
    Task(
        name="boolq", hub_id=HUB, hub_config="boolq", benchmark="superglue",
        fields=(("question", "question"), ("passage", "passage")), label_words=BINARY, **HALVE,
    ),
    Task(
        name="wic", hub_id=HUB, hub_config="wic", benchmark="superglue",
        fields=(("sentence1", "sentence1"), ("sentence2", "sentence2"), ("word", "word")),
        label_words=BINARY, **HALVE,
    ),
    Task(
        name="wsc", hub_id=HUB, hub_config="wsc.fixed", benchmark="superglue",
        source_fn=_wsc_source, label_words=BINARY,
        columns=(
            Column("text"), Column("span1_text"), Column("span2_text"),
            Column("span1_index", "int"), Column("span2_index", "int"), Column("label", "label"),
        ),
        **HALVE,
    ),
    # CB labels: 0 entailment, 1 contradiction, 2 neutral. Tables print accuracy:
    # DePT's CB test_accuracy 92.86 (f1_multiclass 89.50) is Table 2's DePT 92.9.
    Task(
        name="cb", hub_id=HUB, hub_config="cb", benchmark="superglue",
        fields=(("premise", "premise"), ("hypothesis", "hypothesis")),
        label_words=("0", "1", "2"), metrics=("accuracy", "f1_macro"), **HALVE,
    ),
)
