"""A small multi-task suite built in code, for the offline demo and the tiny
recipes: nothing to download, and grouping has something to find.

Every task asks a yes/no question about a short sentence holding one key
word from one of three domains (sentiment words, animals and foods, colours
and tools); a rule says, per domain it covers, which key words answer "yes".
The tasks differ only in their rule, so their prompts differ only in what
they steer the backbone to decide.

Two scenarios (the demo's `--scenario`):
- `two-sources` (the demo's main one, the paper's Figure 1 claim that the
  best transfer comes from a group, neither one source nor all):
  `syn_mix` (the target, few examples) mixes two domains, "yes" iff the key
  word is positive or an animal. Each half is taught by one source:
  `syn_same` (sentiment) and `syn_topic` (animal vs food). `syn_flip` and
  `syn_topic_flip` answer the opposite on each half (conflict), `syn_colour`
  asks about a third domain (unrelated).
- `one-source`: `syn_target` (sentiment only); `syn_same`, `syn_same_b`
  share its rule, `syn_flip`, `syn_flip_b` conflict, `syn_topic` is unrelated.
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
COLOURS = ("red", "blue", "green", "pink", "grey", "black", "white", "brown")
TOOLS = ("hammer", "knife", "spoon", "rope", "brush", "nail", "axe", "broom")
FILLER = ("the", "a", "it", "was", "and", "very", "so", "this", "that", "is", "day",
          "film", "meal", "place", "time", "we", "saw", "one", "really", "quite")
LABEL_WORDS = ("yes", "no")  # every task: label 0 = "yes", 1 = "no"

# a domain's key words: (the "yes" words of its plain rule, the "no" words)
DOMAINS = {
    "sentiment": (POSITIVE, NEGATIVE),
    "topic": (ANIMALS, FOODS),
    "colour": (COLOURS, TOOLS),
}
# a rule: per domain it asks about, +1 (the plain rule) or -1 (answers swapped)
RULE_SIGNS: dict[str, dict[str, int]] = {
    "sentiment": {"sentiment": 1},
    "flipped": {"sentiment": -1},
    "topic": {"topic": 1},
    "topic_flipped": {"topic": -1},
    "colour": {"colour": 1},
    "mixed": {"sentiment": 1, "topic": 1},
}
RULES = tuple(RULE_SIGNS)
# the key words a single-domain rule answers "yes" / "no" for
KEY_WORDS = {rule: DOMAINS[d] if sign > 0 else DOMAINS[d][::-1]
             for rule, signs in RULE_SIGNS.items() if len(signs) == 1 for d, sign in signs.items()}

TARGET = "syn_target"  # the one-source scenario's target
SOURCES = ("syn_same", "syn_same_b", "syn_flip", "syn_flip_b", "syn_topic")
MIX_TARGET = "syn_mix"  # the two-sources scenario's target
MIX_SOURCES = ("syn_same", "syn_topic", "syn_flip", "syn_topic_flip", "syn_colour")


def _sentence(rng: random.Random, key_word: str, n_filler: int) -> str:
    words = [rng.choice(FILLER) for _ in range(n_filler)]
    words.insert(rng.randrange(len(words) + 1), key_word)
    return " ".join(words)


def rule_rows(rule: str, n: int, seed: int) -> list[dict]:
    """n rows under `rule`; a rule over several domains draws each row's
    domain uniformly (a single-domain rule draws no domain, so its rows are
    the ones it always had)."""
    rng = random.Random(seed)
    signs = RULE_SIGNS[rule]
    domains = list(signs)
    rows = []
    for _ in range(n):
        domain = domains[0] if len(domains) == 1 else rng.choice(domains)
        label = rng.randrange(2)
        words = DOMAINS[domain] if signs[domain] > 0 else DOMAINS[domain][::-1]
        word = rng.choice(words[label])
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
    MIX_TARGET: ("mixed", 48, 96, 700),
    "syn_topic_flip": ("topic_flipped", 512, 96, 800),
    "syn_colour": ("colour", 512, 96, 900),
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
    texts = [*SPECS, "sentence :", *LABEL_WORDS, *POSITIVE, *NEGATIVE, *ANIMALS, *FOODS, *COLOURS,
             *TOOLS, *FILLER]
    return [t for text in texts for t in text.split()]


def vocabulary_hash() -> str:
    """Names cached tokenizers and backbones, so a changed suite never reuses them."""
    return hashlib.sha256(" ".join(vocabulary()).encode()).hexdigest()[:10]
