"""The Task record: everything one dataset needs to be loaded, formatted and scored.

One dataclass rather than a class per dataset, so a user's own task is one
small entry (see docs/data.md, "Adding a task"). Inputs are written as ATTEMPT writes them:
`<prefix> field1: value1 field2: value2`; targets are label words, a
rounded score, the first gold answer or the reference text.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dtvg_dist import metrics
from dtvg_dist.tasks.schema import Column

__all__ = [
    "Task", "KIND_METRICS", "COMPOSITE_METRICS", "SPLIT_RULES", "SELECT_BY",
    "pad_punctuation", "remove_markup", "GROUP_SEP",
]

log = logging.getLogger("dtvg_dist.tasks")

# Which metric names each kind of task can report.
KIND_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("accuracy", "f1", "accuracy_f1", "f1_macro", "matthews", "f1a", "em"),
    "regression": ("pearson", "spearman", "pearson_spearman"),
    "qa": ("em", "f1", "f1_em"),
    "generation": ("bleu", "bleu_dtvg", "rouge1", "rouge2", "rougeL",
                   "rouge1_dtvg", "rouge2_dtvg", "rougeL_dtvg", "meteor_dtvg"),
}
# Metrics that are the mean of two others; `select_by=mean` averages the parts instead.
COMPOSITE_METRICS: dict[str, tuple[str, str]] = {
    "accuracy_f1": ("accuracy", "f1"),
    "pearson_spearman": ("pearson", "spearman"),
    "f1_em": ("f1", "em"),
}
# How the original (hub) splits become train / validation / test; see `Task`.
SPLIT_RULES = ("auto", "halve", "hold_out", "hub")
# How a checkpoint is chosen on validation: the primary metric, or the mean of
# the task's metrics (the released DTVG code's `average_metric`).
SELECT_BY = ("primary", "mean")
_DEFAULT_TARGET_LENGTH = {"classification": 8, "regression": 8, "qa": 128, "generation": 128}
# Substitute for an STS-B output that is no number, as ATTEMPT's string_to_float does.
INVALID_SCORE = -1.0
_NO_WORDNET_LOGGED: list[bool] = []  # the missing-WordNet line is logged once per process
# Separates the label word from the question id in a MultiRC reference.
GROUP_SEP = "\t"


def pad_punctuation(text: str) -> str:
    """T5/ATTEMPT `_pad_punctuation`: spaces around every char that is not a letter,
    number, mark, underscore or space; then squeeze whitespace."""
    out = []
    for ch in str(text):
        keep = ch == "_" or ch.isspace() or unicodedata.category(ch)[0] in "LNM"
        out.append(ch if keep else f" {ch} ")
    return " ".join("".join(out).split())


def remove_markup(text: str) -> str:
    """Drop MultiRC's HTML markup (`<br>`, `<b>`), as T5's preprocessor does."""
    return re.sub(r"<(/)?b>", "", re.sub(r"<br>", " ", text))


@dataclass(frozen=True)
class Task:
    """One dataset: where its rows come from, how to format them, how to score outputs.

    kind: "classification" (needs `label_words`), "regression" (STS-B),
    "qa" (target = first gold answer, reference = all of them) or
    "generation" (target = `target` column).
    fields: (name shown in the input, hub column) pairs, in input order;
    `source_fn` replaces them when a task needs custom input pairs.
    label_values: the hub's raw label values in label-word order, when the
    label column does not already hold 0..n-1.

    Where rows come from: `hub_id` at `hub_revision`, Parquet files under the
    repository folder `hub_dir` (default: `hub_config`, else "data"), one
    file set per hub split name (`train_split`, `validation_split`,
    `test_split`). `split_rule` turns them into train / validation / test:
    "halve" (train as is; the validation split halved into validation and
    test), "hold_out" (1,000 training rows held out as validation; test =
    `test_split`), "hub" (the three hub splits as they are) or "auto" (by
    size, for user tasks; see `dtvg_dist.data.split_rows`).
    expand_fn: one row -> the training examples it stands for (ReCoRD: one
    per gold answer), applied after the split rule.
    attempt_quirk_fn: rewrites a row the way ATTEMPT's formatting bug does,
    only with `data.attempt_quirks=true` (WinoGrande).
    """

    name: str
    hub_id: str = ""
    hub_config: str | None = None
    hub_revision: str = "main"
    hub_dir: str | None = None
    benchmark: str = "custom"
    kind: str = "classification"
    fields: tuple[tuple[str, str], ...] = ()
    label_column: str | None = "label"
    label_words: tuple[str, ...] | None = None
    label_values: tuple[Any, ...] | None = None
    primary_metric: str = "accuracy"
    metrics: tuple[str, ...] = ("accuracy",)
    max_source_length: int = 256
    max_target_length: int = 0  # 0: a default by kind (8 for labels, 128 for text)
    max_train_examples: int | None = None
    prefix: str | None = None  # defaults to the task name
    train_split: str = "train"
    validation_split: str | None = "validation"
    test_split: str | None = None  # the hub split that is the test set (a labelled one)
    split_rule: str = "auto"
    is_source: bool = False
    columns: tuple[Column, ...] = ()  # defaults to fields + label column
    source_fn: Callable[[dict], Sequence[tuple[str, str]]] | None = None
    target_fn: Callable[[dict], str] | None = None
    reference_fn: Callable[[dict], str | list[str]] | None = None
    builtin_rows: Callable[[], dict[str, list[dict]]] | None = field(default=None, compare=False)
    expand_fn: Callable[[dict], list[dict]] | None = field(default=None, compare=False)
    attempt_quirk_fn: Callable[[dict], dict] | None = field(default=None, compare=False)
    selection_metrics: tuple[str, ...] = ()  # select_by=mean averages these (default: non-composite metrics)
    # The released data path scores this QA task against every gold answer
    # rather than the decoded trained target (ATTEMPT's Record post-processor).
    release_all_answers: bool = False

    def __post_init__(self) -> None:
        where = f"task {self.name!r}"
        if not self.name or self.name != self.name.lower() or any(c.isspace() for c in self.name):
            raise ValueError(f"{where}: the name must be non-empty, lower case, without spaces")
        if self.kind not in KIND_METRICS:
            raise ValueError(f"{where}: kind must be one of {tuple(KIND_METRICS)}, got {self.kind!r}")
        allowed = KIND_METRICS[self.kind]
        for m in self.metrics:
            if m not in allowed:
                raise ValueError(f"{where}: metric {m!r} is not one of {allowed} for kind {self.kind!r}")
        if self.primary_metric not in self.metrics:
            raise ValueError(f"{where}: primary_metric {self.primary_metric!r} is not in metrics {self.metrics}")
        if self.kind == "classification":
            if not self.label_words or len(self.label_words) < 2:
                raise ValueError(f"{where}: a classification task needs at least two label_words")
            if len(set(self.label_words)) != len(self.label_words):
                raise ValueError(f"{where}: label_words must be distinct")
            if self.label_column is None and self.target_fn is None:
                raise ValueError(f"{where}: a classification task needs label_column")
        elif self.label_words is not None:
            raise ValueError(f"{where}: label_words is only for classification tasks")
        if self.label_values is not None and len(self.label_values) != len(self.label_words or ()):
            raise ValueError(f"{where}: label_values must match label_words one to one")
        if not self.fields and self.source_fn is None:
            raise ValueError(f"{where}: give fields (or a source_fn) to build the input")
        if not self.hub_id and self.builtin_rows is None:
            raise ValueError(f"{where}: give a hub_id (or builtin_rows)")
        if self.max_source_length < 8:
            raise ValueError(f"{where}: max_source_length must be at least 8")
        if self.max_train_examples is not None and self.max_train_examples < 1:
            raise ValueError(f"{where}: max_train_examples must be positive")
        self._check_split_rule(where)
        for m in self.selection_metrics:
            if m not in self.metrics:
                raise ValueError(f"{where}: selection metric {m!r} is not in metrics {self.metrics}")
        if self.max_target_length <= 0:
            object.__setattr__(self, "max_target_length", _DEFAULT_TARGET_LENGTH[self.kind])
        if not self.columns:
            object.__setattr__(self, "columns", self._default_columns())

    def _check_split_rule(self, where: str) -> None:
        rule = self.split_rule
        if rule not in SPLIT_RULES:
            raise ValueError(f"{where}: split_rule must be one of {SPLIT_RULES}, got {rule!r}")
        if rule == "halve" and (not self.validation_split or self.test_split):
            raise ValueError(f"{where}: split_rule 'halve' needs validation_split and no test_split")
        if rule == "hold_out" and (not self.test_split or self.validation_split):
            raise ValueError(f"{where}: split_rule 'hold_out' needs test_split and no validation_split")
        if rule == "hub" and not (self.validation_split and self.test_split):
            raise ValueError(f"{where}: split_rule 'hub' needs validation_split and test_split")

    @property
    def hub_folder(self) -> str:
        """The repository folder that holds this task's Parquet files."""
        return self.hub_dir or self.hub_config or "data"

    def hub_splits(self) -> dict[str, str]:
        """Role ("train", "validation", "test") -> the hub split name it reads."""
        out = {"train": self.train_split}
        if self.validation_split:
            out["validation"] = self.validation_split
        if self.test_split:
            out["test"] = self.test_split
        return out

    def _default_columns(self) -> tuple[Column, ...]:
        cols = [Column(col) for _, col in self.fields]
        if self.label_column is not None and self.kind in ("classification", "regression"):
            if self.kind == "regression":
                cols.append(Column(self.label_column, "score"))
            elif self.label_values is not None:
                cols.append(Column(self.label_column, "choice", choices=self.label_values))
            else:
                cols.append(Column(self.label_column, "label"))
        elif self.kind == "qa":
            cols.append(Column("answers", "list"))
        elif self.kind == "generation":
            cols.append(Column("target"))
        return tuple(cols)

    # ---- labels -----------------------------------------------------------
    @property
    def is_classification(self) -> bool:
        """True when outputs are label words (accuracy-style scoring, k-shot balancing)."""
        return self.label_words is not None

    @property
    def num_labels(self) -> int | None:
        return len(self.label_words) if self.label_words is not None else None

    def label_index(self, example: dict) -> int:
        """Index into `label_words` of a row's gold label."""
        if self.label_column is None:
            raise ValueError(f"task {self.name!r} has no label column")
        raw = example[self.label_column]
        if self.label_values is None:
            return int(raw)
        if raw in self.label_values:
            return self.label_values.index(raw)
        return [str(v) for v in self.label_values].index(str(raw).strip())

    # ---- formatting -------------------------------------------------------
    def source_pairs(self, example: dict) -> list[tuple[str, str]]:
        if self.source_fn is not None:
            return list(self.source_fn(example))
        return [(shown, str(example[col])) for shown, col in self.fields]

    def source_text(self, example: dict) -> str:
        parts = [self.prefix if self.prefix is not None else self.name]
        parts += [f"{shown}: {value}" for shown, value in self.source_pairs(example)]
        return " ".join(p for p in parts if p)

    def target_text(self, example: dict) -> str:
        if self.target_fn is not None:
            return self.target_fn(example)
        if self.kind == "classification":
            return self.label_words[self.label_index(example)]  # type: ignore[index]
        if self.kind == "regression":
            # T5's STS-B recipe: round to the nearest 0.2, print one decimal.
            return f"{round(float(example[self.label_column]) * 5) / 5:.1f}"
        if self.kind == "qa":
            return str(example["answers"][0])
        return str(example["target"])

    def format(self, example: dict) -> tuple[str, str]:
        """(source text, target text) for one row in the hub's schema."""
        return self.source_text(example), self.target_text(example)

    def reference(self, example: dict) -> str | list[str]:
        """What `score` compares a prediction of this row against."""
        if self.reference_fn is not None:
            return self.reference_fn(example)
        if self.kind == "qa":
            return [str(a) for a in example["answers"]]
        if self.kind == "regression":
            return str(float(example[self.label_column]))
        return self.target_text(example)

    # ---- scoring ----------------------------------------------------------
    def selection_score(self, scores: dict[str, float], select_by: str = "primary") -> float | None:
        """The number a checkpoint is chosen by: the primary metric, or (select_by
        "mean") the mean of the task's metrics, as the released DTVG code's
        `average_metric` (third_party/trainers/trainer.py, evaluate())."""
        if select_by == "primary":
            return scores.get(self.primary_metric)
        if select_by != "mean":
            raise ValueError(f"select_by must be one of {SELECT_BY}, got {select_by!r}")
        names = self.selection_metrics or tuple(m for m in self.metrics if m not in COMPOSITE_METRICS)
        values = [float(scores[m]) for m in names if scores.get(m) is not None]
        return sum(values) / len(values) if values else None

    def parse_prediction(self, text: str) -> int | float | str | None:
        """Map raw generated text to a label index / float / answer; None if it maps to nothing."""
        text = text.strip()
        if self.kind == "classification":
            words = self.label_words or ()
            if text in words:
                return words.index(text)
            lowered = [w.lower() for w in words]
            return lowered.index(text.lower()) if text.lower() in lowered else None
        if self.kind == "regression":
            try:
                value = float(text)
            except ValueError:
                return None
            return value if value == value else None  # NaN maps to nothing
        return text

    def _gold_index(self, ref: Any) -> tuple[int, str | None]:
        if isinstance(ref, int) and not isinstance(ref, bool):
            if not 0 <= ref < len(self.label_words or ()):
                raise ValueError(f"task {self.name!r}: reference label {ref} out of range")
            return ref, None
        word, _, group = str(ref).partition(GROUP_SEP)
        index = self.parse_prediction(word)
        if index is None:
            raise ValueError(f"task {self.name!r}: reference {ref!r} is not one of {self.label_words}")
        return int(index), (group or None)

    def score(self, predictions: Sequence[str], references: Sequence[str | list[str]]) -> dict[str, float]:
        """Metrics in percent (primary under `primary_metric`) plus `invalid`:
        the number of outputs that map to no label (counted wrong) or are empty."""
        if len(predictions) != len(references):
            raise ValueError(f"task {self.name!r}: {len(predictions)} predictions but {len(references)} references")
        if not predictions:
            raise ValueError(f"task {self.name!r}: nothing to score")
        if self.kind == "classification":
            out = self._score_classification(predictions, references)
        elif self.kind == "regression":
            out = self._score_regression(predictions, references)
        elif self.kind == "qa":
            out = metrics.squad(predictions, references)
            out["f1_em"] = (out["f1"] + out["em"]) / 2
            out["invalid"] = sum(not p.strip() for p in predictions)
        else:
            out = self._score_generation(predictions, references)
        return {k: v for k, v in out.items() if k in self.metrics or k == "invalid"}

    def _score_generation(self, predictions: Sequence[str], references: Sequence[Any]) -> dict:
        wanted = set(self.metrics)
        out: dict[str, float] = {"invalid": sum(not p.strip() for p in predictions)}
        if "bleu" in wanted:
            out["bleu"] = metrics.bleu(predictions, references)
        if "bleu_dtvg" in wanted:
            out["bleu_dtvg"] = metrics.bleu_dtvg(predictions, references)
        if wanted & {"rouge1", "rouge2", "rougeL"}:
            out.update(metrics.rouge(predictions, references))
        if wanted & {"rouge1_dtvg", "rouge2_dtvg", "rougeL_dtvg"}:
            out.update(metrics.rouge_dtvg(predictions, references))
        if "meteor_dtvg" in wanted:
            meteor = metrics.meteor_dtvg(predictions, references)
            if meteor is None:
                if not _NO_WORDNET_LOGGED:
                    log.warning(
                        "task %s: no WordNet database (Debian package wordnet-base, or DTVG_WORDNET="
                        "<WordNet 3.0 dict folder>): meteor_dtvg is left out of the scores and of "
                        "the checkpoint mean", self.name,
                    )
                    _NO_WORDNET_LOGGED.append(True)
            else:
                out["meteor_dtvg"] = meteor
        return out

    def _score_classification(self, predictions: Sequence[str], references: Sequence[Any]) -> dict:
        n = len(self.label_words or ())
        gold, groups = zip(*(self._gold_index(r) for r in references), strict=True)
        parsed = [self.parse_prediction(p) for p in predictions]
        # An unmapped output must count as wrong for every metric, so it becomes a
        # label different from the gold one (for binary F1: the opposite label).
        pred = [int(p) if p is not None else (g + 1) % n for p, g in zip(parsed, gold, strict=True)]
        out: dict[str, float] = {"invalid": sum(p is None for p in parsed)}
        wanted = set(self.metrics)
        if wanted & {"accuracy", "accuracy_f1"}:
            out["accuracy"] = metrics.accuracy(gold, pred)
        if wanted & {"f1", "accuracy_f1"}:
            out["f1"] = metrics.f1_binary(gold, pred)
        if "accuracy_f1" in wanted:
            out["accuracy_f1"] = (out["accuracy"] + out["f1"]) / 2
        if "f1_macro" in wanted:
            out["f1_macro"] = metrics.f1_macro(gold, pred, n)
        if "matthews" in wanted:
            out["matthews"] = metrics.matthews(gold, pred)
        if wanted & {"f1a", "em"}:
            have_groups = all(g is not None for g in groups)
            if "em" in wanted and not have_groups:
                log.warning("task %s: references carry no question ids; MultiRC EM left out", self.name)
            out.update(metrics.multirc(gold, pred, groups if have_groups else None))
        return out

    def _score_regression(self, predictions: Sequence[str], references: Sequence[Any]) -> dict:
        gold = [float(str(r).strip()) for r in references]
        parsed = [self.parse_prediction(p) for p in predictions]
        pred = [float(p) if p is not None else INVALID_SCORE for p in parsed]
        out: dict[str, float] = {
            "invalid": sum(p is None for p in parsed),
            "pearson": metrics.pearson(gold, pred),
            "spearman": metrics.spearman(gold, pred),
        }
        out["pearson_spearman"] = (out["pearson"] + out["spearman"]) / 2
        return out
