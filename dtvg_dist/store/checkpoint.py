"""Training state on disk without pickle: tensors in safetensors, the rest
in JSON, written to a temporary folder and renamed so the latest checkpoint
is always whole.

A checkpoint holds what a resumed run needs to continue bit for bit: the
trainable tensors, the optimizer's per-parameter state and hyperparameters,
the scheduler's counters, the RNG states, the step, and the best validation
result so far with its tensors.

The last two checkpoints are kept (`checkpoint/`, then `checkpoint.prev/`),
and state.json records the sha256 of each tensor file, so a truncated or
corrupted newest one is reported and the previous one used. The checkpoint
also records the sha256 of every bank entry the run was built from and, when
a signal stopped the run, which one (a rerun then resumes by itself).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from dtvg_dist.errors import CheckpointError  # noqa: F401 - raised here, imported from here
from dtvg_dist.store.checkpoint_slots import CHECKPOINT_DIR, PREVIOUS, SLOTS, checkpoints

log = logging.getLogger("dtvg_dist.store.checkpoint")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class TrainingState:
    step: int = 0
    best_score: float | None = None
    best_step: int | None = None
    best_metrics: dict[str, Any] = field(default_factory=dict)
    # validations in a row without a better score (eval.early_stopping_patience)
    evals_without_improvement: int = 0


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
    bank: dict[str, str] | None = None,  # entry -> store.bank.entry_digest
    stopped_by: str | None = None,
) -> Path:
    """Write `<run_dir>/checkpoint` atomically (tmp folder, then rename),
    keeping the one before as `checkpoint.prev`. `bank`: entry -> sha256 of
    the bank entries the run uses; `stopped_by`: the signal that stopped it."""
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
        "files": {p.name: file_sha256(p) for p in sorted(tmp.glob("*.safetensors"))},
        "bank": dict(bank or {}),
        "stopped_by": stopped_by,
    }
    (tmp / "state.json").write_text(json.dumps(meta))
    _fsync_dir(tmp)
    previous = run_dir / PREVIOUS
    if final.exists():
        if previous.exists():
            shutil.rmtree(previous)
        os.replace(final, previous)
    os.replace(tmp, final)
    legacy = run_dir / SLOTS[2]
    if legacy.exists():
        shutil.rmtree(legacy)
    return final


def _fsync_dir(path: Path) -> None:
    for child in path.iterdir():
        with open(child, "rb") as handle:
            os.fsync(handle.fileno())


@dataclass
class LoadedCheckpoint:
    trainable: dict[str, torch.Tensor]
    best_trainable: dict[str, torch.Tensor] | None
    state: TrainingState
    path: Path
    _optimizer: tuple[dict[str, torch.Tensor], dict]
    _scheduler: dict[str, Any]
    _rng: tuple[dict[str, torch.Tensor], dict[str, Any]]
    bank: dict[str, str] = field(default_factory=dict)
    stopped_by: str | None = None

    def restore(self, optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
        optimizer_from_files(optimizer, *self._optimizer)
        scheduler_state = scheduler.state_dict()
        scheduler_state.update(self._scheduler)
        scheduler.load_state_dict(scheduler_state)
        _set_rng_state(*self._rng)


def _tensors(path: Path, expected: dict[str, str]) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path} is missing")
    want = expected.get(path.name)
    if want is not None and file_sha256(path) != want:
        raise CheckpointError(f"{path} does not match the sha256 in state.json (truncated or corrupt)")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path} is unreadable ({str(err).splitlines()[0]})") from None


def load_checkpoint(path: Path) -> LoadedCheckpoint:
    """Read and verify one checkpoint folder; CheckpointError names the bad file."""
    state_file = path / "state.json"
    try:
        meta = json.loads(state_file.read_text())
        state = TrainingState(**meta["state"])
        optimizer_meta, scheduler, rng = meta["optimizer"], meta["scheduler"], meta["rng"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{state_file} is unreadable ({err})") from None
    files = meta.get("files", {})
    best_file = path / "best.safetensors"
    has_best = best_file.is_file() or "best.safetensors" in files
    return LoadedCheckpoint(
        trainable=_tensors(path / "trainable.safetensors", files),
        best_trainable=_tensors(best_file, files) if has_best else None,
        state=state,
        path=path,
        _optimizer=(_tensors(path / "optimizer.safetensors", files), optimizer_meta),
        _scheduler=scheduler,
        _rng=(_tensors(path / "rng.safetensors", files), rng),
        bank=meta.get("bank", {}),
        stopped_by=meta.get("stopped_by"),
    )


def load_latest(run_dir: Path) -> LoadedCheckpoint | None:
    """The newest checkpoint that loads and verifies; each one that does not
    is reported in one line and the previous one tried. None when there is
    none; CheckpointError, saying what to delete, when none is usable."""
    found = checkpoints(run_dir)
    problems = []
    for path in found:
        try:
            return load_checkpoint(path)
        except CheckpointError as err:
            log.warning("checkpoint unusable: %s; trying the previous one", err)
            problems.append(str(err))
    if not found:
        return None
    raise CheckpointError(
        f"no usable checkpoint in {run_dir}: " + "; ".join(problems) + ". Delete "
        + " and ".join(str(p) for p in found) + " to train this run from the start"
    )
