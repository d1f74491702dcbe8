"""The one tokenization path (`Encoder`: rows -> an Arrow table of examples),
the examples' view (`TokenizedSplit`) and the collators (see dtvg_dist.data.settings).

Training reads the Encoder's tables from the tokenized-split cache
(dtvg_dist.data.tokenized); `predict` and `encode` call it directly, so a
row is tokenized the same way wherever it goes.
"""

from __future__ import annotations

import itertools
import json
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from dtvg_dist.data.settings import (
    FAMILIES,
    RELEASE_SEPARATOR,
    TEMPLATES,
    log,
)
from dtvg_dist.tasks import Task


def added_prefix(tokenizer: Any) -> list[int]:
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
    of `Encoder`.

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
    prefix = added_prefix(tokenizer)
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
    """Tokenise rows for training and generation, through `Encoder` (the one
    tokenization path: the tokenized-split cache and `predict` use it too);
    only the source is ever truncated.

    seq2seq (T5): input_ids = source + EOS, labels = target + EOS.
    causal (Llama): input_ids = [BOS] + source + "\\n" + answer + EOS, labels
    -100 except answer + EOS; prompt_ids stop before the answer. Source and
    answer are tokenised separately so the answer ids match what is generated.
    template="dtvg-release" (causal only): [BOS] + source + " Label : " +
    [BOS] + answer + EOS, as the authors' released code.
    """
    encoder = Encoder(task, tokenizer, family, template)
    return encoder.examples(rows)


# ---- the encoder: rows -> examples ----------------------------------------------------
class _TextIds:
    """Token ids of texts exactly as `tokenizer(texts, add_special_tokens=False)`
    gives them, from its Rust tokenizer without offset tracking
    (`encode_batch_fast`) when it has one, set as that call sets it (no
    padding, no truncation, its split_special_tokens). The first batch is
    checked against the call itself; on any difference the call is used."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self.backend = backend if backend is not None and hasattr(backend, "encode_batch_fast") else None
        self.checked = False

    def _call(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"]

    def _fast(self, texts: list[str]) -> list[list[int]]:
        backend = self.backend
        # What transformers' TokenizersBackend._encode_plus does before its encode_batch.
        if backend.padding is not None:
            backend.no_padding()
        if backend.truncation is not None:
            backend.no_truncation()
        split = bool(getattr(self.tokenizer, "split_special_tokens", False))
        if backend.encode_special_tokens != split:
            backend.encode_special_tokens = split
        return [e.ids for e in backend.encode_batch_fast(texts, add_special_tokens=False)]

    def __call__(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        if self.backend is None:
            return self._call(texts)
        ids = self._fast(texts)
        if not self.checked:
            self.checked = True
            if ids != self._call(texts):
                log.warning(
                    "the Rust tokenizer of %s gives other ids than its call; tokenizing through the call",
                    type(self.tokenizer).__name__,
                )
                self.backend = None
                return self._call(texts)
        return ids


class Encoder:
    """Rows -> an Arrow table of examples (the one tokenization path: the
    tokenized-split cache, `encode` and `predict` all call it); label words
    are tokenized once."""

    def __init__(self, task: Task, tokenizer: Any, family: str, template: str = "default") -> None:
        self.task = task
        self.lay: Layout = example_layout(task, tokenizer, family, template)
        self.ids = _TextIds(tokenizer)
        self.targets: dict[str, list[int]] = {}  # a few thousand recent targets (label words)
        self.rows = self.truncated = self.long_answers = 0

    def _target_ids(self, texts: list[str]) -> list[list[int]]:
        new = [t for t in dict.fromkeys(texts) if t not in self.targets]
        got = dict(zip(new, self.ids(new), strict=True))
        out = [self.targets[t] if t in self.targets else got[t] for t in texts]
        if len(self.targets) + len(got) <= 4096:
            self.targets.update(got)
        return out

    def __call__(self, rows: list[dict]) -> pa.Table:
        task, lay = self.task, self.lay
        pairs = [task.format(row) for row in rows]
        refs = [json.dumps(task.reference(row), ensure_ascii=False) for row in rows]
        source, source_len = _ragged(self.ids([s for s, _ in pairs]))
        target, target_len = _ragged(self._target_ids([t for _, t in pairs]))
        kept = _truncated(source, source_len, lay.budget)
        self.rows += len(rows)
        self.truncated += int((source_len > lay.budget).sum())
        self.long_answers += int((target_len + 1 > task.max_target_length).sum())
        answer = [lay.answer_prefix, (target, target_len), [lay.eos]]
        columns: dict[str, pa.Array] = {}
        if lay.family == "seq2seq":
            columns["input_ids"] = _join(len(rows), [lay.prefix, kept, [lay.eos]])
            columns["labels"] = _join(len(rows), answer)
        else:
            columns["input_ids"] = _join(len(rows), [lay.prefix, kept, lay.sep, *answer])
            prompt = len(lay.prefix) + kept[1] + len(lay.sep)
            columns["prompt_length"] = pa.array(prompt.astype(np.int32), pa.int32())
        columns["reference"] = pa.array(refs, pa.string())
        return pa.table(columns)

    def examples(self, rows: Sequence[dict]) -> list[dict[str, Any]]:
        """The examples of `rows` as dicts (what a `TokenizedSplit` item is), and the log lines."""
        if not rows:
            return []
        out = list(TokenizedSplit(self(list(rows)), self.lay.family))
        self.report()
        return out

    def report(self) -> None:
        """The log lines on truncated sources and long answers, for all rows encoded so far."""
        task = self.task
        if self.truncated:
            log.info("task %s: truncated %d/%d sources to %d tokens", task.name, self.truncated, self.rows,
                     task.max_source_length)
        if self.long_answers:
            log.warning("task %s: %d answer(s) longer than max_target_length=%d were kept whole",
                        task.name, self.long_answers, task.max_target_length)


# Ragged id lists as (flat int32 values, lengths): examples are put together
# with numpy, not as one Python list per example.
Ragged = tuple[np.ndarray, np.ndarray]


def _ragged(lists: list[list[int]]) -> Ragged:
    lengths = np.fromiter(map(len, lists), dtype=np.int64, count=len(lists))
    values = np.fromiter(itertools.chain.from_iterable(lists), dtype=np.int32, count=int(lengths.sum()))
    return values, lengths


def _within(lengths: np.ndarray) -> np.ndarray:
    """0..n-1 for each run of `lengths`, concatenated."""
    return np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)


def _truncated(values: np.ndarray, lengths: np.ndarray, limit: int) -> Ragged:
    """The first `limit` ids of each list."""
    if not len(lengths) or lengths.max() <= limit:
        return values, lengths
    kept = np.minimum(lengths, limit)
    starts = np.cumsum(lengths) - lengths
    return values[np.repeat(starts, kept) + _within(kept)], kept


def _join(n: int, pieces: list[Any]) -> pa.Array:
    """A list<int32> array whose row i joins every piece's row i; a piece is a
    list of ids (the same in every row) or a Ragged (one list per row)."""
    lengths = [np.full(n, len(p), dtype=np.int64) if isinstance(p, list) else p[1] for p in pieces]
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.sum(lengths, axis=0), out=offsets[1:])
    out = np.empty(int(offsets[-1]), dtype=np.int32)
    start = offsets[:-1].copy()
    for piece, length in zip(pieces, lengths, strict=True):
        if isinstance(piece, list):
            if piece:
                out[start[:, None] + np.arange(len(piece))] = np.asarray(piece, dtype=np.int32)
        else:
            out[np.repeat(start, length) + _within(length)] = piece[0]
        start += length
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(out))



# ---- examples over an Arrow table ---------------------------------------------------
class TokenizedSplit(Sequence[dict[str, Any]]):
    """One tokenized split over an Arrow table (memory-mapped when read from
    the cache). Item i is example i as a dict: input_ids,
    labels, prompt_ids (lists of ints) and reference (str or list of str)."""

    def __init__(self, table: pa.Table, family: str) -> None:
        self.table = table
        self.family = family
        lengths = [len(c) for c in table.column("input_ids").chunks]
        self._starts = np.cumsum([0, *lengths]).tolist()
        self._ids = _list_views(table.column("input_ids"))
        self._labels = _list_views(table.column("labels")) if family == "seq2seq" else None
        self._prompt = (
            [np.asarray(c) for c in table.column("prompt_length").chunks] if family != "seq2seq" else None
        )
        self._refs = table.column("reference").chunks

    def __len__(self) -> int:
        return self.table.num_rows

    def __repr__(self) -> str:
        return f"TokenizedSplit({len(self)} examples, {self.family})"

    def __getitem__(self, i: Any) -> Any:  # int -> dict, slice -> list of dicts
        if isinstance(i, slice):
            return [self[j] for j in range(len(self))[i]]
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"example {i} out of range for {n} examples")
        i = int(i) % n
        k = bisect_right(self._starts, i) - 1
        j = i - self._starts[k]
        offsets, values = self._ids[k]
        ids = values[offsets[j] : offsets[j + 1]].tolist()
        reference = json.loads(self._refs[k][j].as_py())
        if self._labels is not None:
            offsets, values = self._labels[k]
            labels = values[offsets[j] : offsets[j + 1]].tolist()
            return {"input_ids": ids, "labels": labels, "prompt_ids": ids, "reference": reference}
        assert self._prompt is not None
        p = int(self._prompt[k][j])
        return {"input_ids": ids, "labels": [-100] * p + ids[p:], "prompt_ids": ids[:p], "reference": reference}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(len(self)):
            yield self[i]


def _list_views(column: pa.ChunkedArray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(offsets, values) numpy views of each chunk of a list<int32> column (no copy)."""
    return [(np.asarray(c.offsets), np.asarray(c.values)) for c in column.chunks]



# ---- references as the released evaluation decodes them ----------------------------
# The released code scores generated text against the decoded label ids
# (ATTEMPT/DePT data/postprocessors.py PostProcessor.process:
# tokenizer.batch_decode(labels, skip_special_tokens=True), stripped), with
# one exception (ATTEMPT's Record post-processor: every gold answer). Its T5
# evaluation labels are tokenised with max_length = data_args.max_target_length
# = 128 and truncation (zpy2477/DTVG run_seq2seq.py line 453 and
# seq2seq_preprocess_function line 152; options.py line 297): 127 answer
# tokens and EOS. Its Llama labels are [BOS] + answer, untruncated
# (decoder_test_preprocess_function).
RELEASE_LABEL_TOKENS = 128


def label_reference(feature: dict[str, Any], tokenizer: Any, family: str) -> str:
    """The trained target of `feature` as the released evaluation sees it:
    its label ids (truncated as the release's T5 labels are) decoded."""
    ids = [int(i) for i in feature["labels"] if i != -100]
    if family == "seq2seq" and len(ids) > RELEASE_LABEL_TOKENS:
        ids = ids[: RELEASE_LABEL_TOKENS - 1] + ids[-1:]  # the truncated answer, then EOS
    return tokenizer.decode(ids, skip_special_tokens=True).strip()


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
    batch = {
        "input_ids": _pad(ids, pad),
        "attention_mask": _pad(mask, 0),
        "labels": _pad([f["labels"] for f in features], -100),
    }
    if "task_id" in features[0]:  # a multi-task mixture (MPT's source training)
        batch["task_ids"] = torch.tensor([int(f["task_id"]) for f in features], dtype=torch.long)
    return batch


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


