"""GLUE (hub `nyu-mll/glue`): MNLI, QQP, QNLI, SST-2 (also sources), STS-B, MRPC, RTE, CoLA.

Label words are the label ids as text ("0", "1", ...), as ATTEMPT trains them
(attempt/data/tasks.py: `tgt_texts = [str(example['label'])]`).

Hub files: `nyu-mll/glue` is Parquet on `main`, one folder per config,
`<config>/<split>-00000-of-0000N.parquet` (e.g.
https://huggingface.co/datasets/nyu-mll/glue/tree/0de23925db68e9cf6287d3776a0f67f5267a42eb/mnli_matched).

Splits follow ATTEMPT's attempt/data/tasks.py (`AbstractTask.get`):
`large_data_without_all_splits` (QQP, QNLI, SST-2) hold out 1,000 training
rows as validation and test on `split_to_data_split["test"]`, the hub
validation split; `small_datasets_without_all_splits` (STS-B, MRPC, RTE,
CoLA) halve the hub validation split; MNLI is in neither list and uses its
`split_to_data_split` as is. DePT (same code) scores RTE at test_accuracy
79.137 = 110/139 (checkpoints/rte/test_results.json): the second half of the
277-row validation split; no count out of 277 gives that number.

Primary metrics are what the tables print. Evidence: the DePT row of the
paper's Table 2 (sourced from Shi and Lipani 2024) is DePT's released
checkpoints/*/test_results.json (github.com/ZhengxiangShi/DePT): MRPC 90.7 =
test_accuracy 90.686 (test_f1 93.29), QQP 90.4 = test_accuracy 90.376
(test_f1 87.20), STS-B 90.8 = test_pearson 90.773 (spearman 90.54). Table 8's
MRPC 68.1 +- 0.0 is an all-positive classifier's accuracy on the 204-row test
half (its F1 would be 81). The others stay in metrics.jsonl.
"""

from __future__ import annotations

from dtvg_dist.tasks.base import Task
from dtvg_dist.tasks.schema import Column

HUB = "nyu-mll/glue"
BINARY = ("0", "1")
# ATTEMPT's large_data_without_all_splits: validation = 1,000 training rows,
# test = split_to_data_split["test"] = the hub validation split.
HOLD_OUT = {"split_rule": "hold_out", "validation_split": None, "test_split": "validation"}
# ATTEMPT's small_datasets_without_all_splits: the hub validation split halved.
HALVE = {"split_rule": "halve"}

GLUE_TASKS: tuple[Task, ...] = (
    # MNLI labels: 0 entailment, 1 neutral, 2 contradiction. ATTEMPT's MNLI class:
    # split_to_data_split = {"train": "train", "validation": "validation_mismatched",
    # "test": "validation_matched"}, all 393k training rows kept. DePT's MNLI
    # test_accuracy 84.992 = 8342/9815 rows, the size of validation_matched.
    Task(
        name="mnli", hub_id=HUB, hub_config="mnli", benchmark="glue", is_source=True,
        fields=(("premise", "premise"), ("hypothesis", "hypothesis")),
        label_words=("0", "1", "2"), split_rule="hub",
        validation_split="validation_mismatched", test_split="validation_matched",
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
        label_words=BINARY, metrics=("accuracy", "f1"), primary_metric="accuracy", **HOLD_OUT,
    ),
    Task(
        name="qnli", hub_id=HUB, hub_config="qnli", benchmark="glue", is_source=True,
        fields=(("question", "question"), ("sentence", "sentence")), label_words=BINARY, **HOLD_OUT,
    ),
    Task(
        name="sst2", hub_id=HUB, hub_config="sst2", benchmark="glue", is_source=True,
        fields=(("sentence", "sentence"),), label_words=BINARY, **HOLD_OUT,
    ),
    Task(
        name="stsb", hub_id=HUB, hub_config="stsb", benchmark="glue", kind="regression",
        fields=(("sentence1", "sentence1"), ("sentence2", "sentence2")),
        columns=(Column("sentence1"), Column("sentence2"), Column("label", "score", low=0.0, high=5.0)),
        metrics=("pearson", "spearman"), primary_metric="pearson", **HALVE,
    ),
    Task(
        name="mrpc", hub_id=HUB, hub_config="mrpc", benchmark="glue",
        fields=(("sentence1", "sentence1"), ("sentence2", "sentence2")),
        label_words=BINARY, metrics=("accuracy", "f1"), primary_metric="accuracy", **HALVE,
    ),
    Task(
        name="rte", hub_id=HUB, hub_config="rte", benchmark="glue",
        fields=(("sentence1", "sentence1"), ("sentence2", "sentence2")), label_words=BINARY, **HALVE,
    ),
    Task(
        name="cola", hub_id=HUB, hub_config="cola", benchmark="glue",
        fields=(("sentence", "sentence"),), label_words=BINARY,
        metrics=("matthews",), primary_metric="matthews", **HALVE,
    ),
)
