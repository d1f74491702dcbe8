"""What generated text is scored against: the task's gold references, or (the
released protocol) the trained target decoded from its label ids; ReCoRD
keeps every gold answer. Real T5 / Llama-3 tokenizers."""

from __future__ import annotations

import pytest

from dtvg_dist.data import encode, label_reference
from dtvg_dist.orchestration.config import load_recipe
from dtvg_dist.tasks import get_task
from dtvg_dist.training import evaluation
from dtvg_dist.training.evaluation import evaluate, reference_mode

NQ_ROW = {"question": "who was president?", "context": "Zachary Taylor was president in 1849.",
          "answers": ["Zachary Taylor", "Taylor"]}


def test_which_tasks_are_scored_against_the_decoded_target():
    nq, record, e2e, rte = (get_task(n) for n in ("nq", "record", "e2e_nlg", "rte"))
    assert reference_mode(nq) == reference_mode(e2e) == "gold"  # the library default: today's
    assert reference_mode(nq, "target") == "target"
    assert reference_mode(record, "target") == "gold"  # ATTEMPT's Record post-processor
    assert reference_mode(e2e, nlg_references="target") == "target"
    assert reference_mode(rte, "target", "target") == "gold"
    with pytest.raises(ValueError, match="eval.qa_references"):
        reference_mode(nq, "first")


def test_paper_recipes_score_as_released():
    for recipe in ("t5-base-dtvg-nq", "t5-base-nlg-e2e_nlg", "llama3.2-1b-rte"):
        c = load_recipe(recipe)
        assert (c.eval.qa_references, c.eval.nlg_references) == ("target", "target")
    tiny = load_recipe("tiny-t5")
    assert (tiny.eval.qa_references, tiny.eval.nlg_references) == ("all", "text")


@pytest.mark.parametrize("family", ["seq2seq", "causal"])
def test_qa_is_scored_against_answers0_only(t5_tokenizer, llama_tokenizer, monkeypatch, family):
    tok = t5_tokenizer if family == "seq2seq" else llama_tokenizer
    task = get_task("nq")
    features = encode(task, [NQ_ROW], tok, family)
    assert label_reference(features[0], tok, family) == "Zachary Taylor"
    monkeypatch.setattr(evaluation, "predict", lambda *a, **k: ["Taylor"])
    args = (None, None, task, features, tok, family, 8, 8)
    gold, _ = evaluate(*args, references="gold")
    target, _ = evaluate(*args, references="target")
    assert gold["em"] == pytest.approx(100.0)  # "Taylor" is one of the gold answers
    assert target["em"] == pytest.approx(0.0) and target["f1"] == pytest.approx(100 * 2 / 3)


def test_the_decoded_target_is_what_t5_can_write(t5_tokenizer):
    # T5's vocabulary has no "{" nor "~": the decoded label drops them (<unk>
    # is a special token), as the released references do.
    task = get_task("nq")
    row = dict(NQ_ROW, answers=["{Zachary} ~Taylor"])
    (feature,) = encode(task, [row], t5_tokenizer, "seq2seq")
    assert feature["reference"] == ["{ Zachary } ~ Taylor"]
    decoded = label_reference(feature, t5_tokenizer, "seq2seq")
    assert "{" not in decoded and "~" not in decoded and decoded.split() == ["Zachary", "Taylor"]


def test_t5_targets_are_cut_at_the_released_128_tokens(t5_tokenizer):
    task = get_task("e2e_nlg")
    words = [f"w{i}" for i in range(300)]
    labels = t5_tokenizer(" ".join(words))["input_ids"]  # answer + EOS, > 128 tokens
    assert len(labels) > 128
    got = label_reference({"labels": labels}, t5_tokenizer, "seq2seq")
    expected = t5_tokenizer.decode(
        t5_tokenizer(" ".join(words), max_length=128, truncation=True)["input_ids"], skip_special_tokens=True
    )
    assert got == expected.strip() and len(t5_tokenizer(got)["input_ids"]) <= 128
    assert task.kind == "generation"
