"""`eval.early_stopping_patience=N`: stop after N evaluations in a row whose
selection score did not beat the best so far (null: never, the default and
what the paper's runs do). The count lives in the checkpoint's state.json
(`TrainingState.evals_without_improvement`), so a resumed run goes on
counting where it stopped. Why a run ended is results.json's `stop_reason`.
"""

from __future__ import annotations

from typing import Any

MAX_STEPS = "max_steps"
EARLY_STOPPING = "early_stopping"
PREEMPTED = "preempted"  # a stop signal; exit 75, resumable
DIVERGED = "diverged"  # a non-finite loss; exit 3
STOP_REASONS = (MAX_STEPS, EARLY_STOPPING, PREEMPTED, DIVERGED)
# An unfinished run (preempted, diverged) has no results.json; this file in its
# run folder says why it stopped, at which step, with which exit code.
STOPPED_FILE = "stopped.json"


def count_evaluation(state: Any, improved: bool) -> None:
    """After one validation: reset the count on an improvement, else add one."""
    state.evals_without_improvement = 0 if improved else state.evals_without_improvement + 1


def should_stop(state: Any, patience: int | None) -> bool:
    return patience is not None and state.evals_without_improvement >= patience
