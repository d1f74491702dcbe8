"""Fault injection for tests of crash safety: set DTVG_FAULT_STEP=k (1-based
optimizer step), optionally DTVG_FAULT_RANK=r (default: every rank) and
DTVG_FAULT_KIND = raise | sigkill | sigterm | sigusr1 | nan (sigterm and
sigusr1: the signal a scheduler sends, to this process only) | wait (pause
until the file DTVG_FAULT_FILE exists, at most 300 s: lets a test line up two
processes) | pause (for preemption tests that signal a run from outside,
through a scheduler: write DTVG_FAULT_FILE, then wait up to
DTVG_FAULT_PAUSE_S seconds, default 60, for a stop signal, so the signal lands
at a known step whatever the scheduler's latency). Unset, it costs one dict
lookup."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import torch


class InjectedFault(RuntimeError):
    """Raised on purpose by DTVG_FAULT_KIND=raise."""


def _armed(step: int, rank: int) -> str | None:
    at = os.environ.get("DTVG_FAULT_STEP")
    if at is None or int(at) != step:
        return None
    only_rank = os.environ.get("DTVG_FAULT_RANK")
    if only_rank is not None and int(only_rank) != rank:
        return None
    return os.environ.get("DTVG_FAULT_KIND", "raise")


def before_step(step: int, rank: int) -> None:
    """Crash the process at the start of optimizer step `step`."""
    kind = _armed(step, rank)
    if kind in ("sigkill", "sigterm", "sigusr1"):
        os.kill(os.getpid(), getattr(signal, kind.upper()))
    if kind == "wait":
        deadline = time.monotonic() + 300
        while not Path(os.environ["DTVG_FAULT_FILE"]).exists() and time.monotonic() < deadline:
            time.sleep(0.1)
    if kind == "raise":
        raise InjectedFault(f"injected fault at step {step} on rank {rank}")
    if kind == "pause":
        _pause(step, rank)


def _pause(step: int, rank: int) -> None:
    from dtvg_dist.training.signals import stop_request

    marker = os.environ.get("DTVG_FAULT_FILE")
    if marker:
        path = Path(marker)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"step {step} rank {rank} pid {os.getpid()}\n")
    deadline = time.monotonic() + float(os.environ.get("DTVG_FAULT_PAUSE_S", "60"))
    request = stop_request()
    while not request.requested and time.monotonic() < deadline:
        time.sleep(0.05)


def poison_loss(loss: torch.Tensor, step: int, rank: int) -> torch.Tensor:
    """DTVG_FAULT_KIND=nan: turn the loss of `step` into NaN."""
    return loss * float("nan") if _armed(step, rank) == "nan" else loss
