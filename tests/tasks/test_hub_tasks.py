"""Every paper task, loaded from files laid out as its hub repository is, through
the same code path as a real hub load (huggingface_hub.snapshot_download is the
only thing replaced): split sizes under the protocol, formatted inputs and
targets, label mapping; few-shot disjointness and seeded sampling."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch

from dtvg_dist.data import DataSettings, prepare_splits
from dtvg_dist.tasks import TASKS, get_task

Q = "question"
# task -> ((train, validation, test) sizes under the protocol,
#          source of the fixture's PROBE row, [its target(s)])
EXPECT: dict[str, tuple[tuple[int, int, int], str, list[str]]] = {
    # hub rule: ATTEMPT's MNLI validates on validation_mismatched (3 rows), tests on validation_matched (5).
    "mnli": ((6, 3, 5), "mnli premise: PROBE matched premise. hypothesis: A probe.", ["2"]),
    # hold_out: 1,000 of the 1,008 training rows become validation; test = hub validation (4 rows).
    "qqp": ((8, 1000, 4), "qqp question1: PROBE how do I learn? question2: ", ["1"]),
    "qnli": ((3, 1000, 3), "qnli question: PROBE when? sentence: In 1999.", ["0"]),
    "sst2": ((1, 1000, 2), "sst2 sentence: PROBE a charming journey . ", ["1"]),
    # halve: the 5-row hub validation split -> 2 validation + 3 test.
    "stsb": ((6, 2, 3), "stsb sentence1: PROBE A plane is taking off. sentence2: An air plane is taking off.", ["3.8"]),
    "mrpc": ((6, 2, 3), "mrpc sentence1: PROBE mrpc first. sentence2: Second.", ["0"]),
    "rte": ((6, 2, 3), "rte sentence1: PROBE rte first. sentence2: Second.", ["0"]),
    "cola": ((6, 1, 2), "cola sentence: PROBE Our friends won't buy this.", ["1"]),
    # ReCoRD: hold_out, then one example per gold answer (the probe has two) in every split.
    "record": ((2, 1000, 3), "record query: PROBE @placeholder is a city. entities: Kabul, Paris passage: "
               "Passage 5000. Highlight 5000", ["Kabul", "Paris"]),
    "multirc": ((6, 2, 2), "multirc question: PROBE what? answer: Children paragraph: Sent 1. Sent 2: Done.", ["0"]),
    "boolq": ((6, 2, 2), "boolq question: PROBE is barq's a pepsi product passage: Barq's is owned by Coca-Cola.", ["0"]),
    "wic": ((6, 2, 2), "wic sentence1: PROBE Do you want to come over to my place later? sentence2: A political "
            "system with no place for the less prominent groups. word: place", ["0"]),
    "wsc": ((6, 2, 2), "wsc text: PROBE * Mark * told Pete many lies about # himself #.", ["1"]),
    "cb": ((6, 3, 3), "cb premise: PROBE It was a complex language. hypothesis: the language was peeled down", ["0"]),
    # SQuAD's answers struct; T5 punctuation padding on inputs and answers.
    "squad": ((2, 1000, 2), "squad question: PROBE To whom did the Virgin Mary appear ? context: Context 9000 .",
              ["Saint Bernadette Soubirous"]),
    **{
        name: ((2, 1000, 2), f"{name} question: PROBE {repo} question ? context: [ PAR ] ctx 9000", ["The U . S ."])
        for name, repo in (("nq", "naturalquestionsshortqa"), ("hotpotqa", "hotpotqa"),
                           ("searchqa", "searchqa"), ("newsqa", "newsqa"))
    },
    # answer "1" -> label word "0" (ATTEMPT: str(int(answer) - 1)); both options shown.
    "winogrande": ((2, 1000, 2), "winogrande sentence: PROBE Ian volunteered to eat Dennis's menudo because _ "
                   "liked tripe. option0: Ian option1: Dennis", ["0"]),
    "yelp_polarity": ((3, 1000, 2), "yelp_polarity sentence: PROBE Contrary to other reviews, I have zero complaints.",
                      ["1"]),
    # halve, not the hub test split (7 rows there): ATTEMPT's small-dataset list.
    "scitail": ((6, 2, 2), "scitail premise: PROBE Pluto rotates once on its axis every 6.39 Earth days. "
                "hypothesis: Earth rotates on its axis once times in one day.", ["1"]),
    "paws": ((5, 3, 2), "paws sentence1: PROBE In Paris , in October 1560 , he secretly met the English ambassador . "
             "sentence2: In October 1560 , he secretly met with the English ambassador in Paris .", ["1"]),
    # GEM: selection and report on the GEM validation split (paper C.6).
    "e2e_nlg": ((5, 2, 2), "e2e_nlg meaning_representation: name[PROBE Alimentum], area[city centre]",
                ["Alimentum is in the city centre."]),
    "common_gen": ((5, 1, 1), "common_gen concepts: field, look, PROBE",
                   ["The player stood in the field looking at the batter."]),
    "web_nlg": ((5, 1, 1), "web_nlg triples: PROBE Aarhus | leader | Jacob Bundsgaard && Aarhus | country | Denmark",
                ["The leader of Aarhus, Denmark is Jacob Bundsgaard."]),
}


def key(row: dict) -> str:
    """A row's identity (every fixture row differs in some column)."""
    return json.dumps(row, sort_keys=True, default=str)


def test_every_paper_task_has_a_hub_fixture():
    assert set(EXPECT) == set(TASKS) and len(EXPECT) == 26


@pytest.mark.parametrize("name", sorted(EXPECT))
def test_task_loads_from_its_hub_layout(fake_hub, name):
    task = get_task(name)
    prepared = prepare_splits(task, DataSettings())
    sizes, probe, targets = EXPECT[name]
    assert tuple(len(prepared.splits[s]) for s in ("train", "validation", "test")) == sizes
    # One snapshot of the task's repository, at its revision, for only the splits it reads.
    (repo, revision, patterns), = fake_hub
    assert (repo, revision) == (task.hub_id, task.hub_revision)
    assert all(p.startswith(f"{task.hub_folder}/") for p in patterns)
    assert prepared.source.kind == "hub" and f"{task.hub_id}@{task.hub_revision}" in prepared.source.where
    formatted = [task.format(r) for rows in prepared.splits.values() for r in rows]
    assert sorted({t for s, t in formatted if s == probe}) == sorted(targets)
    if task.kind == "qa":  # references keep every gold answer
        probe_row = next(r for rows in prepared.splits.values() for r in rows if task.format(r)[0] == probe)
        assert len(task.reference(probe_row)) == 2


@pytest.mark.parametrize("name", sorted(EXPECT))
def test_protocol_splits_never_share_a_row(fake_hub, name):
    splits = prepare_splits(get_task(name), DataSettings()).splits
    ids = {s: {key(r) for r in rows} for s, rows in splits.items()}
    assert not ids["train"] & ids["validation"] and not ids["train"] & ids["test"]
    if get_task(name).benchmark == "gem":
        assert ids["validation"] == ids["test"]  # the paper reports the best validation score
    else:
        assert not ids["validation"] & ids["test"]


def test_unused_hub_splits_are_not_fetched(fake_hub):
    """GLUE test splits (label -1) and SciTail's test split exist in the fixtures but are never asked for."""
    for name in ("rte", "scitail", "boolq"):
        prepare_splits(get_task(name), DataSettings())
    for _, _, patterns in fake_hub:
        assert not any("test" in p for p in patterns), patterns


def test_attempt_quirks_flag_reproduces_attempts_winogrande_input(fake_hub):
    task = get_task("winogrande")
    splits = prepare_splits(task, DataSettings(attempt_quirks=True)).splits
    sources = {task.format(r)[0] for rows in splits.values() for r in rows}
    assert ("winogrande sentence: PROBE Ian volunteered to eat Dennis's menudo because _ liked tripe. "
            "option0: Ian option1: Ian") in sources


def test_yelp_cap_takes_the_first_rows_of_the_held_out_permutation(fake_hub):
    """DePT caps Yelp's training rows with select(range(100000)) after the hold-out split."""
    task = get_task("yelp_polarity")
    full = prepare_splits(task, DataSettings()).splits["train"]
    capped = prepare_splits(task, DataSettings(max_train_examples=2)).splits["train"]
    assert capped == full[:2]


# ---- few-shot ---------------------------------------------------------------------------------
FEW_SHOT = ("rte", "mnli", "qqp", "cb", "stsb", "squad")


@pytest.mark.parametrize("how", ["random", "per_class"])
@pytest.mark.parametrize("name", FEW_SHOT)
def test_k_shot_never_draws_a_selection_or_test_row(fake_hub, name, how):
    task = get_task(name)
    k = 2 if name == "squad" else 4
    full = prepare_splits(task, DataSettings())
    few = prepare_splits(task, DataSettings(k_shot=k, k_shot_sampling=how), seed=7)
    ids = {s: {key(r) for r in rows} for s, rows in few.splits.items()}
    assert len(few.splits["train"]) == k == len(ids["train"])
    # Selection (validation) and reporting (test) are the protocol's, as in Table 8's halves.
    assert few.splits["validation"] == full.splits["validation"] and few.splits["test"] == full.splits["test"]
    assert not ids["train"] & ids["validation"] and not ids["train"] & ids["test"]
    assert not ids["validation"] & ids["test"]
    assert ids["train"] <= {key(r) for r in full.splits["train"]}


@pytest.mark.parametrize("how", ["random", "per_class"])
def test_k_shot_is_reproducible_by_seed(fake_hub, how):
    task = get_task("rte")
    draw = lambda seed: prepare_splits(task, DataSettings(k_shot=4, k_shot_sampling=how), seed=seed).splits["train"]  # noqa: E731
    assert draw(3) == draw(3)
    assert {key(r) for r in draw(3)} != {key(r) for r in draw(5)}


def test_random_k_shot_is_attempts_subsample(fake_hub):
    """ATTEMPT's subsample(n_obs=k): the first k of torch.randperm seeded with the seed."""
    task = get_task("mnli")
    pool = prepare_splits(task, DataSettings()).splits["train"]
    picked = prepare_splits(task, DataSettings(k_shot=4), seed=11).splits["train"]
    generator = torch.Generator()
    generator.manual_seed(11)
    assert picked == [pool[i] for i in torch.randperm(len(pool), generator=generator)[:4].tolist()]


def test_per_class_k_shot_is_depts_walk(fake_hub):
    """DePT's train.py: walk Dataset.shuffle(seed) order (numpy default_rng permutation),
    take a row while its label has fewer than k // n_labels rows or it fills the last slot."""
    task = get_task("cb")  # 3 labels; k = 4 -> one per label, then the next row of any label
    pool = prepare_splits(task, DataSettings()).splits["train"]
    picked = prepare_splits(task, DataSettings(k_shot=4, k_shot_sampling="per_class"), seed=2).splits["train"]
    order = np.random.default_rng(2).permutation(len(pool)).tolist()
    expected, counts = [], Counter()
    for i in order:
        label = pool[i]["label"]
        if len(expected) < 4 and (counts[label] < 1 or len(expected) == 3):
            counts[label] += 1
            expected.append(pool[i])
    assert picked == expected
    assert set(Counter(r["label"] for r in picked)) == {0, 1, 2}
