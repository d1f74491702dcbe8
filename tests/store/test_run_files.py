"""A run's log files: appended rows reach the disk with the checkpoint that
covers them, not one fsync per row."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

from dtvg_dist.store.run_files import GROUPING, METRICS, RunFiles
from dtvg_dist.training import trainer as trainer_module


def _fsynced(monkeypatch) -> list[str]:
    """The file names os.fsync is called on from now on."""
    names: list[str] = []
    real = os.fsync

    def recorded(fd: int) -> None:
        names.append(Path(os.readlink(f"/proc/self/fd/{fd}")).name)
        real(fd)

    monkeypatch.setattr(os, "fsync", recorded)
    return names


def test_rows_are_readable_at_once_and_synced_together(tmp_path, monkeypatch) -> None:
    synced = _fsynced(monkeypatch)
    files = RunFiles(tmp_path)
    for step in (1, 2, 3):
        files.log_metrics({"step": step, "loss": float("nan") if step == 2 else 0.5})
    files.log_grouping([{"step": 3, "group": ["a"]}])
    rows = [json.loads(line) for line in (tmp_path / METRICS).read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and rows[1]["loss"] == "nan"
    assert synced == []  # appends alone never wait for the disk
    files.sync()
    assert sorted(synced) == sorted([METRICS, GROUPING])


def test_a_disabled_run_files_writes_and_syncs_nothing(tmp_path, monkeypatch) -> None:
    synced = _fsynced(monkeypatch)
    files = RunFiles(tmp_path / "rank1", enabled=False)
    files.log_metrics({"step": 1})
    files.sync()
    assert synced == [] and not (tmp_path / "rank1").exists()


def test_a_checkpoint_syncs_the_logs_before_it_is_written(tmp_path, monkeypatch) -> None:
    """Trainer._save: the rows up to the checkpoint's step are on disk before
    the checkpoint that a resume would start from exists."""
    events: list[str] = []
    files = RunFiles(tmp_path)
    files.log_metrics({"step": 1, "loss": 0.5})
    monkeypatch.setattr(files, "sync", lambda: events.append("sync"))
    monkeypatch.setattr(trainer_module, "optimizer_for_save", lambda *args: {})
    monkeypatch.setattr(trainer_module, "save_checkpoint", lambda *args, **kwargs: events.append("checkpoint"))
    fake = SimpleNamespace(
        acc=SimpleNamespace(is_main_process=True, wait_for_everyone=lambda: events.append("barrier")),
        files=files, spec=SimpleNamespace(run_dir=tmp_path), optimizer=None, prompt=None,
        scheduler=None, bank_sha={})
    trainer_module.Trainer._save(fake, state=SimpleNamespace(step=1), best_state=None, trainable={})
    assert events == ["sync", "checkpoint", "barrier"]
