"""What a logged step row says about speed, memory and gradients.

The numbers are counted on the host from what the trainer already knows (how
many examples and backbone tokens each global batch holds, the wall clock),
so a step that does not log reads no device value: the window of steps since
the last logged one is timed as a whole, and only a logged step reads the
gradient norm and the memory peak (one small collective for the maximum over
ranks). Keys and units: docs/outputs.md.
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from collections.abc import Iterable
from typing import Any

import torch

# ru_maxrss is in kilobytes on Linux and in bytes on macOS (getrusage(2)).
_RSS_UNIT = 1 if sys.platform == "darwin" else 1024


def local_peak_memory_mb(device: torch.device) -> float:
    """This process's peak: CUDA's max allocated bytes on a GPU, the process's
    peak resident set size (getrusage) elsewhere; MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * _RSS_UNIT / 2**20


def backbone_tokens(feature: dict[str, Any], prompt_length: int, seq2seq: bool) -> int:
    """Tokens the backbone processes for one training example, padding left
    out: its input plus the soft prompt's positions, and for an
    encoder-decoder also its target (the decoder's input)."""
    tokens = len(feature["input_ids"]) + prompt_length
    if seq2seq:
        tokens += len(feature["labels"])
    return tokens


def grad_norm(parameters: Iterable[torch.nn.Parameter]) -> torch.Tensor | None:
    """L2 norm of the gradients of `parameters` (a device tensor: no host copy)."""
    norms = [p.grad.detach().float().norm() for p in parameters if p.grad is not None]
    if not norms:
        return None
    return torch.linalg.vector_norm(torch.stack(norms))


class ThroughputWindow:
    """Examples and tokens since the last logged step, and the time they took."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.steps = self.samples = self.tokens = 0

    def add(self, samples: int, tokens: int) -> None:
        self.steps += 1
        self.samples += samples
        self.tokens += tokens

    def close(self) -> dict[str, float]:
        """The window's step_time_s, samples_per_s, tokens_per_s; starts a new one."""
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        row = {
            "step_time_s": elapsed / max(self.steps, 1),
            "samples_per_s": self.samples / elapsed,
            "tokens_per_s": self.tokens / elapsed,
        }
        self.__init__()
        return row


def run_summary(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    """results.json's speed and memory: the median samples_per_s and
    tokens_per_s of the logged step rows and the largest peak_memory_mb."""
    logged = [r for r in rows if "samples_per_s" in r and "split" not in r]

    def median(key: str) -> float | None:
        values = [float(r[key]) for r in logged if isinstance(r.get(key), int | float)]
        return round(statistics.median(values), 3) if values else None

    peaks = [float(r["peak_memory_mb"]) for r in logged if isinstance(r.get("peak_memory_mb"), int | float)]
    return {
        "samples_per_s": median("samples_per_s"),
        "tokens_per_s": median("tokens_per_s"),
        "peak_memory_mb": round(max(peaks), 1) if peaks else None,
    }
