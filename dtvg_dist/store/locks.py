"""Locks that keep two processes from writing one run folder or training one
bank entry at once.

Both are `filelock.FileLock`s: `flock(2)` on the lock file, held for as long
as the lock object is and released by the kernel when the holder dies, so a
crashed run never leaves a lock that blocks the folder for ever. Beside each
lock a small JSON file names the holder (host, pid, start time), for the
message a second process prints and for `lock_holder` (a locked run folder is
a running run). On a shared filesystem the lock is only as good as the
filesystem's flock: Linux NFS clients map flock onto NFS byte-range locks
(NLM for v3, the protocol's own locks for v4), which work across machines
unless the filesystem is mounted with `nolock` or `local_lock=flock|all`;
where flock is missing altogether (ENOSYS) filelock falls back to a soft,
existence-based lock.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from dtvg_dist.errors import RunLocked  # noqa: F401 - raised here, imported from here

log = logging.getLogger("dtvg_dist.store.locks")

LOCK = ".lock"
HOLDER = ".lock.json"
POLL_S = 0.5




def _holder_file(lock_file: Path) -> Path:
    return lock_file.with_name(lock_file.name + ".json")


def _me() -> dict[str, Any]:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _read_holder(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def describe(holder: dict[str, Any] | None) -> str:
    """`host <h>, pid <p>, started <t>` (or that the holder is unknown)."""
    if not holder:
        return "an unknown process (no holder file)"
    return f"host {holder.get('host')}, pid {holder.get('pid')}, started {holder.get('started')}"


def _is_locked(lock_file: Path) -> bool:
    """Whether some process holds `lock_file` now (a try that is given back at once)."""
    if not lock_file.exists():
        return False
    probe = FileLock(str(lock_file))
    try:
        probe.acquire(timeout=0)
    except Timeout:
        return True
    probe.release()
    return False


def lock_holder(folder: Path) -> dict[str, Any] | None:
    """The live holder of `folder`'s run lock ({"host", "pid", "started"}), or
    None when nobody holds it."""
    lock_file = Path(folder) / LOCK
    if not _is_locked(lock_file):
        return None
    return _read_holder(_holder_file(lock_file)) or {"host": None, "pid": None, "started": None}


def _take(lock_file: Path, what: str) -> FileLock:
    """Acquire `lock_file` without waiting, write the holder file, and warn
    when it replaces the record of a holder that is gone."""
    lock = FileLock(str(lock_file))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        holder = _read_holder(_holder_file(lock_file))
        raise RunLocked(
            f"{what} is in use by another process ({describe(holder)}); wait for it to "
            "finish or stop it, then run again"
        ) from None
    _claimed(lock_file, what)
    return lock


def _claimed(lock_file: Path, what: str) -> None:
    holder_file = _holder_file(lock_file)
    previous = _read_holder(holder_file)
    if previous and previous.get("pid") != os.getpid():
        same_host = previous.get("host") == socket.gethostname()
        dead = same_host and isinstance(previous.get("pid"), int) and not _alive(previous["pid"])
        state = "is no longer running" if dead else "did not release it"
        log.warning("%s: taking over a stale lock; its holder (%s) %s", what, describe(previous), state)
    tmp = holder_file.with_name(holder_file.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(_me()))
    os.replace(tmp, holder_file)


def _give_back(lock: FileLock, lock_file: Path) -> None:
    holder = _read_holder(_holder_file(lock_file))
    if holder and holder.get("pid") == os.getpid():
        _holder_file(lock_file).unlink(missing_ok=True)
    lock.release()


@contextlib.contextmanager
def run_lock(folder: Path) -> Iterator[None]:
    """Hold `<folder>/.lock` exclusively for the block; a second process gets
    RunLocked at once naming the folder and the holder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock_file = folder / LOCK
    lock = _take(lock_file, f"run folder {folder}")
    try:
        yield
    finally:
        _give_back(lock, lock_file)


class EntryClaim:
    """A per-entry stage-1 lock taken in two moves, so a caller that must keep
    other processes (ranks) in step can poll: `try_take()` until it returns
    True, then `release()`. `waited` says another process held it first."""

    def __init__(self, bank_dir: Path, task: str) -> None:
        self.bank_dir = Path(bank_dir)
        self.task = task
        self.lock_file = self.bank_dir / f".{task}.lock"
        self.lock = FileLock(str(self.lock_file))
        self.waited = False
        self.held = False

    def holder(self) -> str:
        return describe(_read_holder(_holder_file(self.lock_file)))

    def try_take(self, wait_s: float = 0.0) -> bool:
        self.bank_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.lock.acquire(timeout=wait_s, poll_interval=min(POLL_S, max(wait_s, 0.01)))
        except Timeout:
            self.waited = True
            return False
        _claimed(self.lock_file, f"bank entry {self.task} in {self.bank_dir}")
        self.held = True
        return True

    def release(self) -> None:
        if self.held:
            _give_back(self.lock, self.lock_file)
            self.held = False


@contextlib.contextmanager
def entry_lock(bank_dir: Path, task: str, timeout_s: float) -> Iterator[EntryClaim]:
    """Hold the stage-1 lock of bank entry `task` for the block; when another
    process holds it, log one line and wait up to `timeout_s` (RunLocked after
    that). The caller re-checks the entry inside the block: when `waited`, the
    other process has probably just written it."""
    claim = EntryClaim(bank_dir, task)
    if not claim.try_take():
        log.info("bank entry %s: being trained by %s; waiting up to %.0f s for it",
                 task, claim.holder(), timeout_s)
        start = time.monotonic()
        if not claim.try_take(timeout_s):
            raise RunLocked(
                f"bank entry {task} in {bank_dir} is still being trained by {claim.holder()} "
                f"after {time.monotonic() - start:.0f} s; run again when it has finished"
            )
    try:
        yield claim
    finally:
        claim.release()
