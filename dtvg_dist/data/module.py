"""`TaskData`: one task's data, from its files to padded batches, in one object.

Like litgpt's DataModule, it owns every step a task's rows take: locating
the original files (once), the split protocol and the k-shot draw, the one
tokenization path (`encoding.Encoder`, through the tokenized-split cache for
training), and the collate functions. Training and evaluation (through the
pipeline), `predict` and the data command (`python -m dtvg_dist.dataset`)
all go through it, so a row is read, split and tokenized the same way
wherever it is used.

The settings are a `DataSettings`, coerced once where they enter (the
pipeline, the data command); the task is looked up once, here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from dtvg_dist.data.encoding import (
    Encoder,
    TokenizedSplit,
    collate_generate,
    collate_train,
    generation_padding_side,
    padding_id,
)
from dtvg_dist.data.settings import DataSettings
from dtvg_dist.data.sources import Part, Source, locate_original
from dtvg_dist.data.splits import Prepared, prepare_splits
from dtvg_dist.data.tokenized import tokenized_splits
from dtvg_dist.tasks import Task, get_task

__all__ = ["TaskData"]


class TaskData:
    """One task's data under `settings`, for `tokenizer` and model `family`
    (no tokenizer: rows only). `seed` draws the k-shot sample (default
    data.split_seed); `accelerator` lets the main process build the
    tokenized cache while the other ranks wait."""

    def __init__(
        self,
        task: Task | str,
        settings: DataSettings,
        tokenizer: Any = None,
        family: str = "seq2seq",
        seed: int | None = None,
        accelerator: Any = None,
    ) -> None:
        if not isinstance(settings, DataSettings):
            raise TypeError(
                f"TaskData needs a DataSettings (coerce once where settings enter), got {type(settings).__name__}"
            )
        self.task: Task = get_task(task) if isinstance(task, str) else task
        self.settings = settings
        self.tokenizer = tokenizer
        self.family = family
        self.seed = seed
        self.accelerator = accelerator
        self._located: tuple[dict[str, list[Part]], Source] | None = None
        self._splits: dict[str, TokenizedSplit] | None = None
        self._encoder: Encoder | None = None

    def __repr__(self) -> str:
        return f"TaskData({self.task.name!r}, {self.family}, seed={self.seed})"

    @property
    def name(self) -> str:
        return self.task.name

    # ---- rows ------------------------------------------------------------------
    def located(self) -> tuple[dict[str, list[Part]], Source]:
        """The task's original files and where they are (found once)."""
        if self._located is None:
            cfg = self.settings
            self._located = locate_original(self.task, cfg.local_dir, cfg.paths, cfg.revisions.get(self.name))
        return self._located

    def prepared(self, progress: bool = False) -> Prepared:
        """The split protocol's train / validation / test rows (hub schema),
        their source and the rule as a sentence (k-shot drawn with `seed`)."""
        return prepare_splits(self.task, self.settings, self.seed, progress=progress, located=self.located())

    # ---- examples ----------------------------------------------------------------
    def _tokenizer(self) -> Any:
        if self.tokenizer is None:
            raise ValueError(f"task '{self.name}': TaskData was made without a tokenizer; it has rows only")
        return self.tokenizer

    @property
    def encoder(self) -> Encoder:
        """The one tokenization path for this task, tokenizer, family and data.template."""
        if self._encoder is None:
            self._encoder = Encoder(self.task, self._tokenizer(), self.family, self.settings.template)
        return self._encoder

    def splits(self) -> dict[str, TokenizedSplit]:
        """The tokenized train / validation / test examples: from the data
        cache (built there first when missing), memory-mapped; kept."""
        if self._splits is None:
            self._splits = tokenized_splits(
                self.task, self.settings, self._tokenizer(), self.family, seed=self.seed,
                accelerator=self.accelerator, locate=self.located,
            )
        return self._splits

    def encode(self, rows: Sequence[dict]) -> list[dict[str, Any]]:
        """Rows outside the splits (prediction's input) as examples, by the
        same encoder the training examples were made with."""
        return self.encoder.examples(rows)

    # ---- batches -----------------------------------------------------------------
    @property
    def pad_id(self) -> int:
        return padding_id(self._tokenizer())

    @property
    def padding_side(self) -> str:
        """Where generation prompts pad (decoder-only models: left)."""
        return generation_padding_side(self.family)

    def collate_train(self, features: Sequence[dict]) -> dict[str, torch.Tensor]:
        """A training batch: right-padded input_ids / attention_mask / labels."""
        return collate_train(features, self.pad_id)

    def collate_generate(self, features: Sequence[dict]) -> dict[str, Any]:
        """A generation batch: padded prompts and the references."""
        return collate_generate(features, self.pad_id, self.padding_side)
