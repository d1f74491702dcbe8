"""Settings, the ATTEMPT split convention, k-shot sampling, caps, encoding and collators."""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter

import pytest
import torch

from dtvg_dist.data import (
    DataSettings,
    apply_split_rule,
    collate_generate,
    collate_train,
    encode,
    k_shot_sample,
    load_splits,
    split_rows,
)
from dtvg_dist.tasks import DataError, Task, get_task


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def rows(n: int, n_labels: int = 2, tag: str = "t") -> list[dict]:
    return [{"sentence": f"{tag}{i}", "label": (i * 7 + i // 3) % n_labels} for i in range(n)]


def builtin_task(train: int, validation: int, test: int | None = None, n_labels: int = 2, **kw) -> Task:
    splits = {"train": rows(train, n_labels, "t"), "validation": rows(validation, n_labels, "v")}
    if test is not None:
        splits["test"] = rows(test, n_labels, "x")
    return Task(
        name=kw.pop("name", "toy"), fields=(("sentence", "sentence"),),
        label_words=tuple(str(i) for i in range(n_labels)), builtin_rows=lambda: splits, **kw,
    )


def names(split: list[dict]) -> list[str]:
    return [r["sentence"] for r in split]


# ---- settings ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"on_bad_row": "ignore"}, "data.on_bad_row"),
        ({"k_shot": 0}, "data.k_shot"),
        ({"k_shot": True}, "data.k_shot"),
        ({"split_seed": "42"}, "data.split_seed"),
        ({"max_train_examples": -1}, "data.max_train_examples"),
        ({"max_eval_examples": 2.5}, "data.max_eval_examples"),
        ({"paths": {"rte": 3}}, "data.paths"),
        ({"local_dir": 7}, "data.local_dir"),
        ({"k_shot_sampling": "balanced"}, "data.k_shot_sampling"),
        ({"select_by": "best"}, "data.select_by"),
        ({"attempt_quirks": "yes"}, "data.attempt_quirks"),
        ({"revisions": {"rte": 1}}, "data.revisions"),
    ],
)
def test_settings_errors_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        DataSettings(**kwargs)


def test_settings_work_as_omegaconf_structured_config():
    omegaconf = pytest.importorskip("omegaconf")
    base = omegaconf.OmegaConf.structured(DataSettings)
    merged = omegaconf.OmegaConf.merge(base, {"k_shot": 16, "paths": {"rte": "/data/rte"}})
    settings = omegaconf.OmegaConf.to_object(merged)
    assert settings == DataSettings(k_shot=16, paths={"rte": "/data/rte"})
    assert DataSettings.coerce(merged) == settings  # a DictConfig is accepted as is
    with pytest.raises(ValueError, match=r"data\.seed is not a data setting"):
        DataSettings.coerce({"seed": 1})


# ---- split convention ------------------------------------------------------------------------
def test_small_dataset_halves_validation():
    original = {"train": rows(100), "validation": rows(51, tag="v")}
    splits, rule = split_rows(original, 42)
    assert "halved" in rule
    assert splits["train"] == original["train"]
    assert (len(splits["validation"]), len(splits["test"])) == (25, 26)
    assert sorted(names(splits["validation"]) + names(splits["test"])) == sorted(names(original["validation"]))
    # ATTEMPT's permutation: torch.randperm seeded with the split seed, first half validation.
    generator = torch.Generator()
    generator.manual_seed(42)
    perm = torch.randperm(51, generator=generator).tolist()
    assert splits["validation"] == [original["validation"][i] for i in perm[:25]]


def test_large_dataset_holds_out_1000_training_rows():
    original = {"train": rows(12_000), "validation": rows(300, tag="v")}
    splits, rule = split_rows(original, 42)
    assert "1000 training rows held out" in rule
    assert (len(splits["train"]), len(splits["validation"]), len(splits["test"])) == (11_000, 1_000, 300)
    assert splits["test"] == original["validation"]
    assert not set(names(splits["train"])) & set(names(splits["validation"]))
    assert sorted(names(splits["train"]) + names(splits["validation"])) == sorted(names(original["train"]))


def test_boundary_is_ten_thousand_training_rows():
    assert "halved" in split_rows({"train": rows(9_999), "validation": rows(10)}, 1)[1]
    assert "held out" in split_rows({"train": rows(10_000), "validation": rows(10)}, 1)[1]


def test_labelled_test_split_is_kept():
    original = {"train": rows(50), "validation": rows(10, tag="v"), "test": rows(8, tag="x")}
    splits, _ = split_rows(original, 42)
    assert splits == original
    no_validation, _ = split_rows({"train": rows(5_000), "test": rows(8, tag="x")}, 42)
    assert (len(no_validation["train"]), len(no_validation["validation"])) == (4_000, 1_000)


@pytest.mark.parametrize(("train", "validation"), [(200, 40), (11_000, 30)])
def test_splits_are_deterministic_and_seeded(train, validation):
    original = {"train": rows(train), "validation": rows(validation, tag="v")}
    first, _ = split_rows(original, 42)
    again, _ = split_rows(original, 42)
    other, _ = split_rows(original, 7)
    assert first == again
    assert names(first["validation"]) != names(other["validation"])


def test_load_splits_logs_sizes(caplog):
    task = builtin_task(120, 40)
    with caplog.at_level(logging.INFO, logger="dtvg_dist.data"):
        splits = load_splits(task, DataSettings())
    assert {k: len(v) for k, v in splits.items()} == {"train": 120, "validation": 20, "test": 20}
    record = next(r for r in caplog.records if r.name == "dtvg_dist.data" and "train=120" in r.getMessage())
    assert "validation=20 test=20" in record.getMessage() and "toy" in record.getMessage()


def test_split_seed_fixes_test_rows_across_run_seeds():
    task = builtin_task(120, 40)
    a = load_splits(task, DataSettings(), seed=1)
    b = load_splits(task, DataSettings(), seed=2)
    assert a == b  # without k-shot the run seed changes nothing
    assert load_splits(task, DataSettings(split_seed=3))["test"] != a["test"]


# ---- caps ---------------------------------------------------------------------------------------
def test_task_cap_setting_override_and_eval_cap():
    task = builtin_task(11_050, 30, max_train_examples=500)
    splits = load_splits(task, DataSettings())
    assert len(splits["train"]) == 500 and len(splits["validation"]) == 1000
    assert len(load_splits(task, DataSettings(max_train_examples=20))["train"]) == 20
    capped = load_splits(task, {"max_eval_examples": 7})
    assert (len(capped["validation"]), len(capped["test"])) == (7, 7)
    assert set(names(capped["test"])) <= set(names(rows(30, tag="v")))


def test_yelp_polarity_cap_is_100k():
    assert get_task("yelp_polarity").max_train_examples == 100_000


# ---- k-shot ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [4, 16, 32])
@pytest.mark.parametrize("n_labels", [2, 3])
def test_per_class_k_shot_follows_depts_walk_and_is_seeded(k, n_labels):
    """DePT's train.py: up to k // n rows per label, and once k - 1 rows are taken the
    next row of any label fills the last slot; when k % n >= 2 that slot is never
    reached and the walk ends at n * (k // n) rows (CB 32-shot: 30), as in DePT."""
    task = builtin_task(300, 40, n_labels=n_labels)
    settings = DataSettings(k_shot=k, k_shot_sampling="per_class")
    first = load_splits(task, settings, seed=0)
    counts = Counter(r["label"] for r in first["train"])
    per = k // n_labels
    expected = k if k % n_labels < 2 else n_labels * per
    assert len(first["train"]) == expected == len(set(names(first["train"])))
    assert set(counts) == set(range(n_labels)) and sum(max(c - per, 0) for c in counts.values()) <= 1
    assert load_splits(task, settings, seed=0) == first
    assert names(load_splits(task, settings, seed=1)["train"]) != names(first["train"])
    # Validation and test are the protocol's halves, never the k rows' neighbours.
    full = load_splits(task, DataSettings())
    assert first["validation"] == full["validation"] and first["test"] == full["test"]
    assert not set(names(first["validation"])) & set(names(first["test"]))


def test_random_k_shot_is_the_default_and_attempts_subsample():
    task = builtin_task(300, 40)
    picked = load_splits(task, DataSettings(k_shot=16), seed=9)["train"]
    generator = torch.Generator()
    generator.manual_seed(9)
    perm = torch.randperm(300, generator=generator).tolist()
    assert picked == [rows(300)[i] for i in perm[:16]]


def test_k_shot_pool_excludes_held_out_validation_rows():
    """Without a validation split, 1,000 training rows are the validation set: never drawn."""
    task = builtin_task(1_050, 10, test=12)
    task = dataclasses.replace(task, split_rule="hold_out", validation_split=None, test_split="test")
    for how in ("random", "per_class"):
        splits = load_splits(task, DataSettings(k_shot=32, k_shot_sampling=how), seed=5)
        assert not set(names(splits["train"])) & set(names(splits["validation"]))
        assert len(splits["validation"]) == 1_000 and names(splits["test"]) == names(rows(12, tag="x"))


def test_per_class_with_a_scarce_label_returns_what_depts_walk_finds(caplog):
    # Only 2 rows of label 1: 4 per label cannot be met, and the last slot (open at
    # k - 1 = 7 rows) is never reached, so DePT's loop ends short.
    scarce = [{"sentence": f"s{i}", "label": int(i < 2)} for i in range(40)]
    with caplog.at_level(logging.WARNING, logger="dtvg_dist.data"):
        picked = k_shot_sample(get_task("rte"), scarce, 8, seed=0, how="per_class")
    assert Counter(r["label"] for r in picked) == {1: 2, 0: 4}
    assert "only 6 of 8 rows" in caplog.text


def test_k_shot_for_non_classification_and_too_many():
    squad_rows = [{"context": "c", "question": f"q{i}", "answers": ["a"]} for i in range(50)]
    picked = k_shot_sample(get_task("nq"), squad_rows, 4, seed=3, how="per_class")  # no labels: random
    assert len(picked) == 4 and picked == k_shot_sample(get_task("nq"), squad_rows, 4, seed=3)
    with pytest.raises(DataError, match="k_shot=64 but only 50 training rows"):
        k_shot_sample(get_task("nq"), squad_rows, 64, seed=3)


def test_stsb_per_class_binarises_at_two_and_a_half():
    from dtvg_dist.data.splits import _class_of

    task = get_task("stsb")
    labels = [0.0, 1.0, 2.5, 2.6, 4.0, 5.0]
    assert [_class_of(task, {"label": x}) for x in labels] == [0, 0, 0, 1, 1, 1]


# ---- split rules ---------------------------------------------------------------------------------
def test_split_rules_on_hub_named_splits():
    rte, qqp, mnli = get_task("rte"), get_task("qqp"), get_task("mnli")
    train, valid = rows(1_200), rows(9, tag="v")
    halved, rule = apply_split_rule(rte, {"train": train, "validation": valid}, 42)
    assert (len(halved["train"]), len(halved["validation"]), len(halved["test"])) == (1_200, 4, 5)
    assert "halved" in rule
    held, _ = apply_split_rule(qqp, {"train": train, "validation": valid}, 42)
    assert (len(held["train"]), len(held["validation"]), held["test"]) == (200, 1_000, valid)
    generator = torch.Generator()
    generator.manual_seed(42)
    perm = torch.randperm(1_200, generator=generator).tolist()
    assert held["validation"] == [train[i] for i in perm[:1_000]]  # ATTEMPT's get_split_indices
    assert held["train"] == [train[i] for i in perm[1_000:]]
    hub, _ = apply_split_rule(
        mnli, {"train": train, "validation_matched": valid, "validation_mismatched": rows(3, tag="m")}, 42
    )
    assert hub["validation"] == rows(3, tag="m") and hub["test"] == valid
    with pytest.raises(DataError, match=r"'qqp': the hold-out rule needs more than 1000 training rows, found 5"):
        apply_split_rule(qqp, {"train": rows(5), "validation": valid}, 42)
    with pytest.raises(DataError, match=r"'mnli': original split\(s\) \['validation_mismatched'\] missing"):
        apply_split_rule(mnli, {"train": train, "validation_matched": valid}, 42)


def test_task_split_rule_is_checked():
    with pytest.raises(ValueError, match="split_rule 'hold_out' needs test_split"):
        Task(name="x", fields=(("s", "s"),), label_words=("0", "1"), hub_id="a/b", split_rule="hold_out")
    with pytest.raises(ValueError, match="split_rule must be one of"):
        Task(name="x", fields=(("s", "s"),), label_words=("0", "1"), hub_id="a/b", split_rule="random")


# ---- encoding without a real tokenizer --------------------------------------------------------------
class WordTokenizer:
    """One id per whitespace word; adds BOS (like Llama) or EOS (like T5) by default."""

    def __init__(self, adds: str):
        self.adds, self.vocab = adds, {}
        self.bos_token_id, self.eos_token_id, self.pad_token_id = 1, 2, 0

    def _ids(self, text: str) -> list[int]:
        ids = [self.vocab.setdefault(w, len(self.vocab) + 10) for w in text.split()]
        return ids or ([9] if text == "\n" else [])

    def __call__(self, text, add_special_tokens=True):
        if isinstance(text, list):
            return {"input_ids": [self(t, add_special_tokens)["input_ids"] for t in text]}
        ids = self._ids(text)
        if add_special_tokens:
            ids = [self.bos_token_id] + ids if self.adds == "bos" else ids + [self.eos_token_id]
        return {"input_ids": ids}


def test_encode_truncates_only_the_source():
    task = dataclasses.replace(get_task("squad"), max_source_length=10)
    row = {"context": " ".join(["w"] * 50), "question": "q", "answers": [" ".join(["ans"] * 20)]}
    (s2s,) = encode(task, [row], WordTokenizer("eos"), "seq2seq")
    assert len(s2s["input_ids"]) == 10 and s2s["input_ids"][-1] == 2
    assert s2s["labels"] == [s2s["labels"][0]] * 20 + [2]
    (dec,) = encode(task, [row], WordTokenizer("bos"), "causal")
    assert dec["prompt_ids"][0] == 1 and len(dec["prompt_ids"]) == 10 and dec["prompt_ids"][-1] == 9
    assert dec["labels"] == [-100] * 10 + dec["input_ids"][10:] and len(dec["input_ids"]) == 10 + 21


def test_encode_release_template_lays_out_llama_inputs_like_the_released_code():
    """data.template=dtvg-release: [BOS] source "Label :" [BOS] answer EOS, the
    answer alone in the labels; T5 ignores the template."""
    task = builtin_task(4, 2)
    row = {"sentence": "the movie was good", "label": 1}
    tok = WordTokenizer("bos")
    (dec,) = encode(task, [row], tok, "causal", "dtvg-release")
    source, target = task.format(row)
    src, sep, tgt = tok._ids(source), tok._ids("Label :"), tok._ids(target)
    assert dec["prompt_ids"] == [1, *src, *sep]
    assert dec["input_ids"] == [1, *src, *sep, 1, *tgt, 2]
    assert dec["labels"] == [-100] * (1 + len(src) + len(sep)) + [1, *tgt, 2]
    (default,) = encode(task, [row], tok, "causal")
    assert default["labels"][-len(tgt) - 1:] == [*tgt, 2] and default["labels"].count(1) == 0
    t5 = WordTokenizer("eos")
    assert encode(task, [row], t5, "seq2seq", "dtvg-release") == encode(task, [row], t5, "seq2seq")
    with pytest.raises(ValueError, match="data.template must be one of"):
        encode(task, [row], tok, "causal", "chat")
    with pytest.raises(ValueError, match="data.template"):
        DataSettings(template="chat")


def test_encode_release_template_matches_the_released_tokenisation_on_llama3():
    """The released decoder_preprocess_function tokenises f"{source} Label : " and
    the target separately (each with the tokenizer's BOS), then appends pad
    (= EOS, Llama-3 has no pad token): our ids must be the same."""
    from tokenizer_fixtures import LLAMA3_SKIP, llama3_dir

    folder = llama3_dir()
    if not (folder / "tokenizer.json").is_file():
        pytest.skip(LLAMA3_SKIP)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    task = get_task("rte")
    rows = [
        {"sentence1": "A man is playing a guitar.", "sentence2": "A man plays music.", "label": 0},
        {"sentence1": "Prices rose 3.5% in 2019?", "sentence2": "Prices fell", "label": 1},
    ]
    for row, feature in zip(rows, encode(task, rows, tok, "causal", "dtvg-release"), strict=True):
        source, target = task.format(row)
        prompt = tok(f"{source} Label : ")["input_ids"]
        answer = tok(target)["input_ids"] + [tok.eos_token_id]
        assert feature["prompt_ids"] == prompt
        assert feature["input_ids"] == prompt + answer
        assert feature["labels"] == [-100] * len(prompt) + answer


def test_encode_errors():
    tok = WordTokenizer("eos")
    with pytest.raises(ValueError, match="family must be one of"):
        encode(get_task("rte"), [], tok, "encoder")
    tok.eos_token_id = None
    with pytest.raises(ValueError, match="no eos_token_id"):
        encode(get_task("rte"), [], tok, "seq2seq")


# ---- collators ---------------------------------------------------------------------------------------
FEATURES = [
    {"input_ids": [5, 6, 7], "labels": [-100, -100, 7], "prompt_ids": [5, 6], "reference": "a"},
    {"input_ids": [8], "labels": [8], "prompt_ids": [8], "reference": ["b", "c"]},
]


def test_collate_train_right_pads():
    batch = collate_train(FEATURES, pad_token_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, -100, 7], [8, -100, -100]]
    assert batch["input_ids"].dtype == torch.long


@pytest.mark.parametrize(
    ("side", "ids", "mask"),
    [("left", [[5, 6], [0, 8]], [[1, 1], [0, 1]]), ("right", [[5, 6], [8, 0]], [[1, 1], [1, 0]])],
)
def test_collate_generate_padding_side(side, ids, mask):
    batch = collate_generate(FEATURES, pad_token_id=0, padding_side=side)
    assert batch["input_ids"].tolist() == ids and batch["attention_mask"].tolist() == mask
    assert batch["references"] == ["a", ["b", "c"]]


def test_collate_errors():
    with pytest.raises(ValueError, match="pad_token_id is None"):
        collate_train(FEATURES, None)
    with pytest.raises(ValueError, match="padding_side"):
        collate_generate(FEATURES, 0, "middle")
    with pytest.raises(ValueError, match="empty batch"):
        collate_train([], 0)
