"""encode() with the real T5 and Llama-3 tokenizers: truncation, label masks, BOS/EOS."""

from __future__ import annotations

import pytest

from dtvg_dist.data import collate_generate, collate_train, encode, generation_padding_side
from dtvg_dist.tasks import get_task

LONG = " ".join(f"word{i}" for i in range(2000))
ROWS = {
    "rte": [
        {"sentence1": "No Weapons of Mass Destruction Found in Iraq Yet.", "sentence2": "Weapons Found.", "label": 1},
        {"sentence1": LONG, "sentence2": "Weapons Found.", "label": 0},
    ],
    "squad": [
        # rajpurkar/squad's schema: answers is a struct of lists.
        {"context": "Paris is the capital of France.", "question": "What is the capital of France?",
         "answers": {"text": ["Paris"], "answer_start": [0]}},
        {"context": LONG, "question": "Which word comes last?",
         "answers": {"text": ["a rather long answer that must survive truncation of the context intact"],
                     "answer_start": [0]}},
    ],
    "e2e_nlg": [
        {"meaning_representation": LONG, "target": " ".join(["The Vaults is a pub near Café Adriatic."] * 30)},
    ],
    "stsb": [{"sentence1": LONG, "sentence2": "b", "label": 3.75}],
}
CASES = [(name, i) for name, rows in ROWS.items() for i in range(len(rows))]


def _answer_ids(tokenizer, task, row) -> list[int]:
    return tokenizer(task.format(row)[1], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


@pytest.mark.parametrize(("name", "i"), CASES)
def test_seq2seq_t5(t5_tokenizer, name, i):
    tok, task, row = t5_tokenizer, get_task(name), ROWS[name][i]
    (feature,) = encode(task, [row], tok, "seq2seq")
    ids = feature["input_ids"]
    # T5 adds no BOS; source ends in its EOS (id 1); the whole answer + EOS is the label.
    assert tok.bos_token_id is None and ids[0] != tok.eos_token_id
    assert ids[-1] == tok.eos_token_id == 1 and ids.count(1) == 1
    assert len(ids) <= task.max_source_length
    assert feature["labels"] == _answer_ids(tok, task, row)
    assert tok.decode(feature["labels"], skip_special_tokens=True) == task.format(row)[1]
    assert feature["prompt_ids"] == ids
    assert feature["reference"] == task.reference(row)
    source_ids = tok(task.format(row)[0], add_special_tokens=False)["input_ids"]
    assert ids[:-1] == source_ids[: task.max_source_length - 1]


@pytest.mark.parametrize(("name", "i"), CASES)
def test_causal_llama3(llama_tokenizer, name, i):
    tok, task, row = llama_tokenizer, get_task(name), ROWS[name][i]
    (feature,) = encode(task, [row], tok, "causal")
    ids, labels, prompt = feature["input_ids"], feature["labels"], feature["prompt_ids"]
    # BOS is the tokenizer's own <|begin_of_text|>, once; EOS is its eos_token (<|eot_id|>).
    assert ids[0] == tok.bos_token_id == 128000 and ids.count(tok.bos_token_id) == 1
    assert ids[-1] == tok.eos_token_id
    assert len(labels) == len(ids) and ids[: len(prompt)] == prompt
    assert len(prompt) <= task.max_source_length
    # The mask covers exactly the answer and EOS, and the answer is whole.
    assert all(x == -100 for x in labels[: len(prompt)])
    assert labels[len(prompt):] == ids[len(prompt):] == _answer_ids(tok, task, row)
    assert tok.decode(labels[len(prompt):], skip_special_tokens=True) == task.format(row)[1]
    assert prompt[-1] == tok("\n", add_special_tokens=False)["input_ids"][-1]


def test_long_sources_are_truncated_to_budget(t5_tokenizer, llama_tokenizer):
    task = get_task("squad")
    row = ROWS["squad"][1]
    (s2s,) = encode(task, [row], t5_tokenizer, "seq2seq")
    (dec,) = encode(task, [row], llama_tokenizer, "causal")
    assert len(s2s["input_ids"]) == task.max_source_length == 512
    assert len(dec["prompt_ids"]) == task.max_source_length


def test_collators_pad_per_family(t5_tokenizer, llama_tokenizer):
    rows = ROWS["rte"]
    for tok, family in ((t5_tokenizer, "seq2seq"), (llama_tokenizer, "causal")):
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        feats = encode(get_task("rte"), rows, tok, family)
        batch = collate_train(feats, pad)
        short = min(range(2), key=lambda j: len(feats[j]["input_ids"]))
        n = len(feats[short]["input_ids"])
        assert batch["attention_mask"][short].sum().item() == n
        assert batch["input_ids"][short, :n].tolist() == feats[short]["input_ids"]
        assert batch["labels"][short, len(feats[short]["labels"]):].eq(-100).all()
        gen = collate_generate(feats, pad, generation_padding_side(family))
        m = len(feats[short]["prompt_ids"])
        row = gen["input_ids"][short].tolist()
        if family == "causal":  # left padding: the prompt ends at the right edge
            assert row[-m:] == feats[short]["prompt_ids"] and gen["attention_mask"][short, :-m].eq(0).all()
        else:
            assert row[:m] == feats[short]["prompt_ids"]
        assert gen["references"] == ["1", "0"]
