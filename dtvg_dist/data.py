"""Data: the paper's split protocol, k-shot sampling, tokenisation and collators.

Split protocol (ATTEMPT's attempt/data/tasks.py, `AbstractTask.get` with
split_validation_test=True, which the paper says it follows): each task
names its rule (`Task.split_rule`). "halve": train as is, the hub
validation split halved into validation and test (ATTEMPT's
`small_datasets_without_all_splits`); "hold_out": 1,000 training rows held
out as validation, test = the task's `test_split` (ATTEMPT's
`large_data_without_all_splits`); "hub": the hub's splits as they are;
"auto" (user tasks): by size, as below. Permutations use torch.randperm
seeded like ATTEMPT's `shuffled_indices`, so split_seed 42 gives ATTEMPT's
rows. Few-shot runs replace only the training split by k rows, so selection
(validation) and reporting (test) stay on disjoint rows.

`python -m dtvg_dist.data check|download ...` is the data preflight and the
offline mirror (dtvg_dist.tasks.cli).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from dtvg_dist.tasks import DataError, Task
from dtvg_dist.tasks.base import SELECT_BY
from dtvg_dist.tasks.rowtable import RowTable
from dtvg_dist.tasks.sources import Source, read_original

__all__ = [
    "DataError",
    "DataSettings",
    "K_SHOT_SAMPLING",
    "SMALL_DATASET",
    "HELD_OUT_VALIDATION",
    "Prepared",
    "prepare_splits",
    "load_splits",
    "split_rows",
    "apply_split_rule",
    "k_shot_sample",
    "encode",
    "collate_train",
    "collate_generate",
    "generation_padding_side",
]

log = logging.getLogger("dtvg_dist.data")

SMALL_DATASET = 10_000  # "auto" rule: fewer training rows than this halves the validation set
HELD_OUT_VALIDATION = 1_000  # training rows held out as validation (ATTEMPT: validation_size=1000)
FAMILIES = ("seq2seq", "causal")
# data.template: how a causal (Llama) example is laid out; T5 ignores it.
# "dtvg-release" is the released code's (zpy2477/DTVG run_seq2seq.py,
# decoder_preprocess_function): f"{source} Label : ", then the answer as
# `tokenizer(target)` gives it, i.e. led by the tokenizer's BOS, then pad,
# which is EOS for Llama-3 (run_seq2seq.py sets pad_token_id = eos_token_id).
TEMPLATES = ("default", "dtvg-release")
RELEASE_SEPARATOR = " Label : "
# random: ATTEMPT's `subsample` (the released DTVG code passes k as n_obs):
# the first k of a seeded permutation of the training split. per_class: DePT's
# train.py (k // n_classes rows per label, STS-B binarised at 2.5).
K_SHOT_SAMPLING = ("random", "per_class")
Rows = list[dict[str, Any]]


@dataclass
class DataSettings:
    """The `data` config node. Plain types only, so OmegaConf can use it as a schema.

    k_shot: train on k rows drawn with the run seed (`k_shot_sampling`);
    validation and test are the protocol's (paper C.3, Table 8's halves).
    split_seed: fixes the validation/test partition for every run.
    max_train_examples overrides the task's cap; max_eval_examples caps
    validation and test (both for tiny runs). select_by: how checkpoints
    are chosen on validation ("primary" metric, or the "mean" of the task's
    metrics as the released DTVG code does). attempt_quirks: reproduce
    ATTEMPT's WinoGrande input bug. revisions: task -> hub revision (a
    branch or a commit hash) to pin. cache_dir: where tokenized splits are
    kept as Arrow files (default: $DTVG_DATA_CACHE, else runs/.cache/tokenized;
    see dtvg_dist.tokenized).
    """

    local_dir: str | None = None
    paths: dict[str, str] = field(default_factory=dict)
    on_bad_row: str = "error"
    k_shot: int | None = None
    k_shot_sampling: str = "random"
    split_seed: int = 42
    max_train_examples: int | None = None
    max_eval_examples: int | None = None
    template: str = "default"  # causal input layout, one of TEMPLATES
    select_by: str = "primary"
    attempt_quirks: bool = False
    revisions: dict[str, str] = field(default_factory=dict)
    cache_dir: str | None = None

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

        def str_map(key: str, what: str) -> None:
            value = getattr(self, key)
            if not isinstance(value, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in value.items()
            ):
                raise ValueError(f"data.{key} must map task names to {what}, got {value!r}")

        if self.local_dir is not None and not isinstance(self.local_dir, str):
            raise ValueError(f"data.local_dir must be a path string or null, got {self.local_dir!r}")
        if self.cache_dir is not None and (not isinstance(self.cache_dir, str) or not self.cache_dir.strip()):
            raise ValueError(f"data.cache_dir must be a path string or null, got {self.cache_dir!r}")
        str_map("paths", "path strings")
        str_map("revisions", "hub revisions (branch names or commit hashes)")
        if self.on_bad_row not in ("error", "skip"):
            raise ValueError(f"data.on_bad_row must be 'error' or 'skip', got {self.on_bad_row!r}")
        if self.k_shot_sampling not in K_SHOT_SAMPLING:
            raise ValueError(f"data.k_shot_sampling must be one of {K_SHOT_SAMPLING}, got {self.k_shot_sampling!r}")
        if self.select_by not in SELECT_BY:
            raise ValueError(f"data.select_by must be one of {SELECT_BY}, got {self.select_by!r}")
        if not isinstance(self.attempt_quirks, bool):
            raise ValueError(f"data.attempt_quirks must be true or false, got {self.attempt_quirks!r}")
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
            for key in ("paths", "revisions"):
                if values.get(key) is not None:
                    values[key] = dict(values[key])
            return cls(**values)
        raise TypeError(f"expected DataSettings or a mapping, got {type(settings).__name__}")


# ---- splits ----------------------------------------------------------------------
def _permutation(n: int, seed: int) -> list[int]:
    """ATTEMPT's `shuffled_indices`: torch.randperm with a generator seeded `seed`."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    return torch.randperm(n, generator=generator).tolist()


def _select(rows: Any, indices: Sequence[int]) -> Any:
    """The rows at `indices`, in that order (a RowTable selects without copying)."""
    if isinstance(rows, RowTable):
        return rows.take(indices)
    return [rows[i] for i in indices]


def _whole(rows: Any) -> Any:
    return rows if isinstance(rows, RowTable) else list(rows)


def _halve(train: Any, validation: Any, seed: int) -> dict[str, Any]:
    # ATTEMPT get_split_indices(validation_size=len(dataset) // 2): validation =
    # the first half of the permutation, test = the rest.
    perm = _permutation(len(validation), seed)
    half = len(validation) // 2
    return {
        "train": _whole(train),
        "validation": _select(validation, perm[:half]),
        "test": _select(validation, perm[half:]),
    }


def _hold_out(train: Any, test: Any, seed: int) -> dict[str, Any]:
    # ATTEMPT get_split_indices(validation_size=1000): validation = the first
    # 1,000 of the permutation, train = the rest (kept in permutation order).
    perm = _permutation(len(train), seed)
    return {
        "train": _select(train, perm[HELD_OUT_VALIDATION:]),
        "validation": _select(train, perm[:HELD_OUT_VALIDATION]),
        "test": _whole(test),
    }


def split_rows(original: Mapping[str, Rows], split_seed: int = 42) -> tuple[dict[str, Rows], str]:
    """The "auto" rule for user tasks, on {"train", "validation"[, "test"]}:
    a labelled test split is kept (1,000 training rows held out when there is
    no validation split); otherwise fewer than 10k training rows halves the
    validation split, more holds out 1,000 training rows and tests on the
    original validation split (ATTEMPT's two lists, decided by size)."""
    train = _whole(original["train"])
    validation = original.get("validation")
    test = original.get("test")
    if test is not None:
        if validation is not None:
            return {"train": train, "validation": _whole(validation), "test": _whole(test)}, "original splits"
        return (
            _hold_out(train, test, split_seed),
            f"{HELD_OUT_VALIDATION} training rows held out as validation; original test",
        )
    if validation is None:
        raise DataError("a task without a labelled test split needs a validation split")
    if len(train) < SMALL_DATASET:
        return (
            _halve(train, validation, split_seed),
            f"fewer than {SMALL_DATASET} training rows: original validation halved into validation/test",
        )
    return (
        _hold_out(train, validation, split_seed),
        f"{HELD_OUT_VALIDATION} training rows held out as validation; original validation as test",
    )


def apply_split_rule(task: Task, original: Mapping[str, Rows], split_seed: int = 42) -> tuple[dict[str, Rows], str]:
    """The task's split rule on its original (hub-named) splits: (train /
    validation / test rows, the rule as a sentence)."""
    names = task.hub_splits()
    missing = sorted({n for n in names.values() if n not in original})
    if missing:
        raise DataError(f"task '{task.name}': original split(s) {missing} missing (have {sorted(original)})")
    train = original[names["train"]]
    rule = task.split_rule
    if rule == "halve":
        return (
            _halve(train, original[names["validation"]], split_seed),
            f"hub '{names['validation']}' halved into validation/test (ATTEMPT small-dataset rule)",
        )
    if rule == "hold_out":
        if len(train) <= HELD_OUT_VALIDATION:
            raise DataError(
                f"task '{task.name}': the hold-out rule needs more than {HELD_OUT_VALIDATION} training "
                f"rows, found {len(train)}"
            )
        return (
            _hold_out(train, original[names["test"]], split_seed),
            f"{HELD_OUT_VALIDATION} training rows held out as validation; test = hub '{names['test']}'",
        )
    if rule == "hub":
        return (
            {
                "train": _whole(train),
                "validation": _whole(original[names["validation"]]),
                "test": _whole(original[names["test"]]),
            },
            f"hub splits: validation = '{names['validation']}', test = '{names['test']}'",
        )
    by_role = {role: original[name] for role, name in names.items()}
    try:
        return split_rows(by_role, split_seed)
    except DataError as err:
        raise DataError(f"task '{task.name}': {err}") from err


def _class_of(task: Task, row: dict) -> int:
    if task.kind == "regression":
        # DePT's train.py: STS-B label "0" if the score <= 2.5 else "1".
        return int(float(row[task.label_column]) > 2.5)  # type: ignore[index]
    return task.label_index(row)


def k_shot_sample(task: Task, rows: Sequence[dict], k: int, seed: int, how: str = "random") -> Any:
    """k training rows, drawn with `seed`.

    random (default; ATTEMPT's `subsample`, which the released DTVG
    run_seq2seq.py calls with n_obs=max_train_samples): the first k rows of
    torch.randperm(len(rows)) seeded with `seed`.
    per_class (DePT's train.py, `k_shot_example`): walk the rows in the order
    of `datasets.Dataset.shuffle(seed)` (numpy default_rng(seed).permutation)
    and take a row while its label has fewer than k // n_labels rows, or when
    it fills the last slot; STS-B labels are binarised at 2.5, and tasks
    without labels (QA, generation) fall back to random.
    """
    if k > len(rows):
        raise DataError(f"task '{task.name}': k_shot={k} but only {len(rows)} training rows")
    if how not in K_SHOT_SAMPLING:
        raise ValueError(f"k_shot_sampling must be one of {K_SHOT_SAMPLING}, got {how!r}")
    if how == "random" or not (task.is_classification or task.kind == "regression"):
        return _select(rows, _permutation(len(rows), seed)[:k])
    import numpy as np

    n_classes = task.num_labels or 2
    per_class = k // n_classes
    counts = [0] * n_classes
    picked: list[int] = []
    order = np.random.default_rng(seed).permutation(len(rows)).tolist()
    chunk = 512  # rows are looked at a chunk at a time (a RowTable makes dicts per chunk)
    for start in range(0, len(order), chunk):
        ids = order[start : start + chunk]
        for i, row in zip(ids, _rows_of(_select(rows, ids)), strict=True):
            if len(picked) == k:
                break
            c = _class_of(task, row)
            if counts[c] < per_class or len(picked) == k - 1:
                counts[c] += 1
                picked.append(i)
        if len(picked) == k:
            break
    if len(picked) < k:
        log.warning("task %s: per_class k-shot found only %d of %d rows", task.name, len(picked), k)
    return _select(rows, picked)


def _rows_of(rows: Any) -> Rows:
    return rows.to_list() if isinstance(rows, RowTable) else rows


def _cap_train(rows: Any, limit: int | None, seed: int, permuted: bool) -> Any:
    """ATTEMPT's `subsample(n_obs)`: the first `limit` rows of a permutation.
    Held-out training rows are already in permutation order, so they are cut
    as they are (DePT caps Yelp at the first 100,000 so)."""
    if limit is None or len(rows) <= limit:
        return rows
    if permuted:
        return rows[:limit]
    return _select(rows, _permutation(len(rows), seed)[:limit])


def _cap(rows: Any, limit: int | None, seed: int) -> Any:
    """A seeded subset of `limit` rows, kept in their original order."""
    if limit is None or len(rows) <= limit:
        return rows
    keep = sorted(_permutation(len(rows), seed)[:limit])
    return _select(rows, keep)


@dataclass
class Prepared:
    """A task's splits under the protocol, and how they were made.

    With `prepare_splits(tables=True)` the splits may be RowTables, and
    `row_fn` (when set) still has to be applied to each row (ATTEMPT's input
    quirk, ReCoRD's one example per answer): the tokenized-split builder
    does that a batch at a time.
    """

    splits: dict[str, Any]
    source: Source
    rule: str
    original_sizes: dict[str, int]
    row_fn: Callable[[dict], list[dict]] | None = None


def row_transform(task: Task, settings: DataSettings) -> Callable[[dict], list[dict]] | None:
    """One row -> the examples it becomes after the split rule: ATTEMPT's input
    quirk (data.attempt_quirks), then the task's expand_fn; None when neither applies."""
    quirk = task.attempt_quirk_fn if settings.attempt_quirks else None
    expand = task.expand_fn
    if quirk is None and expand is None:
        return None

    def transform(row: dict) -> list[dict]:
        if quirk is not None:
            row = quirk(row)
        return expand(row) if expand is not None else [row]

    return transform


def expansion_rule(before: Mapping[str, int], after: Mapping[str, int]) -> str:
    """How expand_fn changed the split sizes, for the rule sentence."""
    return "; rows expanded " + ", ".join(f"{k} {before[k]}->{after[k]}" for k in before)


def prepare_splits(
    task: Task,
    settings: DataSettings | Mapping[str, Any] | None = None,
    seed: int | None = None,
    progress: bool = False,
    tables: bool = False,
) -> Prepared:
    """Hub-schema rows for "train", "validation" and "test", and their source.

    `seed` draws the k-shot sample (default: settings.split_seed); the
    validation/test partition always uses settings.split_seed, so runs with
    different seeds are scored on the same rows. `tables`: Parquet splits stay
    Arrow (RowTable) and `row_fn` is left to the caller (see `Prepared`).
    """
    cfg = DataSettings.coerce(settings)
    original, source = read_original(
        task, cfg.local_dir, cfg.paths, cfg.on_bad_row, cfg.revisions.get(task.name), progress, arrow=tables
    )
    sizes = {k: len(v) for k, v in original.items()}
    splits, rule = apply_split_rule(task, original, cfg.split_seed)
    held_out = task.split_rule == "hold_out" or "held out" in rule
    if cfg.k_shot is not None:
        sample_seed = cfg.split_seed if seed is None else seed
        # The pool is the protocol's training split: held-out validation rows and
        # the test rows are never in it.
        splits["train"] = k_shot_sample(task, splits["train"], cfg.k_shot, sample_seed, cfg.k_shot_sampling)
        rule += f"; {cfg.k_shot}-shot ({cfg.k_shot_sampling}, seed {sample_seed}) from that training split"
    else:
        train_cap = cfg.max_train_examples if cfg.max_train_examples is not None else task.max_train_examples
        splits["train"] = _cap_train(splits["train"], train_cap, cfg.split_seed, permuted=held_out)
    for name in ("validation", "test"):
        splits[name] = _cap(splits[name], cfg.max_eval_examples, cfg.split_seed)
    transform = row_transform(task, cfg)
    if cfg.attempt_quirks and task.attempt_quirk_fn is not None:
        rule += "; ATTEMPT's input quirk reproduced (data.attempt_quirks)"
    if transform is not None and not tables:
        before = {k: len(v) for k, v in splits.items()}
        splits = {k: [e for r in _rows_of(v) for e in transform(r)] for k, v in splits.items()}
        if task.expand_fn is not None:
            rule += expansion_rule(before, {k: len(v) for k, v in splits.items()})
        transform = None
    log.info(
        "task %s: train=%d validation=%d test=%d%s (%s; original %s; %s; split_seed %d)",
        task.name, len(splits["train"]), len(splits["validation"]), len(splits["test"]),
        " before expansion" if transform is not None and task.expand_fn is not None else "",
        source.where, ", ".join(f"{k}={v}" for k, v in sizes.items()), rule, cfg.split_seed,
    )
    return Prepared(splits=splits, source=source, rule=rule, original_sizes=sizes, row_fn=transform)


def load_splits(
    task: Task, settings: DataSettings | Mapping[str, Any] | None = None, seed: int | None = None
) -> dict[str, Rows]:
    """Raw hub-schema rows for "train", "validation" and "test" (see `prepare_splits`)."""
    return prepare_splits(task, settings, seed).splits


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


@dataclass(frozen=True)
class Layout:
    """The ids an example is built from besides its source and answer tokens,
    shared by `encode` and the tokenized-split builder (dtvg_dist.tokenized).

    seq2seq: input_ids = prefix + source[:budget] + [eos]; labels =
    answer_prefix + answer + [eos]. causal: prompt = prefix + source[:budget]
    + sep, input_ids = prompt + answer_prefix + answer + [eos].
    """

    family: str
    eos: int
    prefix: list[int]  # what the tokenizer puts before a text (Llama-3: BOS; T5: none)
    sep: list[int]  # causal: between source and answer
    answer_prefix: list[int]
    budget: int  # source tokens kept


def example_layout(task: Task, tokenizer: Any, family: str, template: str = "default") -> Layout:
    """The layout of `task`'s examples for `tokenizer`, `family` and
    `template` (data.template); errors name what is wrong."""
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
    return Layout(family, int(eos), list(prefix), list(sep), answer_prefix, budget)


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
    This is the reference; runs use the same examples from Arrow files
    (dtvg_dist.tokenized, tested equal to this).
    """
    lay = example_layout(task, tokenizer, family, template)
    eos, prefix, sep, budget = lay.eos, lay.prefix, lay.sep, lay.budget
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
        answer = lay.answer_prefix + list(tgt) + [eos]
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


if __name__ == "__main__":  # python -m dtvg_dist.data check|download ...
    import sys

    from dtvg_dist.tasks.cli import main

    sys.exit(main())
