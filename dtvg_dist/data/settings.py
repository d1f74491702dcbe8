"""Data settings (the `data` config node) and the constants of the split protocol.

The paper's split protocol, k-shot sampling, tokenisation and collators.

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

`python -m dtvg_dist.dataset check|download ...` is the data preflight and the
offline mirror (dtvg_dist.dataset).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from dtvg_dist.tasks.base import SELECT_BY

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
    see dtvg_dist.data.tokenized).
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
    # Train the stage-2 prompt on the target's training set mixed with these
    # tasks' (Figure 1, top: examples-proportional mixing, Raffel et al. 2020,
    # with no size cap: the union is sampled uniformly, so each task in
    # proportion to its size). Validation and test stay the target's.
    mix_tasks: list[str] = field(default_factory=list)

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
        from dtvg_dist.tasks import TASKS

        unknown = [t for t in self.mix_tasks if t not in TASKS]
        if unknown:
            raise ValueError(f"data.mix_tasks: {', '.join(map(repr, unknown))} not in the task registry")
        if len(set(self.mix_tasks)) != len(self.mix_tasks):
            raise ValueError(f"data.mix_tasks names a task twice: {list(self.mix_tasks)}")

    @classmethod
    def coerce(cls, settings: DataSettings | Mapping[str, Any] | None) -> DataSettings:
        """Accept a DataSettings (returned as it is: it was validated when
        made), a mapping (e.g. an OmegaConf DictConfig) or None. Called once,
        where settings enter (the pipeline, the data command, `TaskData`)."""
        if settings is None:
            return cls()
        if isinstance(settings, cls):
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


