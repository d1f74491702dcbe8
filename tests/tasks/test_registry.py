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


def test_primary_metrics_follow_table_6():
    primary = {name: get_task(name).primary_metric for name in TASKS}
    assert primary["cola"] == "matthews"
    assert primary["stsb"] == "pearson_spearman"
    assert primary["qqp"] == primary["mrpc"] == "accuracy_f1"
    assert primary["multirc"] == "f1a"
    assert all(primary[n] == "f1" for n in ("record", "nq", "hotpotqa", "searchqa", "newsqa"))
    assert primary["squad"] == "f1_em"
    assert all(primary[n] == "bleu" for n in ("e2e_nlg", "common_gen", "web_nlg"))
    assert all(primary[n] == "accuracy" for n in ("mnli", "rte", "boolq", "wsc", "winogrande", "paws"))
    assert set(get_task("e2e_nlg").metrics) == {"bleu", "rouge1", "rouge2", "rougeL"}
    assert set(get_task("newsqa").metrics) == {"f1", "em"}


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
