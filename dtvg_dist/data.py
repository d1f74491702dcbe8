"""Data: ATTEMPT-style splits, k-shot sampling, tokenisation and collators.

Split convention (ATTEMPT / Mahabadi et al. 2021, kept so scores compare with
the paper): a dataset with fewer than 10k training rows halves its original
validation set into validation and test; a larger one holds out 1,000
training rows as validation and tests on the original validation set. A
task whose hub test split is labelled keeps it as the test set. Permutations
use torch.randperm seeded like ATTEMPT's, so seed 42 gives ATTEMPT's rows.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from dtvg_dist.tasks import DataError, Task, load_original

__all__ = [
    "DataError",
    "DataSettings",
    "SMALL_DATASET",
    "HELD_OUT_VALIDATION",
    "load_splits",
    "split_rows",
    "k_shot_sample",
    "encode",
    "collate_train",
    "collate_generate",
    "generation_padding_side",
]

log = logging.getLogger("dtvg_dist.data")

SMALL_DATASET = 10_000  # fewer training rows than this: halve the validation set
HELD_OUT_VALIDATION = 1_000  # otherwise: training rows held out as validation
FAMILIES = ("seq2seq", "causal")
# data.template: how a causal (Llama) example is laid out; T5 ignores it.
# "dtvg-release" is the released code's (zpy2477/DTVG run_seq2seq.py,
# decoder_preprocess_function): f"{source} Label : ", then the answer as
# `tokenizer(target)` gives it, i.e. led by the tokenizer's BOS, then pad,
# which is EOS for Llama-3 (run_seq2seq.py sets pad_token_id = eos_token_id).
TEMPLATES = ("default", "dtvg-release")
RELEASE_SEPARATOR = " Label : "
Rows = list[dict[str, Any]]


@dataclass
class DataSettings:
    """The `data` config node. Plain types only, so OmegaConf can use it as a schema.

    k_shot: train on k class-balanced rows, validate on the original
    validation set (paper C.3). split_seed: fixes the validation/test
    partition for every run. max_train_examples overrides the task's cap;
    max_eval_examples caps validation and test (both for tiny runs).
    """

    local_dir: str | None = None
    paths: dict[str, str] = field(default_factory=dict)
    on_bad_row: str = "error"
    k_shot: int | None = None
    split_seed: int = 42
    max_train_examples: int | None = None
    max_eval_examples: int | None = None
    template: str = "default"  # causal input layout, one of TEMPLATES

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the offending `data.<key>`."""

        def positive(key: str) -> None:
            value = getattr(self, key)
            if value is None:
                return
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"data.{key} must be a positive integer or null, got {value!r}")

        if self.local_dir is not None and not isinstance(self.local_dir, str):
            raise ValueError(f"data.local_dir must be a path string or null, got {self.local_dir!r}")
        if not isinstance(self.paths, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.paths.items()
        ):
            raise ValueError(f"data.paths must map task names to path strings, got {self.paths!r}")
        if self.on_bad_row not in ("error", "skip"):
            raise ValueError(f"data.on_bad_row must be 'error' or 'skip', got {self.on_bad_row!r}")
        if isinstance(self.split_seed, bool) or not isinstance(self.split_seed, int):
            raise ValueError(f"data.split_seed must be an integer, got {self.split_seed!r}")
        for key in ("k_shot", "max_train_examples", "max_eval_examples"):
            positive(key)
        if self.template not in TEMPLATES:
            raise ValueError(f"data.template must be one of {', '.join(TEMPLATES)}, got {self.template!r}")

    @classmethod
    def coerce(cls, settings: DataSettings | Mapping[str, Any] | None) -> DataSettings:
        """Accept a DataSettings, a mapping (e.g. an OmegaConf DictConfig) or None."""
        if settings is None:
            return cls()
        if isinstance(settings, cls):
            settings.validate()
            return settings
        if isinstance(settings, Mapping):
            known = {f.name for f in fields(cls)}
            unknown = sorted(set(settings) - known)
            if unknown:
                raise ValueError(f"data.{unknown[0]} is not a data setting; known: {sorted(known)}")
            values = {k: settings[k] for k in settings}
            if values.get("paths") is not None:
                values["paths"] = dict(values["paths"])
            return cls(**values)
        raise TypeError(f"expected DataSettings or a mapping, got {type(settings).__name__}")


# ---- splits ----------------------------------------------------------------------
def _permutation(n: int, seed: int) -> list[int]:
    generator = torch.Generator()
    generator.manual_seed(seed)
    return torch.randperm(n, generator=generator).tolist()


def split_rows(original: Mapping[str, Rows], split_seed: int = 42) -> tuple[dict[str, Rows], str]:
    """Apply the split convention to original splits; returns (splits, rule applied)."""
    train = list(original["train"])
    validation = original.get("validation")
    test = original.get("test")
    if test is not None:
        if validation is not None:
            return {"train": train, "validation": list(validation), "test": list(test)}, "original splits"
        perm = _permutation(len(train), split_seed)
        return (
            {
                "train": [train[i] for i in perm[HELD_OUT_VALIDATION:]],
                "validation": [train[i] for i in perm[:HELD_OUT_VALIDATION]],
                "test": list(test),
            },
            f"{HELD_OUT_VALIDATION} training rows held out as validation; original test",
        )
    if validation is None:
        raise DataError("a task without a labelled test split needs a validation split")
    if len(train) < SMALL_DATASET:
        perm = _permutation(len(validation), split_seed)
        half = len(validation) // 2
        return (
            {
                "train": train,
                "validation": [validation[i] for i in perm[:half]],
                "test": [validation[i] for i in perm[half:]],
            },
            f"fewer than {SMALL_DATASET} training rows: original validation halved into validation/test",
        )
    perm = _permutation(len(train), split_seed)
    return (
        {
            "train": [train[i] for i in perm[HELD_OUT_VALIDATION:]],
            "validation": [train[i] for i in perm[:HELD_OUT_VALIDATION]],
            "test": list(validation),
        },
        f"{HELD_OUT_VALIDATION} training rows held out as validation; original validation as test",
    )


def k_shot_sample(task: Task, rows: Sequence[dict], k: int, seed: int) -> Rows:
    """k rows, class-balanced for classification (class counts differ by at most one
    while every class has rows left), random otherwise; seeded and shuffled."""
    if k > len(rows):
        raise DataError(f"task '{task.name}': k_shot={k} but only {len(rows)} training rows")
    generator = torch.Generator()
    generator.manual_seed(seed)
    if not task.is_classification:
        picked = torch.randperm(len(rows), generator=generator)[:k].tolist()
        return [rows[i] for i in picked]
    by_class: dict[int, list[int]] = {}
    for i, row in enumerate(rows):
        by_class.setdefault(task.label_index(row), []).append(i)
    queues = {
        c: [idx[j] for j in torch.randperm(len(idx), generator=generator).tolist()]
        for c, idx in sorted(by_class.items())
    }
    classes = sorted(queues)
    order = [classes[j] for j in torch.randperm(len(classes), generator=generator).tolist()]
    picked: list[int] = []
    while len(picked) < k:
        for c in order:
            if queues[c] and len(picked) < k:
                picked.append(queues[c].pop())
    picked = [picked[j] for j in torch.randperm(len(picked), generator=generator).tolist()]
    return [rows[i] for i in picked]


def _cap(rows: Rows, limit: int | None, seed: int) -> Rows:
    """A seeded subset of `limit` rows, kept in their original order."""
    if limit is None or len(rows) <= limit:
        return rows
    keep = sorted(_permutation(len(rows), seed)[:limit])
    return [rows[i] for i in keep]


def load_splits(
    task: Task, settings: DataSettings | Mapping[str, Any] | None = None, seed: int | None = None
) -> dict[str, Rows]:
    """Raw hub-schema rows for "train", "validation" and "test".

    `seed` draws the k-shot sample (default: settings.split_seed); the
    validation/test partition always uses settings.split_seed, so runs with
    different seeds are scored on the same rows.
    """
    cfg = DataSettings.coerce(settings)
    original = load_original(task, cfg.local_dir, cfg.paths, cfg.on_bad_row)
    sizes = {k: len(v) for k, v in original.items()}
    try:
        splits, rule = split_rows(original, cfg.split_seed)
    except DataError as err:
        raise DataError(f"task '{task.name}': {err}") from err
    if cfg.k_shot is not None:
        sample_seed = cfg.split_seed if seed is None else seed
        # Without an original validation set the held-out rows must stay out of the pool.
        pool = original["train"] if "validation" in original else splits["train"]
        splits["train"] = k_shot_sample(task, pool, cfg.k_shot, sample_seed)
        if "validation" in original:
            # Paper C.3: evaluate on the original validation set; report on the original
            # test set, which is that same validation set when no labelled test exists.
            splits["validation"] = list(original["validation"])
            splits["test"] = list(original.get("test", original["validation"]))
        rule = f"{cfg.k_shot}-shot (seed {sample_seed}) from the original train; " + (
            "original validation" if "validation" in original else rule
        )
    else:
        train_cap = cfg.max_train_examples if cfg.max_train_examples is not None else task.max_train_examples
        splits["train"] = _cap(splits["train"], train_cap, cfg.split_seed)
    for name in ("validation", "test"):
        splits[name] = _cap(splits[name], cfg.max_eval_examples, cfg.split_seed)
    log.info(
        "task %s: train=%d validation=%d test=%d (original %s; %s; split_seed %d)",
        task.name, len(splits["train"]), len(splits["validation"]), len(splits["test"]),
        ", ".join(f"{k}={v}" for k, v in sizes.items()), rule, cfg.split_seed,
    )
    return splits


# ---- tokenisation -------------------------------------------------------------------
def _added_prefix(tokenizer: Any) -> list[int]:
    """The ids the tokenizer itself puts before a text (Llama-3: BOS; T5: none)."""
    bare = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return list(full[:start])
    return []


def generation_padding_side(family: str) -> str:
    """Decoder-only models generate from the right end, so their prompts pad on the left."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    return "left" if family == "causal" else "right"


def encode(
    task: Task, rows: Sequence[dict], tokenizer: Any, family: str, template: str = "default"
) -> list[dict[str, Any]]:
    """Tokenise rows for training and generation; only the source is ever truncated.

    seq2seq (T5): input_ids = source + EOS, labels = target + EOS.
    causal (Llama): input_ids = [BOS] + source + "\\n" + answer + EOS, labels
    -100 except answer + EOS; prompt_ids stop before the answer. Source and
    answer are tokenised separately so the answer ids match what is generated.
    template="dtvg-release" (causal only): [BOS] + source + " Label : " +
    [BOS] + answer + EOS, as the authors' released code.
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    if template not in TEMPLATES:
        raise ValueError(f"data.template must be one of {', '.join(TEMPLATES)}, got {template!r}")
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError(f"tokenizer {type(tokenizer).__name__} defines no eos_token_id")
    prefix = _added_prefix(tokenizer)
    release = template == "dtvg-release" and family == "causal"
    sep_text = RELEASE_SEPARATOR if release else "\n"
    sep = tokenizer(sep_text, add_special_tokens=False)["input_ids"] if family == "causal" else []
    answer_prefix = list(prefix) if release else []
    budget = task.max_source_length - len(prefix) - (len(sep) if family == "causal" else 1)
    if budget < 1:
        raise ValueError(f"task '{task.name}': max_source_length={task.max_source_length} leaves no room for text")
    pairs = [task.format(row) for row in rows]
    if not pairs:
        return []
    sources = tokenizer([s for s, _ in pairs], add_special_tokens=False)["input_ids"]
    targets = tokenizer([t for _, t in pairs], add_special_tokens=False)["input_ids"]
    features: list[dict[str, Any]] = []
    truncated = long_answers = 0
    for row, src, tgt in zip(rows, sources, targets, strict=True):
        truncated += len(src) > budget
        long_answers += len(tgt) + 1 > task.max_target_length
        answer = answer_prefix + list(tgt) + [eos]
        if family == "seq2seq":
            input_ids = prefix + list(src[:budget]) + [eos]
            features.append(
                {"input_ids": input_ids, "labels": answer, "prompt_ids": input_ids, "reference": task.reference(row)}
            )
        else:
            prompt = prefix + list(src[:budget]) + list(sep)
            features.append(
                {
                    "input_ids": prompt + answer,
                    "labels": [-100] * len(prompt) + answer,
                    "prompt_ids": prompt,
                    "reference": task.reference(row),
                }
            )
    if truncated:
        log.info("task %s: truncated %d/%d sources to %d tokens", task.name, truncated, len(rows), task.max_source_length)
    if long_answers:
        log.warning(
            "task %s: %d answer(s) longer than max_target_length=%d were kept whole",
            task.name, long_answers, task.max_target_length,
        )
    return features


# ---- collators ----------------------------------------------------------------------
def _pad(seqs: Sequence[Sequence[int]], value: int, side: str = "right") -> torch.Tensor:
    width = max(len(s) for s in seqs)
    out = torch.full((len(seqs), width), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        if len(s):
            if side == "right":
                out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
            else:
                out[i, width - len(s) :] = torch.as_tensor(s, dtype=torch.long)
    return out


def padding_id(tokenizer: Any) -> int:
    """The id batches pad with: the tokenizer's pad token, else its EOS
    (Llama-3 ships no pad token)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ValueError(f"tokenizer {type(tokenizer).__name__} defines neither a pad nor an eos token")
    return int(pad)


def _check_batch(features: Sequence[dict], pad_token_id: int | None) -> int:
    if not features:
        raise ValueError("cannot collate an empty batch")
    if pad_token_id is None:
        raise ValueError("pad_token_id is None; tokenizers without a pad token (Llama) can pass eos_token_id")
    return int(pad_token_id)


def collate_train(features: Sequence[dict], pad_token_id: int | None) -> dict[str, torch.Tensor]:
    """Right-padded input_ids / attention_mask / labels (labels padded with -100)."""
    pad = _check_batch(features, pad_token_id)
    ids = [f["input_ids"] for f in features]
    mask = [[1] * len(s) for s in ids]
    return {
        "input_ids": _pad(ids, pad),
        "attention_mask": _pad(mask, 0),
        "labels": _pad([f["labels"] for f in features], -100),
    }


def collate_generate(features: Sequence[dict], pad_token_id: int | None, padding_side: str) -> dict[str, Any]:
    """Padded prompt_ids as input_ids / attention_mask, plus the references (a list)."""
    pad = _check_batch(features, pad_token_id)
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    ids = [f["prompt_ids"] for f in features]
    return {
        "input_ids": _pad(ids, pad, padding_side),
        "attention_mask": _pad([[1] * len(s) for s in ids], 0, padding_side),
        "references": [f["reference"] for f in features],
    }
