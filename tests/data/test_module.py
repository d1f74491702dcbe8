"""TaskData, one object per task's data: the files are located once per split
build and the settings are not validated again past the edge; the examples
`predict` makes from rows are the ones training reads from the tokenized
cache (one tokenization path), both equal to the independent list-based
reference; batches pad where generation needs them."""

from __future__ import annotations

import pytest
from encoding_reference import reference_encode
from tokenizer_fixtures import T5_DIR

from dtvg_dist.data import DataSettings, sources, tokenized
from dtvg_dist.data import module as data_module
from dtvg_dist.data.module import TaskData
from dtvg_dist.tasks import Task


def toy_task(rows: int = 30) -> Task:
    def splits() -> dict[str, list[dict]]:
        make = lambda n, tag: [  # noqa: E731
            {"sentence": f"the movie {tag}{i} was" + " very" * (i % 3) + " good", "label": i % 2} for i in range(n)
        ]
        return {"train": make(rows, "t"), "validation": make(12, "v")}

    return Task(name="toy_module", fields=(("sentence", "sentence"),), label_words=("no", "yes"),
                builtin_rows=splits)


@pytest.fixture(scope="module")
def tokenizers(toy_words) -> dict:
    from transformers import AutoTokenizer

    from dtvg_dist.model.toy_tokenizer import build_toy_tokenizer

    return {"toy": build_toy_tokenizer(toy_words), "t5": AutoTokenizer.from_pretrained(str(T5_DIR))}


def _counting(monkeypatch, owner, name: str) -> list:
    calls: list = []
    real = getattr(owner, name)

    def counted(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


def test_a_split_build_locates_once_and_validates_no_settings(tokenizers, tmp_path, monkeypatch):
    settings = DataSettings(cache_dir=str(tmp_path), k_shot=4)  # validated here, at the edge
    located = [_counting(monkeypatch, owner, "locate_original") for owner in (sources, tokenized, data_module)]
    validated = _counting(monkeypatch, DataSettings, "validate")
    data = TaskData(toy_task(), settings, tokenizers["toy"], "seq2seq", seed=3)
    splits = data.splits()  # a cache miss: the key, then reading the rows
    assert {k: len(v) for k, v in splits.items()} == {"train": 4, "validation": 6, "test": 6}
    assert sum(map(len, located)) == 1
    assert validated == []
    assert data.splits() is splits and sum(map(len, located)) == 1  # kept
    # A second object on the built cache: located once more (the key), nothing read.
    again = TaskData(toy_task(), settings, tokenizers["toy"], "seq2seq", seed=3).splits()
    assert sum(map(len, located)) == 2 and list(again["train"]) == list(splits["train"])


@pytest.mark.parametrize("family", ["seq2seq", "causal"])
@pytest.mark.parametrize("tok_name", ["toy", "t5"])
def test_predict_encoding_is_training_encoding(tokenizers, tmp_path, tok_name, family):
    """What `predict` does with rows (TaskData.encode) gives, for the test rows,
    the examples training memory-maps, and both are the reference's."""
    tok = tokenizers[tok_name]
    template = "dtvg-release" if family == "causal" and tok_name == "t5" else "default"
    settings = DataSettings(cache_dir=str(tmp_path), template=template)
    data = TaskData(toy_task(), settings, tok, family, seed=1)
    rows = data.prepared().splits["test"]
    trained = list(data.splits()["test"])
    predicted = data.encode(rows)
    assert len(trained) == len(rows) == 6
    assert predicted == trained == reference_encode(data.task, rows, tok, family, template)
    assert data.encode([]) == []


def test_batches_pad_where_the_family_generates(tokenizers, tmp_path):
    tok = tokenizers["t5"]
    settings = DataSettings(cache_dir=str(tmp_path))
    for family, side in (("seq2seq", "right"), ("causal", "left")):
        data = TaskData(toy_task(), settings, tok, family)
        features = list(data.splits()["train"])[:5]
        prompts = [f["prompt_ids"] for f in features]
        assert len({len(p) for p in prompts}) > 1  # the batch needs padding
        batch = data.collate_generate(features)
        width = max(map(len, prompts))
        for row, ids, mask in zip(batch["input_ids"].tolist(), prompts, batch["attention_mask"].tolist(),
                                  strict=True):
            pad = [data.pad_id] * (width - len(ids))
            assert row == (ids + pad if side == "right" else pad + ids)
            assert sum(mask) == len(ids)
        train = data.collate_train(features)  # training pads on the right, labels with -100
        width = train["labels"].shape[1]
        assert train["labels"].tolist() == [f["labels"] + [-100] * (width - len(f["labels"])) for f in features]


def test_rows_only_and_settings_entered_once(tmp_path):
    data = TaskData(toy_task(), DataSettings(cache_dir=str(tmp_path)))
    assert len(data.prepared().splits["train"]) == 30  # rows need no tokenizer
    with pytest.raises(ValueError, match="task 'toy_module': TaskData was made without a tokenizer"):
        data.splits()
    with pytest.raises(TypeError, match="needs a DataSettings"):
        TaskData(toy_task(), {"cache_dir": str(tmp_path)})  # type: ignore[arg-type]
    assert TaskData("rte", DataSettings()).task.name == "rte"  # a name is looked up once, here
