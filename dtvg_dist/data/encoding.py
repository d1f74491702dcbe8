"""Tokenisation of examples and the collators (see dtvg_dist.data.settings)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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
    shared by `encode` and the tokenized-split builder (dtvg_dist.data.tokenized).

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
    """Tokenise rows for training and generation; only the source is ever truncated.

    seq2seq (T5): input_ids = source + EOS, labels = target + EOS.
    causal (Llama): input_ids = [BOS] + source + "\\n" + answer + EOS, labels
    -100 except answer + EOS; prompt_ids stop before the answer. Source and
    answer are tokenised separately so the answer ids match what is generated.
    template="dtvg-release" (causal only): [BOS] + source + " Label : " +
    [BOS] + answer + EOS, as the authors' released code.
    This is the reference; runs use the same examples from Arrow files
    (dtvg_dist.data.tokenized, tested equal to this).
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


