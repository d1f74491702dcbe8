"""Tokenized splits from the Arrow cache: the examples the list-based reference
(tests/encoding_reference.py) makes (ids,
labels, prompts, references) for both families, the real T5 and Llama-3
tokenizers and the toy one, over the task kinds; the cache's key, atomic
build, hit and location."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
from pathlib import Path

import pyarrow as pa
import pytest
from encoding_reference import reference_encode
from tokenizer_fixtures import LLAMA3_SKIP, T5_DIR, llama3_dir

from dtvg_dist.data import (
    DataSettings,
    collate_train,
    load_splits,
    prepare_splits,
    tokenized,
)
from dtvg_dist.data.tokenized import TokenizedSplit, cache_dir, tokenized_splits
from dtvg_dist.tasks import Task, get_task

TESTS = Path(__file__).resolve().parents[1]


def _hub_fixtures():
    spec = importlib.util.spec_from_file_location("hub_fixtures", TESTS / "hub_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def hub_root(tmp_path_factory) -> Path:
    return _hub_fixtures().write_hub(tmp_path_factory.mktemp("hub"))


@pytest.fixture
def fake_hub(monkeypatch, hub_root, tmp_path) -> None:
    """huggingface_hub.snapshot_download reads the fixture repositories (tests/hub_fixtures.py)."""
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        _hub_fixtures().fake_snapshot(hub_root, tmp_path / "hf-cache"))


@pytest.fixture(scope="module")
def tokenizers(toy_words) -> dict:
    """The toy word-level tokenizer, and the real T5 / Llama-3 ones when the workspace has them."""
    from transformers import AutoTokenizer

    from dtvg_dist.model.toy_tokenizer import build_toy_tokenizer

    out = {"toy": build_toy_tokenizer(toy_words)}
    for name, folder in (("t5", T5_DIR), ("llama3", llama3_dir())):
        if (folder / "tokenizer.json").is_file():
            out[name] = AutoTokenizer.from_pretrained(str(folder))
    return out


def tokenizer(tokenizers: dict, name: str):
    if name not in tokenizers:
        pytest.skip(LLAMA3_SKIP)  # T5's ships with the tests
    return tokenizers[name]


# (task, data settings): classification on sharded hub files, regression,
# QA with list references (SQuAD's answers struct), MultiRC's references
# with question ids, ReCoRD's one example per answer, generation, and the
# selections (caps, per-class k-shot, ATTEMPT's quirk) made by index; SQuAD
# also with sources cut to 16 tokens.
CASES = [
    ("mnli", {}, {}),
    ("stsb", {}, {}),
    ("squad", {"max_eval_examples": 25}, {}),
    ("squad", {"max_eval_examples": 5}, {"max_source_length": 16}),
    ("multirc", {}, {}),
    ("record", {"max_eval_examples": 20}, {}),
    ("e2e_nlg", {}, {}),
    ("cb", {"k_shot": 4, "k_shot_sampling": "per_class"}, {}),
    ("winogrande", {"k_shot": 2, "attempt_quirks": True, "max_eval_examples": 10}, {}),
    # The released code's causal layout (data.template; T5 ignores it).
    ("mnli", {"template": "dtvg-release"}, {}),
    ("squad", {"template": "dtvg-release", "max_eval_examples": 5}, {"max_source_length": 16}),
]


@pytest.mark.parametrize("family", ["seq2seq", "causal"])
@pytest.mark.parametrize("tok_name", ["toy", "t5", "llama3"])
def test_examples_equal_encode(fake_hub, tokenizers, tmp_path, tok_name, family):
    tok = tokenizer(tokenizers, tok_name)
    kinds = set()
    for name, settings, changes in CASES:
        task = dataclasses.replace(get_task(name), **changes)
        cfg = DataSettings(**settings, cache_dir=str(tmp_path / "cache"))
        want = {s: reference_encode(task, rows, tok, family, cfg.template) for s, rows in load_splits(task, cfg, seed=3).items()}
        got = tokenized_splits(task, cfg, tok, family, seed=3)
        for split in ("train", "validation", "test"):
            examples = list(got[split])
            assert len(examples) == len(want[split]) > 0, (name, split)
            assert examples == want[split], (name, split)
            assert all(type(x) is int for x in examples[0]["input_ids"] + examples[0]["labels"])
        first = [got["train"][i] for i in range(min(3, len(got["train"])))]
        batch, ref = collate_train(first, 0), collate_train(want["train"][:3], 0)
        assert all(batch[k].equal(ref[k]) for k in ref)
        kinds.add(task.kind)
        refs = [e["reference"] for e in examples]
        if name == "squad":
            assert all(isinstance(r, list) for r in refs)  # every gold answer
        if changes:  # sources were cut to what encode keeps
            assert max(len(e["prompt_ids"]) for e in examples) == 16
        if cfg.template == "dtvg-release" and family == "causal":  # " Label : " before the answer
            sep = tok(" Label : ", add_special_tokens=False)["input_ids"]
            assert all(e["prompt_ids"][-len(sep):] == sep for e in examples)
        if name == "multirc":
            assert all("\t" in r for r in refs)  # label word, tab, question id
    assert kinds == {"classification", "regression", "qa", "generation"}


def test_record_expansion_counts_in_the_rule(fake_hub, tokenizers, tmp_path, caplog):
    tok = tokenizers["toy"]
    cfg = DataSettings(cache_dir=str(tmp_path))
    with caplog.at_level(logging.INFO, logger="dtvg_dist.data"):
        got = tokenized_splits(get_task("record"), cfg, tok, "seq2seq")
    meta = json.loads(next(tmp_path.glob("record-*/key.json")).read_text())
    assert meta["sizes"] == {k: len(v) for k, v in got.items()}
    # The probe row (two answers) is in the test split; the rule says what the list path says.
    assert meta["rule"] == prepare_splits(get_task("record"), cfg).rule
    assert meta["rule"].endswith("rows expanded train 2->2, validation 1000->1000, test 2->3")
    assert "test 2->3" in caplog.text


# ---- the cache --------------------------------------------------------------------------------
def toy_task(rows: int = 40, **changes) -> Task:
    def splits() -> dict[str, list[dict]]:
        make = lambda n, tag: [{"sentence": f"the movie {tag}{i} was good", "label": i % 2} for i in range(n)]  # noqa: E731
        return {"train": make(rows, "t"), "validation": make(10, "v")}

    return Task(name="toy_cache", fields=(("sentence", "sentence"),), label_words=("no", "yes"),
                builtin_rows=splits, **changes)


def folders(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []


def test_second_call_is_a_hit_that_builds_nothing(tokenizers, tmp_path, caplog, monkeypatch):
    tok, task = tokenizers["toy"], toy_task()
    cfg = DataSettings(cache_dir=str(tmp_path))
    with caplog.at_level(logging.INFO, logger="dtvg_dist.data"):
        first = tokenized_splits(task, cfg, tok, "causal")
    (folder,) = folders(tmp_path)
    assert f"cache miss, building {tmp_path / folder}" in caplog.text
    meta = json.loads((tmp_path / folder / "key.json").read_text())
    assert meta["key"]["family"] == "causal" and meta["key"]["protocol"]["split_seed"] == 42
    assert meta["sizes"] == {"train": 40, "validation": 5, "test": 5}
    monkeypatch.setattr(tokenized, "_build", lambda *a, **k: pytest.fail("a hit must not build"))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="dtvg_dist.data"):
        second = tokenized_splits(task, cfg, tok, "causal")
    assert f"cache hit, {tmp_path / folder}" in caplog.text
    assert list(second["train"]) == list(first["train"])
    # Without k-shot the run seed draws nothing: another seed is the same cache.
    tokenized_splits(task, cfg, tok, "causal", seed=7)


def test_the_key_follows_what_the_examples_depend_on(tokenizers, tmp_path, toy_words):
    from dtvg_dist.model.toy_tokenizer import build_toy_tokenizer

    tok, task = tokenizers["toy"], toy_task()
    base = {"cache_dir": str(tmp_path)}
    tokenized_splits(task, base, tok, "seq2seq")
    variants = [
        (task, base, tok, "causal", None),
        (task, base, build_toy_tokenizer(list(reversed(toy_words))), "seq2seq", None),
        (dataclasses.replace(task, max_source_length=9), base, tok, "seq2seq", None),
        (toy_task(rows=41), base, tok, "seq2seq", None),  # other source rows
        (task, {**base, "split_seed": 1}, tok, "seq2seq", None),
        (task, {**base, "max_train_examples": 30}, tok, "seq2seq", None),
        (task, {**base, "k_shot": 4}, tok, "seq2seq", 1),
        (task, {**base, "k_shot": 4}, tok, "seq2seq", 2),  # the run seed draws the k rows
        (task, {**base, "template": "dtvg-release"}, tok, "causal", None),
    ]
    for i, (t, settings, tk, family, seed) in enumerate(variants, start=2):
        got = tokenized_splits(t, settings, tk, family, seed=seed)
        assert len(folders(tmp_path)) == i, (i, settings, family)
        # ... and each is what encode makes under those settings.
        want = reference_encode(t, load_splits(t, settings, seed=seed)["train"], tk, family, settings.get("template", "default"))
        assert list(got["train"]) == want


def test_a_changed_source_file_is_a_miss(tokenizers, tmp_path):
    import os

    rows = [{"sentence1": "good", "sentence2": "movie", "label": i % 2} for i in range(6)]
    data = tmp_path / "data" / "rte"
    data.mkdir(parents=True)
    for split in ("train", "validation"):
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = DataSettings(local_dir=str(tmp_path / "data"), cache_dir=str(tmp_path / "cache"))
    tok = tokenizers["toy"]
    before = tokenized_splits(get_task("rte"), cfg, tok, "seq2seq")
    rows[0]["sentence1"] = "this"  # same length, so the same file size
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.utime(data / "train.jsonl", ns=(1, 1))  # same size; only the modification time tells
    after = tokenized_splits(get_task("rte"), cfg, tok, "seq2seq")
    assert len(folders(tmp_path / "cache")) == 2
    assert before["train"][0]["input_ids"] != after["train"][0]["input_ids"]


def test_a_crash_leaves_no_cache_and_the_next_run_builds(tokenizers, tmp_path, monkeypatch):
    tok, task = tokenizers["toy"], toy_task()
    cfg = DataSettings(cache_dir=str(tmp_path))
    real = tokenized.Encoder.__call__
    calls = []

    def failing(self, rows):
        calls.append(len(rows))
        if len(calls) == 2:  # the validation split, after train was written
            raise RuntimeError("killed")
        return real(self, rows)

    monkeypatch.setattr(tokenized.Encoder, "__call__", failing)
    with pytest.raises(RuntimeError, match="killed"):
        tokenized_splits(task, cfg, tok, "seq2seq")
    assert folders(tmp_path) == []  # neither a half folder nor its temporary one
    monkeypatch.setattr(tokenized.Encoder, "__call__", real)
    got = tokenized_splits(task, cfg, tok, "seq2seq")
    assert len(got["train"]) == 40 and len(folders(tmp_path)) == 1


def test_a_folder_another_process_finished_first_wins(tokenizers, tmp_path):
    tok, task = tokenizers["toy"], toy_task()
    tokenized_splits(task, {"cache_dir": str(tmp_path)}, tok, "seq2seq")
    (folder,) = [tmp_path / name for name in folders(tmp_path)]
    late = tmp_path / ".late.tmp"
    late.mkdir()
    (late / "train.arrow").write_text("other bytes")
    tokenized._publish(late, folder)  # the rename fails: the finished folder stays
    assert (folder / "key.json").is_file() and (folder / "train.arrow").stat().st_size > 100


def test_cache_location_setting_env_and_default(monkeypatch, tmp_path):
    from dtvg_dist.store import run_files

    monkeypatch.delenv(tokenized.CACHE_ENV, raising=False)
    monkeypatch.delenv(run_files.CACHE_ENV, raising=False)
    assert cache_dir(DataSettings()) == Path("runs/.cache/tokenized")
    monkeypatch.setenv(run_files.CACHE_ENV, str(tmp_path / "root"))
    assert cache_dir(DataSettings()) == tmp_path / "root" / "tokenized"
    monkeypatch.setenv(tokenized.CACHE_ENV, str(tmp_path / "env"))
    assert cache_dir(DataSettings()) == tmp_path / "env"
    assert cache_dir(DataSettings(cache_dir=str(tmp_path / "set"))) == tmp_path / "set"
    with pytest.raises(ValueError, match=r"data\.cache_dir must be a path string"):
        DataSettings(cache_dir=3)


def test_splits_are_memory_mapped_and_indexed_like_lists(tokenizers, tmp_path):
    tok, task = tokenizers["toy"], toy_task(rows=3000)
    tokenized_splits(task, {"cache_dir": str(tmp_path)}, tok, "seq2seq")
    allocated = pa.total_allocated_bytes()
    train = tokenized_splits(task, {"cache_dir": str(tmp_path)}, tok, "seq2seq")["train"]
    assert isinstance(train, TokenizedSplit) and len(train) == 3000
    assert train.table.nbytes > 50_000
    assert pa.total_allocated_bytes() - allocated < train.table.nbytes / 10  # read in place, not copied
    want = reference_encode(task, load_splits(task)["train"], tok, "seq2seq")
    assert train[-1] == want[-1] and train[1000] == want[1000] and train[5:8] == want[5:8]
    with pytest.raises(IndexError):
        train[3000]


def test_a_bad_family_is_an_error_before_anything_is_built(tokenizers, tmp_path):
    with pytest.raises(ValueError, match="family must be one of"):
        tokenized_splits(toy_task(), {"cache_dir": str(tmp_path)}, tokenizers["toy"], "decoder")
    assert folders(tmp_path) == []


@pytest.mark.slow
def test_task_keys_are_the_same_in_another_process():
    """The key must not depend on the process (object addresses, hash seeds):
    else no run would ever find the cache another one built."""
    import os
    import subprocess
    import sys

    code = (
        "import json; from dtvg_dist.tasks.synthetic import register_synthetic_tasks; register_synthetic_tasks(); "
        "from dtvg_dist.tasks import TASKS, get_task; from dtvg_dist.data.tokenized import _stable; "
        "print(json.dumps({n: _stable(get_task(n)) for n in sorted(TASKS)}, sort_keys=True))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(TESTS.parent)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    from dtvg_dist.tasks import TASKS, registry
    from dtvg_dist.tasks.synthetic import register_synthetic_tasks

    saved = dict(registry._REGISTRY)
    try:
        register_synthetic_tasks()
        here = json.dumps({n: tokenized._stable(get_task(n)) for n in sorted(TASKS)}, sort_keys=True)
        assert len(TASKS) > 26 and out.stdout.strip() == here
    finally:
        registry._REGISTRY.clear()
        registry._REGISTRY.update(saved)
