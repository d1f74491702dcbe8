"""Experiment trackers (TensorBoard, Weights & Biases, mlflow) through accelerate.

accelerate drops a tracker whose package is missing with only a warning, and
TensorBoard refuses nested or None hyperparameters, so a user who asked for
tracking could train for days with nothing recorded. Here a missing package
is an error before anything loads, the recipe is flattened into values every
tracker takes, and the trainer's rows become scalars under one tag scheme:
``<run name>/<key>`` (for example ``stage2/dtvg/loss``,
``stage2/dtvg/validation/accuracy``, ``stage2/dtvg/similarity/syn_same``).
Importing this module imports no tracker. mlflow writes, unless
MLFLOW_TRACKING_URI says otherwise, to a local SQLite store
``<output_dir>/mlflow.db`` (offline; ``mlflow ui --backend-store-uri
sqlite:///<that file>`` reads it; mlflow 3 refuses its old ``./mlruns`` file
store unless MLFLOW_ALLOW_FILE_STORE=true), one mlflow run per training
command, experiment = recipe.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Tracker name (accelerate's LoggerType) -> the packages accelerate can use for it.
# accelerate's TensorBoardTracker imports torch.utils.tensorboard (which needs
# `tensorboard`) and falls back to tensorboardX (accelerate/tracking.py,
# TensorBoardTracker.start); its WandBTracker imports `wandb`.
TRACKER_PACKAGES: dict[str, tuple[str, ...]] = {
    "tensorboard": ("tensorboard", "tensorboardX"),
    "wandb": ("wandb",),
    "mlflow": ("mlflow",),  # accelerate's MLflowTracker imports mlflow
}
# The optional extra of pyproject.toml that installs a tracker's package.
TRACKER_EXTRAS = {"tensorboard": "tracking", "mlflow": "mlflow"}
MLFLOW_DB = "mlflow.db"


def missing_tracker_package(tracker: str) -> str | None:
    """The message for a tracker that cannot run here, or None when it can."""
    if tracker not in TRACKER_PACKAGES:
        return f"{tracker!r} is not one of {', '.join(TRACKER_PACKAGES)}"
    packages = TRACKER_PACKAGES[tracker]
    if any(importlib.util.find_spec(name) is not None for name in packages):
        return None
    extra = TRACKER_EXTRAS.get(tracker)
    hint = f"pip install 'dtvg-dist[{extra}]'" if extra else f"pip install {packages[0]}"
    return (
        f"{tracker!r} needs the package {packages[0]}, which is not installed "
        f"({hint}, or remove it from logging.trackers)"
    )


def flat_config(node: Mapping[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """A nested config as ``{"a.b": value}`` with bool/int/float/str values only
    (lists as JSON text, None as "null"), which TensorBoard's hparams accept."""
    out: dict[str, bool | int | float | str] = {}
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat_config(value, name + "."))
        elif value is None:
            out[name] = "null"
        elif isinstance(value, bool | int | float | str):
            out[name] = value
        else:
            out[name] = json.dumps(value, default=str)
    return out


def scalars(prefix: str, values: Mapping[str, Any]) -> dict[str, float]:
    """``{prefix/key: float}`` for the finite numbers among ``values`` (a row of
    metrics.jsonl); text, None, NaN and the step itself are left out."""
    out = {}
    for key, value in values.items():
        if key == "step" or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(value):
            out[f"{prefix}/{key}"] = float(value)
    return out


def local_mlflow_store(trackers: list[str], project_dir: str | Path) -> None:
    """With mlflow among `trackers` and no MLFLOW_TRACKING_URI of the user's,
    point mlflow at a SQLite file in the output dir (offline, no server).
    A URI this function set for an earlier run of the process is replaced."""
    global _SET_BY_US
    current = os.environ.get("MLFLOW_TRACKING_URI")
    if "mlflow" not in trackers or (current and current != _SET_BY_US):
        return
    store = Path(project_dir).resolve()
    store.mkdir(parents=True, exist_ok=True)
    _SET_BY_US = f"sqlite:///{store / MLFLOW_DB}"
    os.environ["MLFLOW_TRACKING_URI"] = _SET_BY_US


_SET_BY_US: str | None = None
