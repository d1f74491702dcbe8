"""A small multi-task suite built in code, for the offline demo and the tiny
recipes: nothing to download, and grouping has something to find.

Every task maps a short sentence holding one key word to a label word:
- `syn_target` (the target, few examples): "positive" iff the key word is a
  positive word, "negative" iff it is a negative one;
- `syn_same` and `syn_same_b`: the target's rule on other sentences (share it);
- `syn_flip`: the same kind of sentences with the answers swapped (conflicts);
- `syn_topic`: an unrelated rule and words (animal -> "animal", food -> "food").
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

from dtvg_dist.tasks import Task, get_task, register_task

POSITIVE = ("good", "great", "fine", "nice", "happy", "lovely", "superb", "bright")
NEGATIVE = ("bad", "awful", "poor", "sad", "ugly", "nasty", "grim", "dull")
ANIMALS = ("cat", "dog", "horse", "bird", "fish", "mouse", "cow", "sheep")
FOODS = ("bread", "rice", "soup", "cake", "apple", "cheese", "pasta", "salad")
FILLER = ("the", "a", "it", "was", "and", "very", "so", "this", "that", "is", "day",
          "film", "meal", "place", "time", "we", "saw", "one", "really", "quite")
SENTIMENT_WORDS = ("positive", "negative")
TOPIC_WORDS = ("animal", "food")
LABEL_WORDS = SENTIMENT_WORDS + TOPIC_WORDS

TARGET = "syn_target"
SOURCES = ("syn_same", "syn_same_b", "syn_flip", "syn_topic")


def _sentence(rng: random.Random, key_word: str, n_filler: int) -> str:
    words = [rng.choice(FILLER) for _ in range(n_filler)]
    words.insert(rng.randrange(len(words) + 1), key_word)
    return " ".join(words)


def _rows(rule: str, n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.randrange(2)
        if rule == "topic":
            word = rng.choice(ANIMALS if label == 0 else FOODS)
        else:
            positive = label == 0 if rule == "sentiment" else label == 1
            word = rng.choice(POSITIVE if positive else NEGATIVE)
        rows.append({"sentence": _sentence(rng, word, rng.randint(3, 7)), "label": label})
    return rows


def _builder(rule: str, n_train: int, n_val: int, seed: int) -> Callable[[], dict[str, list[dict]]]:
    def build() -> dict[str, list[dict]]:
        return {"train": _rows(rule, n_train, seed), "validation": _rows(rule, n_val, seed + 1)}

    return build


SPECS = {
    TARGET: ("sentiment", 48, 96, 100),
    "syn_same": ("sentiment", 512, 96, 200),
    "syn_same_b": ("sentiment", 512, 96, 300),
    "syn_flip": ("flipped", 512, 96, 400),
    "syn_topic": ("topic", 512, 96, 500),
}


def synthetic_tasks() -> list[Task]:
    return [
        Task(
            name=name,
            benchmark="synthetic",
            kind="classification",
            fields=(("sentence", "sentence"),),
            label_words=TOPIC_WORDS if rule == "topic" else SENTIMENT_WORDS,
            primary_metric="accuracy",
            metrics=("accuracy",),
            max_source_length=32,
            builtin_rows=_builder(rule, n_train, n_val, seed),
        )
        for name, (rule, n_train, n_val, seed) in SPECS.items()
    ]


def register_synthetic_tasks() -> None:
    """Idempotent: the demo, the tiny recipes and tests may all call it."""
    for task in synthetic_tasks():
        try:
            get_task(task.name)
        except (KeyError, ValueError):
            register_task(task)


def vocabulary() -> list[str]:
    """Every text the suite can produce (prefixes, field names, words, labels)."""
    texts = [*SPECS, "sentence :", *LABEL_WORDS, *INSTRUCTIONS.values(), *POSITIVE, *NEGATIVE, *ANIMALS, *FOODS, *FILLER]
    return [t for text in texts for t in text.split()]


def vocabulary_hash() -> str:
    """Names cached tokenizers and backbones, so a changed suite never reuses them."""
    import hashlib

    return hashlib.sha256(" ".join(vocabulary()).encode()).hexdigest()[:10]


def ensure_tokenizer(folder: Path) -> Path:
    """Build (once) and save the suite's word-level tokenizer; returns its folder."""
    from dtvg_dist.toy_tokenizer import build_toy_tokenizer

    if not (folder / "tokenizer.json").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        build_toy_tokenizer(vocabulary(), str(folder))
    return folder


# ---------------------------------------------------------------- backbone
# A frozen random network gives a soft prompt almost nothing to steer, so the
# demo's backbone is first taught the suite's three rules behind instruction
# words (as a real LM is pretrained before prompt tuning): "judge"
# (sentiment), "invert" (flipped) and "classify" (topic). Without an
# instruction the sentiment answer is ambiguous, so prompt tuning has to find
# an instruction-like prompt; tasks that share a rule find similar ones,
# which is what DTVG's grouping should discover.
INSTRUCTIONS = {"sentiment": "judge", "flipped": "invert", "topic": "classify"}
PRETRAINING_VERSION = 1  # bump when the pretraining recipe below changes


def _pretraining_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    pairs = []
    for i in range(n):
        rule = list(INSTRUCTIONS)[i % len(INSTRUCTIONS)]
        row = _rows(rule, 1, rng.randrange(1 << 30))[0]
        words = TOPIC_WORDS if rule == "topic" else SENTIMENT_WORDS
        pairs.append((f"{INSTRUCTIONS[rule]} sentence: {row['sentence']}", words[row["label"]]))
    return pairs


def ensure_pretrained_backbone(
    folder: Path, config: dict, steps: int = 300, batch_size: int = 32, seed: int = 0, lr: float = 1e-3
) -> Path:
    """Build (once) a small seq2seq model from `config`, teach it the three
    rules behind their instruction words, and save it with its tokenizer as
    a local checkpoint that `from_pretrained` loads."""
    import torch
    from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer

    if (folder / "config.json").is_file():
        return folder
    ensure_tokenizer(folder)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    params = dict(config)
    model_type = params.pop("model_type")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForSeq2SeqLM.from_config(AutoConfig.for_model(model_type, **params))
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
        pairs = _pretraining_pairs(steps * batch_size, seed)
        model.train()
        for step in range(steps):
            batch = pairs[step * batch_size : (step + 1) * batch_size]
            enc = tokenizer([s for s, _ in batch], return_tensors="pt", padding=True)
            labels = tokenizer([t for _, t in batch], return_tensors="pt", padding=True).input_ids
            labels[labels == tokenizer.pad_token_id] = -100
            loss = model(**enc, labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    tmp = folder.with_name(folder.name + ".tmp")
    model.save_pretrained(str(tmp))
    for name in tmp.iterdir():
        name.replace(folder / name.name)
    tmp.rmdir()
    return folder
