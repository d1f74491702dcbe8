"""The synthetic suite: each task follows its rule, the conflicting tasks
disagree with the target on every sentence, and the taught backbone's
prefixes carry their instruction only in the mean row."""

from __future__ import annotations

import pytest
import torch

from dtvg_dist.model import synthetic as syn
from dtvg_dist.tasks import synthetic as task_syn

KEYS = {word: (domain, polarity) for domain, words in task_syn.DOMAINS.items()
        for polarity, group in enumerate(words) for word in group}  # polarity 0: the plain rule's "yes"


@pytest.mark.parametrize("name", list(task_syn.SPECS))
def test_every_row_follows_its_task_rule(name: str) -> None:
    rule, n_train, n_val, _ = task_syn.SPECS[name]
    rows = task_syn.synthetic_tasks()[list(task_syn.SPECS).index(name)].builtin_rows()
    assert len(rows["train"]) == n_train and len(rows["validation"]) == n_val
    signs = task_syn.RULE_SIGNS[rule]
    seen = set()
    for row in rows["train"] + rows["validation"]:
        keys = set(row["sentence"].split()) & set(KEYS)
        assert len(keys) == 1, row  # one key word per sentence, the rest filler
        domain, polarity = KEYS[keys.pop()]
        assert domain in signs, row  # only the rule's domains
        assert row["label"] == (polarity if signs[domain] > 0 else 1 - polarity), row
        seen.add(domain)
    assert seen == set(signs)  # a mixed rule's rows cover both of its domains


def test_the_roles_of_the_sources() -> None:
    rules = {name: spec[0] for name, spec in task_syn.SPECS.items()}
    assert rules[task_syn.TARGET] == "sentiment"
    assert [s for s in task_syn.SOURCES if rules[s] == "sentiment"] == ["syn_same", "syn_same_b"]
    assert [s for s in task_syn.SOURCES if rules[s] == "flipped"] == ["syn_flip", "syn_flip_b"]
    # the conflicting rule answers the opposite on every sentence the target's rule answers
    assert task_syn.KEY_WORDS["flipped"] == task_syn.KEY_WORDS["sentiment"][::-1]
    # the unrelated rule shares no key word with the target's
    topic = set(task_syn.KEY_WORDS["topic"][0] + task_syn.KEY_WORDS["topic"][1])
    assert not topic & set(task_syn.POSITIVE + task_syn.NEGATIVE)
    assert task_syn.SPECS[task_syn.TARGET][1] < min(task_syn.SPECS[s][1] for s in task_syn.SOURCES)  # low-resource
    # two-sources: the target's rule is the union of two sources' rules, each
    # conflicting source is one of them swapped, the unrelated one another domain
    mix = task_syn.RULE_SIGNS[rules[task_syn.MIX_TARGET]]
    by_source = {s: task_syn.RULE_SIGNS[rules[s]] for s in task_syn.MIX_SOURCES}
    assert by_source["syn_same"] | by_source["syn_topic"] == mix and len(mix) == 2
    assert {k: -v for k, v in by_source["syn_flip"].items()} == by_source["syn_same"]
    assert {k: -v for k, v in by_source["syn_topic_flip"].items()} == by_source["syn_topic"]
    assert not set(by_source["syn_colour"]) & set(mix)
    assert task_syn.SPECS[task_syn.MIX_TARGET][1] < min(task_syn.SPECS[s][1] for s in task_syn.MIX_SOURCES)


def test_instruction_lives_in_the_mean_prefix_row(monkeypatch) -> None:
    """With the uninformative parts switched off, the mean row of every
    prefix is exactly the sum of sign * strength * direction over its
    components (float64 reference), while single rows differ from it (the
    instruction is spread at random)."""
    monkeypatch.setattr(syn, "WORD_SCALE", 0.0)
    monkeypatch.setattr(syn, "NOISE", 0.0)
    embed = torch.nn.Embedding(20, 16)
    dirs = syn.instruction_directions(16, seed=0)
    d64 = {k: v.double() for k, v in dirs.items()}
    gram = torch.stack(list(d64.values())) @ torch.stack(list(d64.values())).T
    torch.testing.assert_close(gram, torch.eye(len(d64), dtype=torch.float64), atol=1e-6, rtol=0)
    instructions = [syn.INSTRUCTIONS[r] for r in ("sentiment", "flipped", "topic", "mixed")] + [{}]
    prefix = syn._pretraining_prefix(embed, instructions, dirs, torch.Generator().manual_seed(3)).detach().double()
    assert prefix.shape == (5, syn.PREFIX_ROWS, 16)
    mean = prefix.mean(dim=1)
    for i, signs in enumerate(instructions):
        if not signs:
            assert torch.count_nonzero(prefix[i]) == 0
            continue
        expected = torch.zeros(16, dtype=torch.float64)
        for domain, sign in signs.items():
            strength = float(mean[i] @ d64[domain]) * sign
            assert syn.STRENGTH[0] <= strength <= syn.STRENGTH[1]
            expected += sign * strength * d64[domain]
            assert float((prefix[i] @ d64[domain]).std()) > 0.1  # rows differ
        torch.testing.assert_close(mean[i], expected, atol=1e-5, rtol=0)


def test_pretraining_answers_follow_the_sentence_domain_component() -> None:
    """The answer is the key word's domain's rule, swapped for a negative
    component, and a coin flip without one; the other domains' components
    (present in some rows) do not enter it."""
    rows = syn._pretraining_rows(3000, seed=5)
    free, others = [], 0
    for signs, text, answer in rows:
        domain, polarity = KEYS[(set(text.split()) & set(KEYS)).pop()]
        label = task_syn.LABEL_WORDS.index(answer)
        others += bool(set(signs) - {domain})
        if domain in signs:
            assert label == (polarity if signs[domain] > 0 else 1 - polarity), (signs, text, answer)
        else:
            free.append(label == polarity)
    assert 0.15 < len(free) / len(rows) < 0.35 and 0.4 < sum(free) / len(free) < 0.6  # coin flips
    assert others > 0.1 * len(rows)


def test_pretrained_backbone_is_built_once_and_loads(tmp_path) -> None:
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    config = {"model_type": "t5", "vocab_size": 96, "d_model": 16, "d_kv": 4, "d_ff": 32,
              "num_layers": 1, "num_decoder_layers": 1, "num_heads": 2, "decoder_start_token_id": 0,
              "pad_token_id": 0, "eos_token_id": 1}
    folder = syn.ensure_pretrained_backbone(tmp_path / "bb", config, steps=3, batch_size=4)
    model = AutoModelForSeq2SeqLM.from_pretrained(str(folder))
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    assert tokenizer.convert_tokens_to_ids("yes") != tokenizer.unk_token_id
    assert model.config.d_model == 16
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    syn.ensure_pretrained_backbone(folder, config, steps=3, batch_size=4)  # cached: not rebuilt
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    assert not (tmp_path / "bb.tmp").exists()


def test_perturbations_name_their_checkpoint_and_move_the_weights(tmp_path, monkeypatch) -> None:
    from safetensors.torch import load_file

    config = {"model_type": "t5", "vocab_size": 96, "d_model": 16, "d_kv": 4, "d_ff": 32,
              "num_layers": 1, "num_decoder_layers": 1, "num_heads": 2, "decoder_start_token_id": 0,
              "pad_token_id": 0, "eos_token_id": 1}
    for name in (syn.TEACH_DTYPE_ENV, syn.WEIGHT_NOISE_ENV, syn.NOISE_SEED_ENV):
        monkeypatch.delenv(name, raising=False)
    plain = syn.ensure_pretrained_backbone(tmp_path / "bb", config, steps=3, batch_size=4)
    assert plain == tmp_path / "bb"
    monkeypatch.setenv(syn.WEIGHT_NOISE_ENV, "1e-6")
    noisy = syn.ensure_pretrained_backbone(tmp_path / "bb", config, steps=3, batch_size=4)
    assert noisy.name == "bb-weight_noise=1e-06"
    a, b = (load_file(str(f / "model.safetensors")) for f in (plain, noisy))
    for key in a:  # float32 rounding of w * (1 + 1e-6 n): relative change about 1e-6
        rel = float((b[key].double() - a[key].double()).norm() / a[key].double().norm())
        assert 3e-7 < rel < 3e-6, (key, rel)
    monkeypatch.delenv(syn.WEIGHT_NOISE_ENV)
    monkeypatch.setenv(syn.TEACH_DTYPE_ENV, "float64")  # the default teaches in float32
    wide = syn.ensure_pretrained_backbone(tmp_path / "bb", config, steps=3, batch_size=4)
    assert wide.name == "bb-teach_dtype=float64"
    c = load_file(str(wide / "model.safetensors"))
    assert all(t.dtype == torch.float32 for t in c.values())
    moved = [float((c[k] - a[k]).abs().max()) for k in a]
    assert 0 < max(moved) < 1e-3  # the same teaching, other rounding
    monkeypatch.setenv(syn.TEACH_DTYPE_ENV, "float16")
    with pytest.raises(ValueError, match="DTVG_DEMO_TEACH_DTYPE='float16'"):
        syn.teaching_perturbation()
    monkeypatch.setenv(syn.TEACH_DTYPE_ENV, "float32")
    monkeypatch.setenv(syn.WEIGHT_NOISE_ENV, "tiny")
    with pytest.raises(ValueError, match="DTVG_DEMO_WEIGHT_NOISE='tiny' is not a number"):
        syn.teaching_perturbation()
