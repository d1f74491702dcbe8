"""The registry: names, per-task settings from the paper, user tasks."""

from __future__ import annotations

import pytest

from dtvg_dist.tasks import SOURCE_TASKS, TASKS, Column, Task, get_task, register_task

PAPER_TASKS = [
    "mnli", "qqp", "qnli", "sst2", "stsb", "mrpc", "rte", "cola",
    "record", "squad",
    "multirc", "boolq", "wic", "wsc", "cb",
    "nq", "hotpotqa", "searchqa", "newsqa",
    "winogrande", "yelp_polarity", "scitail", "paws",
    "e2e_nlg", "common_gen", "web_nlg",
]


def test_all_paper_tasks_registered():
    assert sorted(TASKS) == sorted(PAPER_TASKS)
    assert len(TASKS) == 26 and "rte" in TASKS and TASKS[0] == "mnli"
    assert SOURCE_TASKS == ("mnli", "qnli", "qqp", "sst2", "record", "squad")
    assert {n for n in TASKS if get_task(n).is_source} == set(SOURCE_TASKS)


def test_lengths_and_caps_follow_the_paper():
    for name in TASKS:
        task = get_task(name)
        expected = {"multirc": 348, "squad": 512, "nq": 512, "hotpotqa": 512, "searchqa": 512, "newsqa": 512}
        if task.benchmark == "gem":
            assert (task.max_source_length, task.max_target_length) == (128, 128)
        else:
            assert task.max_source_length == expected.get(name, 256), name
        assert task.max_train_examples == (100_000 if name == "yelp_polarity" else None)


def test_primary_metrics_are_what_the_tables_print():
    """Table 6's underlines (QA) and the metric behind each printed number:
    DePT's released test_results.json (Table 2's DePT row) show MRPC, QQP and
    CB as accuracy and STS-B as Pearson; Table 8's MRPC 68.1 is an accuracy."""
    primary = {name: get_task(name).primary_metric for name in TASKS}
    assert primary["cola"] == "matthews"
    assert primary["stsb"] == "pearson"
    assert primary["qqp"] == primary["mrpc"] == primary["cb"] == "accuracy"
    assert primary["multirc"] == "f1a"
    assert all(primary[n] == "f1" for n in ("record", "nq", "hotpotqa", "searchqa", "newsqa"))
    assert primary["squad"] == "f1_em"
    assert all(primary[n] == "bleu_dtvg" for n in ("e2e_nlg", "common_gen", "web_nlg"))
    assert all(primary[n] == "accuracy" for n in ("mnli", "rte", "boolq", "wsc", "winogrande", "paws"))
    # The others are still computed (and logged to metrics.jsonl).
    assert set(get_task("mrpc").metrics) == set(get_task("qqp").metrics) == {"accuracy", "f1"}
    assert set(get_task("stsb").metrics) == {"pearson", "spearman"}
    assert set(get_task("e2e_nlg").metrics) == {"bleu_dtvg", "bleu", "rouge1", "rouge2", "rougeL",
                                                "rouge1_dtvg", "rouge2_dtvg", "rougeL_dtvg", "meteor_dtvg"}
    assert set(get_task("newsqa").metrics) == {"f1", "em"}


def test_selection_by_primary_or_by_the_mean_of_the_metrics():
    """select_by=mean is the released DTVG code's average_metric: the plain mean of
    the task's metrics (composites such as f1_em are not counted twice)."""
    mrpc, squad, e2e = get_task("mrpc"), get_task("squad"), get_task("e2e_nlg")
    scores = {"accuracy": 70.0, "f1": 80.0, "invalid": 3}
    assert mrpc.selection_score(scores) == 70.0
    assert mrpc.selection_score(scores, "mean") == pytest.approx(75.0)
    qa = {"f1": 60.0, "em": 50.0, "f1_em": 55.0}
    assert squad.selection_score(qa) == 55.0 and squad.selection_score(qa, "mean") == pytest.approx(55.0)
    # the released code's mean: its ROUGE-1/2/L, BLEU and METEOR (not rouge-score's, not sacrebleu)
    gen = {"bleu_dtvg": 30.0, "bleu": 99.0, "rouge1": 99.0, "rouge2": 99.0, "rougeL": 99.0,
           "rouge1_dtvg": 60.0, "rouge2_dtvg": 40.0, "rougeL_dtvg": 50.0, "meteor_dtvg": 20.0}
    assert e2e.selection_score(gen, "mean") == pytest.approx((30 + 60 + 40 + 50 + 20) / 5)
    del gen["meteor_dtvg"]  # no WordNet: the mean of the other four
    assert e2e.selection_score(gen, "mean") == pytest.approx((30 + 60 + 40 + 50) / 4)
    with pytest.raises(ValueError, match="select_by must be one of"):
        mrpc.selection_score(scores, "max")


def test_split_rules_follow_attempt_tasks_py():
    """ATTEMPT's attempt/data/tasks.py: small_datasets_without_all_splits halve the
    hub validation split, large_data_without_all_splits hold out 1,000 training
    rows, MNLI and PAWS keep their split_to_data_split; GEM follows the paper (C.6)."""
    rule = {name: get_task(name).split_rule for name in TASKS}
    halve = {"cola", "rte", "cb", "multirc", "wic", "wsc", "mrpc", "stsb", "boolq", "scitail"}
    hold = {"qqp", "qnli", "record", "sst2", "squad", "yelp_polarity", "winogrande", "newsqa", "searchqa",
            "nq", "hotpotqa"}
    hub = {"mnli", "paws", "e2e_nlg", "common_gen", "web_nlg"}
    assert {n for n, r in rule.items() if r == "halve"} == halve
    assert {n for n, r in rule.items() if r == "hold_out"} == hold
    assert {n for n, r in rule.items() if r == "hub"} == hub
    assert get_task("mnli").hub_splits() == {
        "train": "train", "validation": "validation_mismatched", "test": "validation_matched"}
    assert get_task("yelp_polarity").hub_splits() == {"train": "train", "test": "test"}
    assert get_task("web_nlg").hub_splits()["test"] == "validation"


def test_script_repositories_are_read_from_their_parquet_conversion():
    converted = {name for name in TASKS if get_task(name).hub_revision == "refs/convert/parquet"}
    assert converted == {"record", "multirc", "boolq", "wic", "wsc", "cb", "e2e_nlg", "common_gen", "web_nlg"}
    assert get_task("squad").hub_id == "rajpurkar/squad" and get_task("squad").hub_folder == "plain_text"
    assert get_task("wsc").hub_folder == "wsc.fixed" and get_task("e2e_nlg").hub_folder == "default"


def test_label_words_and_classification_flag():
    assert get_task("mnli").label_words == ("0", "1", "2")
    assert get_task("rte").is_classification
    for name in ("stsb", "squad", "record", "e2e_nlg"):
        assert get_task(name).label_words is None and not get_task(name).is_classification


def test_get_task_is_case_insensitive_and_suggests():
    assert get_task("RTE") is get_task("rte")
    with pytest.raises(ValueError, match="unknown task 'rtee'; did you mean 'rte'"):
        get_task("rtee")


def test_register_user_task(clean_registry):
    task = Task(
        name="my_nli", hub_id="me/my_nli",
        fields=(("premise", "p"), ("hypothesis", "h")),
        label_words=("yes", "no"),
    )
    register_task(task)
    assert "my_nli" in TASKS and get_task("my_nli") is task
    assert task.format({"p": "A", "h": "B", "label": 1}) == ("my_nli premise: A hypothesis: B", "no")
    assert task.columns == (Column("p"), Column("h"), Column("label", "label"))
    with pytest.raises(ValueError, match="already registered; pass overwrite=True"):
        register_task(task)
    replacement = Task(name="my_nli", hub_id="me/other", fields=(("x", "x"),), label_words=("a", "b"))
    assert register_task(replacement, overwrite=True) is get_task("my_nli")
    with pytest.raises(TypeError):
        register_task("rte")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "ranking"}, "kind must be one of"),
        ({"label_words": None}, "needs at least two label_words"),
        ({"label_words": ("a", "a")}, "must be distinct"),
        ({"metrics": ("bleu",), "primary_metric": "bleu"}, "'bleu' is not one of"),
        ({"primary_metric": "f1"}, "primary_metric 'f1' is not in metrics"),
        ({"fields": ()}, "give fields"),
        ({"hub_id": ""}, "give a hub_id"),
        ({"name": "My Task"}, "lower case"),
        ({"label_values": ("x",)}, "label_values must match"),
        ({"kind": "qa", "metrics": ("f1",), "primary_metric": "f1"}, "only for classification"),
    ],
)
def test_task_definition_errors(kwargs, message):
    base = {"name": "t", "hub_id": "x/y", "fields": (("a", "a"),), "label_words": ("0", "1")}
    with pytest.raises(ValueError, match=message):
        Task(**{**base, **kwargs})


def test_default_target_length_by_kind():
    assert get_task("rte").max_target_length == 8
    assert get_task("squad").max_target_length == 128
