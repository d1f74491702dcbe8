"""Checkpoints on disk: the last two are kept, each file's sha256 is checked
on load, a bad newest one falls back to the previous in one reported line,
and with none usable the error says what to delete."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from dtvg_dist.store.checkpoint import (
    CheckpointError,
    TrainingState,
    load_checkpoint,
    load_latest,
    save_checkpoint,
)
from dtvg_dist.store.checkpoint_slots import (
    checkpoints,
    mark_stopped,
    remove_checkpoints,
    signal_stopped,
    stopped_by_signal,
)


def _save(run_dir: Path, step: int, **extra) -> torch.Tensor:
    weight = torch.nn.Parameter(torch.full((2, 3), float(step)))
    optimizer = torch.optim.AdamW([weight], lr=0.1)
    weight.grad = torch.ones_like(weight)
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    save_checkpoint(run_dir, trainable={"prompt": weight.detach()}, best_trainable=None,
                    optimizer=optimizer, scheduler=scheduler, state=TrainingState(step=step),
                    **extra)
    return weight.detach().clone()


def test_last_two_are_kept_newest_first(tmp_path):
    for step in (3, 6, 9):
        latest = _save(tmp_path, step, bank={"syn_same": "ab" * 32})
    assert [p.name for p in checkpoints(tmp_path)] == ["checkpoint", "checkpoint.prev"]
    loaded = load_latest(tmp_path)
    assert loaded.state.step == 9 and torch.equal(loaded.trainable["prompt"], latest)
    assert loaded.bank == {"syn_same": "ab" * 32} and loaded.stopped_by is None
    assert load_checkpoint(tmp_path / "checkpoint.prev").state.step == 6


@pytest.mark.parametrize("damage", ["truncate", "flip", "state"])
def test_bad_newest_falls_back_in_one_line(tmp_path, caplog, damage):
    _save(tmp_path, 3)
    _save(tmp_path, 6)
    bad = tmp_path / "checkpoint" / ("state.json" if damage == "state" else "rng.safetensors")
    data = bytearray(bad.read_bytes())
    if damage == "truncate" or damage == "state":
        data = data[: len(data) // 2]
    else:
        data[-1] ^= 0x01
    bad.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="dtvg_dist.store.checkpoint"):
        loaded = load_latest(tmp_path)
    assert loaded.state.step == 3 and loaded.path.name == "checkpoint.prev"
    [record] = caplog.records
    message = record.getMessage()
    assert str(bad) in message and "\n" not in message


def test_none_usable_says_what_to_delete(tmp_path):
    _save(tmp_path, 3)
    _save(tmp_path, 6)
    for name in ("checkpoint", "checkpoint.prev"):
        (tmp_path / name / "trainable.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError) as err:
        load_latest(tmp_path)
    text = str(err.value)
    assert f"Delete {tmp_path / 'checkpoint'} and {tmp_path / 'checkpoint.prev'}" in text
    assert text.count("trainable.safetensors") == 2
    assert load_latest(tmp_path / "nothing-here") is None


def test_stop_marks_and_fresh_start(tmp_path):
    _save(tmp_path, 3)
    assert stopped_by_signal(tmp_path) is None
    mark_stopped(tmp_path, "SIGUSR1")
    assert stopped_by_signal(tmp_path) == "SIGUSR1"
    assert load_latest(tmp_path).stopped_by == "SIGUSR1"  # the mark keeps the checksums valid
    _save(tmp_path / "stage1" / "syn_same", 2, stopped_by="SIGTERM")
    assert signal_stopped(tmp_path) == [tmp_path, tmp_path / "stage1" / "syn_same"]
    remove_checkpoints(tmp_path)
    assert checkpoints(tmp_path) == [] and signal_stopped(tmp_path) == [tmp_path / "stage1" / "syn_same"]
