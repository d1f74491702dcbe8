"""An independent, list-based reference of the examples a row becomes, for the
tests of the one tokenization path (`dtvg_dist.data.encoding.Encoder`, which
the tokenized-split cache, `encode` and `predict` all use).

This is the package's former `encode`: whole-call tokenization, one Python
list per example, no Arrow, no fast path. The layout (`example_layout`) is
shared, the assembly is not.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dtvg_dist.data import example_layout
from dtvg_dist.tasks import Task


def reference_encode(
    task: Task, rows: Sequence[dict], tokenizer: Any, family: str, template: str = "default"
) -> list[dict[str, Any]]:
    """seq2seq: input_ids = prefix + source[:budget] + EOS, labels = answer + EOS;
    causal: prompt = prefix + source[:budget] + sep, input_ids = prompt +
    answer_prefix + answer + EOS, labels -100 over the prompt."""
    lay = example_layout(task, tokenizer, family, template)
    pairs = [task.format(row) for row in rows]
    if not pairs:
        return []
    sources = tokenizer([s for s, _ in pairs], add_special_tokens=False)["input_ids"]
    targets = tokenizer([t for _, t in pairs], add_special_tokens=False)["input_ids"]
    out: list[dict[str, Any]] = []
    for row, src, tgt in zip(rows, sources, targets, strict=True):
        answer = lay.answer_prefix + list(tgt) + [lay.eos]
        if family == "seq2seq":
            input_ids = lay.prefix + list(src[: lay.budget]) + [lay.eos]
            out.append({"input_ids": input_ids, "labels": answer, "prompt_ids": input_ids,
                        "reference": task.reference(row)})
        else:
            prompt = lay.prefix + list(src[: lay.budget]) + list(lay.sep)
            out.append({"input_ids": prompt + answer, "labels": [-100] * len(prompt) + answer,
                        "prompt_ids": prompt, "reference": task.reference(row)})
    return out
