"""Evaluation helpers: rank sharding and rank classification, the latter
against the backbone's own loss computed one example and one word at a time."""

from __future__ import annotations

import pytest
import torch

from dtvg_dist.model.backbone import BackboneSettings, load_backbone
from dtvg_dist.model.prompt import PromptedModel, SoftPrompt
from dtvg_dist.training.evaluation import answer_log_likelihood, rank_classify, shard_indices


@pytest.mark.parametrize("n,world", [(15, 2), (16, 4), (3, 4), (0, 2)])
def test_shards_cover_every_example_once_with_equal_lengths(n, world):
    shards = [shard_indices(n, rank, world) for rank in range(world)]
    assert len({len(s) for s in shards}) == 1
    real = sorted(i for s in shards for i in s if i >= 0)
    assert real == list(range(n))


@pytest.mark.parametrize("family", ["seq2seq", "causal"])
def test_rank_classification_matches_per_example_model_loss(tiny_checkpoints, family):
    backbone = load_backbone(BackboneSettings(name_or_path=str(tiny_checkpoints.path(family))), "cpu")
    tok = backbone.tokenizer
    torch.manual_seed(0)
    prompt = SoftPrompt(torch.randn(4, backbone.hidden_size))
    model = PromptedModel(backbone, prompt).eval()
    texts = ["the movie was good", "a bad plot", "it is not great and the actor was terrible"]
    features = [{"prompt_ids": tok(t, add_special_tokens=False)["input_ids"]} for t in texts]
    words = ["yes", "no", "positive"]
    pad = tok.pad_token_id
    got = rank_classify(model, features, words, tok, family, pad, torch.device("cpu"))

    expected, scores = [], []
    for feature in features:
        per_word = []
        for word in words:
            answer = tok(word, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            ids = feature["prompt_ids"] + ([] if family == "seq2seq" else answer)
            labels = answer if family == "seq2seq" else [-100] * len(feature["prompt_ids"]) + answer
            with torch.no_grad():
                out = model(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long),
                            labels=torch.tensor([labels]))
            per_word.append(-out.loss.item() * len(answer))  # mean NLL over the answer tokens
        scores.append(per_word)
        expected.append(words[max(range(len(words)), key=lambda i: (per_word[i], -i))])
    assert got == expected
    for w, word in enumerate(words):
        answer = tok(word, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        ll = answer_log_likelihood(model, features, answer, family, pad, torch.device("cpu"))
        torch.testing.assert_close(ll, torch.tensor([s[w] for s in scores]), atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("family", ["seq2seq", "causal"])
@pytest.mark.parametrize("answer_only", [True, False])
def test_answer_log_likelihood_equals_full_logits_f64(tiny_checkpoints, family, answer_only):
    """Scores from answer rows only equal the sum of log-softmax over full
    logits of each example alone (float64, 1e-10), with the switch on and off."""
    backbone = load_backbone(BackboneSettings(name_or_path=str(tiny_checkpoints.path(family))), "cpu")
    backbone.model.double()
    tok = backbone.tokenizer
    torch.manual_seed(1)
    prompt = SoftPrompt(torch.randn(4, backbone.hidden_size)).double()
    model = PromptedModel(backbone, prompt, answer_only_logits=answer_only).eval()
    texts = ["the movie was good", "a bad plot", "it is not great and the actor was terrible"]
    features = [{"prompt_ids": tok(t, add_special_tokens=False)["input_ids"]} for t in texts]
    answer = tok("positive negative", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    got = answer_log_likelihood(model, features, answer, family, tok.pad_token_id, torch.device("cpu"))

    expected = []
    with torch.no_grad():
        for feature in features:
            p = feature["prompt_ids"]
            if family == "seq2seq":
                start = backbone.model.config.decoder_start_token_id
                logits = model(torch.tensor([p]), torch.ones(1, len(p), dtype=torch.long),
                               decoder_input_ids=torch.tensor([[start] + answer[:-1]])).logits[0]
                rows = logits  # decoder position t predicts answer[t]
            else:
                ids = p + answer
                logits = model(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long)).logits[0]
                rows = logits[4 + len(p) - 1 : -1]  # prompt r=4 first; position j predicts j + 1
            logp = torch.log_softmax(rows, -1)
            expected.append(sum(logp[t, a] for t, a in enumerate(answer)))
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, torch.stack(expected), atol=1e-10, rtol=0)
