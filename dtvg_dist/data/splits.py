"""The split protocol, k-shot sampling and split preparation (see dtvg_dist.data.settings)."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from dtvg_dist.data.rowtable import RowTable
from dtvg_dist.data.settings import (
    HELD_OUT_VALIDATION,
    K_SHOT_SAMPLING,
    SMALL_DATASET,
    DataSettings,
    Rows,
    log,
)
from dtvg_dist.data.sources import Part, Source, read_original
from dtvg_dist.tasks import DataError, Task


# ---- splits ----------------------------------------------------------------------
def permutation(n: int, seed: int) -> list[int]:
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
    perm = permutation(len(validation), seed)
    half = len(validation) // 2
    return {
        "train": _whole(train),
        "validation": _select(validation, perm[:half]),
        "test": _select(validation, perm[half:]),
    }


def _hold_out(train: Any, test: Any, seed: int) -> dict[str, Any]:
    # ATTEMPT get_split_indices(validation_size=1000): validation = the first
    # 1,000 of the permutation, train = the rest (kept in permutation order).
    perm = permutation(len(train), seed)
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
        return _select(rows, permutation(len(rows), seed)[:k])
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
    return _select(rows, permutation(len(rows), seed)[:limit])


def _cap(rows: Any, limit: int | None, seed: int) -> Any:
    """A seeded subset of `limit` rows, kept in their original order."""
    if limit is None or len(rows) <= limit:
        return rows
    keep = sorted(permutation(len(rows), seed)[:limit])
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
    located: tuple[dict[str, list[Part]], Source] | None = None,
) -> Prepared:
    """Hub-schema rows for "train", "validation" and "test", and their source.

    `seed` draws the k-shot sample (default: settings.split_seed); the
    validation/test partition always uses settings.split_seed, so runs with
    different seeds are scored on the same rows. `tables`: Parquet splits stay
    Arrow (RowTable) and `row_fn` is left to the caller (see `Prepared`).
    `located`: the task's files as `locate_original` found them (not located again).
    """
    cfg = DataSettings.coerce(settings)
    original, source = read_original(
        task, cfg.local_dir, cfg.paths, cfg.on_bad_row, cfg.revisions.get(task.name), progress, arrow=tables,
        located=located,
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


class MixedSplit(Sequence):
    """Several tokenized training splits as one sequence, without copying:
    index i < len(parts[0]) is parts[0][i], and so on. Sampling it uniformly
    is examples-proportional mixing without a cap (Raffel et al., 2020)."""

    def __init__(self, parts: Sequence[Sequence[dict]]) -> None:
        self.parts = list(parts)
        self.starts = [0]
        for part in self.parts:
            self.starts.append(self.starts[-1] + len(part))

    def __len__(self) -> int:
        return self.starts[-1]

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        k = bisect.bisect_right(self.starts, i) - 1
        return self.parts[k][i - self.starts[k]]
