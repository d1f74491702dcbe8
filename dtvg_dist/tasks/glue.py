"""GLUE (hub `nyu-mll/glue`): MNLI, QQP, QNLI, SST-2 (also sources), STS-B, MRPC, RTE, CoLA.

Label words are the label ids as text ("0", "1", ...), as ATTEMPT trains them.
"""

from __future__ import annotations

from dtvg_dist.tasks.base import Task
from dtvg_dist.tasks.schema import Column

HUB = "nyu-mll/glue"
BINARY = ("0", "1")

GLUE_TASKS: tuple[Task, ...] = (
    # MNLI labels: 0 entailment, 1 neutral, 2 contradiction. The matched
    # validation set is the one the split rule turns into the test set.
    Task(
        name="mnli", hub_id=HUB, hub_config="mnli", benchmark="glue", is_source=True,
        fields=(("premise", "premise"), ("hypothesis", "hypothesis")),
        label_words=("0", "1", "2"), validation_split="validation_matched",
    ),
    # QQP has a handful of rows with an empty question; they are real data.
    Task(
        name="qqp", hub_id=HUB, hub_config="qqp", benchmark="glue", is_source=True,
        fields=(("question1", "question1"), ("question2", "question2")),
        columns=(
            Column("question1", allow_empty=True),
            Column("question2", allow_empty=True),
            Column("label", "label"),
        ),
        label_words=BINARY, metrics=("accuracy", "f1", "accuracy_f1"), primary_metric="accuracy_f1",
    ),
    Task(
        name="qnli", hub_id=HUB, hub_config="qnli", benchmark="glue", is_source=True,
        fields=(("question", "question"), ("sentence", "sentence")), label_words=BINARY,
    ),
    Task(
        name="sst2", hub_id=HUB, hub_config="sst2", benchmark="glue", is_source=True,
        fields=(("sentence", "sentence"),), label_words=BINARY,
    ),
    Task(
        name="stsb", hub_id=HUB, hub_config="stsb", benchmark="glue", kind="regression",
        fields=(("sentence1", "sentence1"), ("sentence2", "sentence2")),
        columns=(Column("sentence1"), Column("sentence2"), Column("label", "score", low=0.0, high=5.0)),
        metrics=("pearson", "spearman", "pearson_spearman"), primary_metric="pearson_spearman",
    ),
    Task(
        name="mrpc", hub_id=HUB, hub_config="mrpc", benchmark="glue",
        fields=(("sentence1", "sentence1"), ("sentence2", "sentence2")),
        label_words=BINARY, metrics=("accuracy", "f1", "accuracy_f1"), primary_metric="accuracy_f1",
    ),
    Task(
        name="rte", hub_id=HUB, hub_config="rte", benchmark="glue",
        fields=(("sentence1", "sentence1"), ("sentence2", "sentence2")), label_words=BINARY,
    ),
    Task(
        name="cola", hub_id=HUB, hub_config="cola", benchmark="glue",
        fields=(("sentence", "sentence"),), label_words=BINARY,
        metrics=("matthews",), primary_metric="matthews",
    ),
)
