"""Training state on disk without pickle: tensors in safetensors, the rest
in JSON, written to a temporary folder and renamed so the latest checkpoint
is always whole.

A checkpoint holds what a resumed run needs to continue bit for bit: the
trainable tensors, the optimizer's per-parameter state and hyperparameters,
the scheduler's counters, the RNG states, the step, and the best validation
result so far with its tensors.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

CHECKPOINT_DIR = "checkpoint"


@dataclass
class TrainingState:
    step: int = 0
    best_score: float | None = None
    best_step: int | None = None
    best_metrics: dict[str, Any] = field(default_factory=dict)


def _rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = state
    np_state = np.random.get_state()
    meta = {
        "python": _to_json(random.getstate()),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }
    return tensors, meta


def _to_json(obj: Any) -> Any:
    if isinstance(obj, tuple | list):
        return [_to_json(x) for x in obj]
    return obj


def _to_tuple(obj: Any) -> Any:
    if isinstance(obj, list):
        return tuple(_to_tuple(x) for x in obj)
    return obj


def _set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    if torch.cuda.is_available():
        states = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda_")]
        if states:
            torch.cuda.set_rng_state_all(states)
    random.setstate(_to_tuple(meta["python"]))
    kind, keys, *rest = meta["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))


def optimizer_to_files(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state dict into tensors and JSON."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, per_param in state["state"].items():
        for key, value in per_param.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    groups = [{k: v for k, v in g.items()} for g in state["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def optimizer_from_files(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict
) -> None:
    per_param: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        index, key = name.split(".", 1)
        per_param.setdefault(int(index), {})[key] = value
    for index, values in meta["scalars"].items():
        per_param.setdefault(int(index), {}).update(values)
    optimizer.load_state_dict({"state": per_param, "param_groups": meta["param_groups"]})


def _scheduler_json(scheduler: Any) -> dict[str, Any]:
    state = scheduler.state_dict()
    return {k: v for k, v in state.items() if _jsonable(v)}


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except TypeError:
        return False
    return True


def save_checkpoint(
    run_dir: Path,
    *,
    trainable: dict[str, torch.Tensor],
    best_trainable: dict[str, torch.Tensor] | None,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: TrainingState,
) -> Path:
    """Write `<run_dir>/checkpoint` atomically (tmp folder, then rename)."""
    final = run_dir / CHECKPOINT_DIR
    tmp = run_dir / (CHECKPOINT_DIR + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in trainable.items()},
              str(tmp / "trainable.safetensors"))
    if best_trainable is not None:
        save_file({k: v.detach().cpu().contiguous() for k, v in best_trainable.items()},
                  str(tmp / "best.safetensors"))
    opt_tensors, opt_meta = optimizer_to_files(optimizer)
    save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
    rng_tensors, rng_meta = _rng_state()
    save_file(rng_tensors, str(tmp / "rng.safetensors"))
    meta = {
        "state": asdict(state),
        "optimizer": opt_meta,
        "scheduler": _scheduler_json(scheduler),
        "rng": rng_meta,
    }
    (tmp / "state.json").write_text(json.dumps(meta))
    _fsync_dir(tmp)
    old = run_dir / (CHECKPOINT_DIR + ".old")
    if final.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)
    return final


def _fsync_dir(path: Path) -> None:
    for child in path.iterdir():
        with open(child, "rb") as handle:
            os.fsync(handle.fileno())


def find_checkpoint(run_dir: Path) -> Path | None:
    """The latest whole checkpoint: `checkpoint/`, or `checkpoint.old/` if a
    crash came between the two renames."""
    for name in (CHECKPOINT_DIR, CHECKPOINT_DIR + ".old"):
        path = run_dir / name
        if (path / "state.json").is_file():
            return path
    return None


@dataclass
class LoadedCheckpoint:
    trainable: dict[str, torch.Tensor]
    best_trainable: dict[str, torch.Tensor] | None
    state: TrainingState
    path: Path
    _optimizer: tuple[dict[str, torch.Tensor], dict]
    _scheduler: dict[str, Any]
    _rng: tuple[dict[str, torch.Tensor], dict[str, Any]]

    def restore(self, optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
        optimizer_from_files(optimizer, *self._optimizer)
        scheduler_state = scheduler.state_dict()
        scheduler_state.update(self._scheduler)
        scheduler.load_state_dict(scheduler_state)
        _set_rng_state(*self._rng)


def load_checkpoint(path: Path) -> LoadedCheckpoint:
    meta = json.loads((path / "state.json").read_text())
    best_file = path / "best.safetensors"
    return LoadedCheckpoint(
        trainable=load_file(str(path / "trainable.safetensors")),
        best_trainable=load_file(str(best_file)) if best_file.is_file() else None,
        state=TrainingState(**meta["state"]),
        path=path,
        _optimizer=(load_file(str(path / "optimizer.safetensors")), meta["optimizer"]),
        _scheduler=meta["scheduler"],
        _rng=(load_file(str(path / "rng.safetensors")), meta["rng"]),
    )
