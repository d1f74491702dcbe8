"""Generation-based evaluation, sharded over ranks and gathered whole.

Every rank runs the same number of `generate` calls (the last shard is padded
with a repeat of its last example, dropped again after the gather), so ranks
never wait on each other with uneven data; under ZeRO-3 `synced_gpus=True`
keeps them in step on uneven output lengths. The gathered predictions are
put back in dataset order with each example exactly once.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from dtvg_dist.data import (
    collate_generate,
    collate_train,
    generation_padding_side,
    label_reference,
    padding_id,
)

QA_REFERENCES = ("all", "target")
NLG_REFERENCES = ("text", "target")


def shard_indices(n: int, rank: int, world: int) -> list[int]:
    """This rank's example indices, padded to the same length on every rank
    (padding marked with -1)."""
    own = list(range(rank, n, world))
    per_rank = math.ceil(n / world) if n else 0
    return own + [-1] * (per_rank - len(own))


def predict(
    accelerator: Accelerator,
    model: Any,
    features: list[dict[str, Any]],
    tokenizer: Any,
    family: str,
    batch_size: int,
    max_new_tokens: int,
    synced_gpus: bool = False,
    desc: str = "eval",
    rank_words: list[str] | None = None,
) -> list[str]:
    """Greedy predictions for `features`, in order, on every rank; with
    `rank_words`, the most likely of those words instead (rank classification)."""
    pad_id = padding_id(tokenizer)
    side = generation_padding_side(family)
    indices = shard_indices(len(features), accelerator.process_index, accelerator.num_processes)
    mine: list[tuple[int, str]] = []
    was_training = model.training
    model.eval()
    batches = range(0, len(indices), batch_size)
    bar = tqdm(batches, desc=desc, leave=False, disable=not accelerator.is_main_process)
    try:
        for start in bar:
            chunk = indices[start : start + batch_size]
            real = [i if i >= 0 else indices[0] for i in chunk]
            if rank_words is not None:
                texts = rank_classify(
                    model, [features[i] for i in real], rank_words, tokenizer, family,
                    pad_id, accelerator.device,
                )
                mine.extend((i, t) for i, t in zip(chunk, texts, strict=True) if i >= 0)
                continue
            batch = collate_generate([features[i] for i in real], pad_id, side)
            kwargs = {"synced_gpus": True} if synced_gpus else {}
            out = model.generate(
                batch["input_ids"].to(accelerator.device),
                batch["attention_mask"].to(accelerator.device),
                max_new_tokens=max_new_tokens,
                pad_token_id=pad_id,
                **kwargs,
            )
            texts = tokenizer.batch_decode(out, skip_special_tokens=True)
            mine.extend((i, t.strip()) for i, t in zip(chunk, texts, strict=True) if i >= 0)
    finally:
        model.train(was_training)
    gathered = gather_objects(accelerator, mine)
    by_index = dict(gathered)
    if sorted(by_index) != list(range(len(features))):
        raise RuntimeError(
            f"evaluation gathered {len(by_index)} predictions for {len(features)} examples"
        )
    return [by_index[i] for i in range(len(features))]


@torch.no_grad()
def answer_log_likelihood(
    model: Any, features: list[dict[str, Any]], answer: list[int], family: str, pad_id: int,
    device: torch.device,
) -> torch.Tensor:
    """Summed log-probability of `answer` (token ids, EOS included) after each
    example's prompt, [B]. Only the answer tokens are scored: the prompted
    model's `answer_logits` gives the output-head rows at those positions
    (computed there only when its `answer_only_logits` is on)."""
    if family == "seq2seq":
        rows = [{"input_ids": f["prompt_ids"], "labels": answer} for f in features]
    else:
        rows = [
            {"input_ids": f["prompt_ids"] + answer, "labels": [-100] * len(f["prompt_ids"]) + answer}
            for f in features
        ]
    batch = {k: v.to(device) for k, v in collate_train(rows, pad_id).items()}
    out = model.answer_logits(**batch)
    logits = out.logits if out.logits.dtype == torch.float64 else out.logits.float()
    picked = torch.log_softmax(logits, -1).gather(-1, out.targets.unsqueeze(-1)).squeeze(-1)
    example = out.keep.nonzero()[:, 0]  # the batch row of each answer token
    return logits.new_zeros(len(features)).index_add_(0, example, picked)


def rank_scores(
    model: Any, features: list[dict[str, Any]], words: list[str], tokenizer: Any, family: str,
    pad_id: int, device: torch.device,
) -> torch.Tensor:
    """[B, W]: the summed log-probability of each word (EOS included) after each example's prompt."""
    return torch.stack([
        answer_log_likelihood(
            model, features, tokenizer(w, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id],
            family, pad_id, device,
        )
        for w in words
    ], dim=1)


def rank_classify(
    model: Any, features: list[dict[str, Any]], words: list[str], tokenizer: Any, family: str,
    pad_id: int, device: torch.device,
) -> list[str]:
    """The label word each example's prompt makes most likely (ties: the first word)."""
    scores = rank_scores(model, features, words, tokenizer, family, pad_id, device)
    return [words[i] for i in scores.argmax(dim=1).tolist()]


def gather_objects(accelerator: Accelerator, items: list[Any]) -> list[Any]:
    """All ranks' lists, concatenated, on every rank."""
    if accelerator.num_processes == 1:
        return list(items)
    out: list[list[Any]] = [None] * accelerator.num_processes  # type: ignore[list-item]
    torch.distributed.all_gather_object(out, items)
    return [item for part in out for item in part]


def reference_mode(task: Any, qa_references: str = "all", nlg_references: str = "text") -> str:
    """"target" where the task is scored against its decoded trained target
    (the released protocol: eval.qa_references=target for QA except the tasks
    the release scores against all answers, eval.nlg_references=target for
    generation), else "gold" (the task's own references)."""
    if qa_references not in QA_REFERENCES:
        raise ValueError(f"eval.qa_references must be one of {QA_REFERENCES}, got {qa_references!r}")
    if nlg_references not in NLG_REFERENCES:
        raise ValueError(f"eval.nlg_references must be one of {NLG_REFERENCES}, got {nlg_references!r}")
    if task.kind == "qa" and qa_references == "target" and not task.release_all_answers:
        return "target"
    if task.kind == "generation" and nlg_references == "target":
        return "target"
    return "gold"


def evaluate(
    accelerator: Accelerator,
    model: Any,
    task: Any,
    features: list[dict[str, Any]],
    tokenizer: Any,
    family: str,
    batch_size: int,
    max_new_tokens: int | None,
    synced_gpus: bool = False,
    desc: str = "eval",
    rank_classification: bool = False,
    references: str = "gold",
) -> tuple[dict[str, Any], list[str]]:
    """Scores `features` with the task's metrics; returns (metrics, predictions).
    `rank_classification` applies to tasks with label words (others generate).
    `references`: "gold" scores against the task's references, "target"
    against each feature's decoded label ids (see `reference_mode`)."""
    words = list(task.label_words) if rank_classification and task.is_classification else None
    predictions = predict(
        accelerator, model, features, tokenizer, family, batch_size,
        max_new_tokens or task.max_target_length, synced_gpus, desc, rank_words=words,
    )
    if references == "target":
        refs: list[Any] = [label_reference(f, tokenizer, family) for f in features]
    elif references == "gold":
        refs = [f["reference"] for f in features]
    else:
        raise ValueError(f"references must be 'gold' or 'target', got {references!r}")
    metrics = task.score(predictions, refs)
    metrics["num_examples"] = len(features)
    return metrics, predictions
