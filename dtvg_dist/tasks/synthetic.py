"""A small multi-task suite built in code, for the offline demo and the tiny
recipes: nothing to download, and grouping has something to find.

Every task asks a yes/no question about a short sentence holding one key
word; the tasks differ only in their rule, so their prompts differ only in
what they steer the backbone to decide:
- `syn_target` (the target, few examples): "yes" iff the key word is positive;
- `syn_same`, `syn_same_b`: the target's rule, on other sentences (share it);
- `syn_flip`, `syn_flip_b`: "yes" iff the key word is negative (conflict
  with the target);
- `syn_topic`: "yes" iff the key word is an animal, on sentences about
  animals and food (unrelated).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterable

from dtvg_dist.tasks.base import Task
from dtvg_dist.tasks.registry import get_task, register_task

POSITIVE = ("good", "great", "fine", "nice", "happy", "lovely", "superb", "bright")
NEGATIVE = ("bad", "awful", "poor", "sad", "ugly", "nasty", "grim", "dull")
ANIMALS = ("cat", "dog", "horse", "bird", "fish", "mouse", "cow", "sheep")
FOODS = ("bread", "rice", "soup", "cake", "apple", "cheese", "pasta", "salad")
FILLER = ("the", "a", "it", "was", "and", "very", "so", "this", "that", "is", "day",
          "film", "meal", "place", "time", "we", "saw", "one", "really", "quite")
LABEL_WORDS = ("yes", "no")  # every task: label 0 = "yes", 1 = "no"

TARGET = "syn_target"
SOURCES = ("syn_same", "syn_same_b", "syn_flip", "syn_flip_b", "syn_topic")
RULES = ("sentiment", "flipped", "topic")
# the key words a rule answers "yes" / "no" for
KEY_WORDS = {
    "sentiment": (POSITIVE, NEGATIVE),
    "flipped": (NEGATIVE, POSITIVE),
    "topic": (ANIMALS, FOODS),
}


def _sentence(rng: random.Random, key_word: str, n_filler: int) -> str:
    words = [rng.choice(FILLER) for _ in range(n_filler)]
    words.insert(rng.randrange(len(words) + 1), key_word)
    return " ".join(words)


def rule_rows(rule: str, n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.randrange(2)
        word = rng.choice(KEY_WORDS[rule][label])
        rows.append({"sentence": _sentence(rng, word, rng.randint(3, 7)), "label": label})
    return rows


def _builder(rule: str, n_train: int, n_val: int, seed: int) -> Callable[[], dict[str, list[dict]]]:
    def build() -> dict[str, list[dict]]:
        return {"train": rule_rows(rule, n_train, seed), "validation": rule_rows(rule, n_val, seed + 1)}

    return build


# name: (rule, training rows, validation rows (halved into validation and
# test by the split convention), data seed)
SPECS = {
    TARGET: ("sentiment", 48, 96, 100),
    "syn_same": ("sentiment", 512, 96, 200),
    "syn_same_b": ("sentiment", 512, 96, 300),
    "syn_flip": ("flipped", 512, 96, 400),
    "syn_flip_b": ("flipped", 512, 96, 600),
    "syn_topic": ("topic", 512, 96, 500),
}


def synthetic_tasks() -> list[Task]:
    return [
        Task(
            name=name,
            benchmark="synthetic",
            kind="classification",
            fields=(("sentence", "sentence"),),
            label_words=LABEL_WORDS,
            primary_metric="accuracy",
            metrics=("accuracy",),
            max_source_length=32,
            builtin_rows=_builder(rule, n_train, n_val, seed),
        )
        for name, (rule, n_train, n_val, seed) in SPECS.items()
    ]


def register_if_named(task_names: Iterable[object]) -> bool:
    """Register the suite when any of `task_names` is one of its tasks: the one
    "does this recipe use synthetic tasks" check (pipeline, planner, data check)."""
    if any(str(name) in SPECS for name in task_names):
        register_synthetic_tasks()
        return True
    return False


def register_synthetic_tasks() -> None:
    """Idempotent: the demo, the tiny recipes and tests may all call it."""
    for task in synthetic_tasks():
        try:
            get_task(task.name)
        except (KeyError, ValueError):
            register_task(task)


def vocabulary() -> list[str]:
    """Every text the suite can produce (prefixes, field names, words, labels)."""
    texts = [*SPECS, "sentence :", *LABEL_WORDS, *POSITIVE, *NEGATIVE, *ANIMALS, *FOODS, *FILLER]
    return [t for text in texts for t in text.split()]


def vocabulary_hash() -> str:
    """Names cached tokenizers and backbones, so a changed suite never reuses them."""
    return hashlib.sha256(" ".join(vocabulary()).encode()).hexdigest()[:10]
