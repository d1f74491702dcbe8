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

from dtvg_dist.data import collate_generate, generation_padding_side


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
) -> list[str]:
    """Greedy predictions for `features`, in order, on every rank."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
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


def gather_objects(accelerator: Accelerator, items: list[Any]) -> list[Any]:
    """All ranks' lists, concatenated, on every rank."""
    if accelerator.num_processes == 1:
        return list(items)
    out: list[list[Any]] = [None] * accelerator.num_processes  # type: ignore[list-item]
    torch.distributed.all_gather_object(out, items)
    return [item for part in out for item in part]


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
) -> tuple[dict[str, Any], list[str]]:
    """Scores `features` with the task's metrics; returns (metrics, predictions)."""
    predictions = predict(
        accelerator, model, features, tokenizer, family, batch_size,
        max_new_tokens or task.max_target_length, synced_gpus, desc,
    )
    metrics = task.score(predictions, [f["reference"] for f in features])
    metrics["num_examples"] = len(features)
    return metrics, predictions
