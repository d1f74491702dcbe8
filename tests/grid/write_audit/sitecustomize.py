"""Test aid: with DTVG_WRITE_AUDIT=<folder> and this folder first on
PYTHONPATH, every Python process of a run (launchers, workers, submitit's
task) appends one JSON line per file it opens for writing or renames into
place: which node (SLURM_NODEID) and rank (RANK) wrote which path. The
two-node SLURM tests read it to check that shared files are written once."""

import json
import os
import sys

_FOLDER = os.environ.get("DTVG_WRITE_AUDIT")


def _record(path: object) -> None:
    try:
        line = json.dumps({"path": os.path.abspath(os.fsdecode(path)), "pid": os.getpid(),
                           "node": os.environ.get("SLURM_NODEID"), "rank": os.environ.get("RANK")})
        fd = os.open(os.path.join(_FOLDER, f"{os.getpid()}.jsonl"),
                     os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)
    except Exception:  # noqa: BLE001 - an audit must never break the process it watches
        pass


def _hook(event: str, args: tuple) -> None:
    if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        mode, flags = args[1], args[2] if len(args) > 2 else 0
        writing = (any(c in mode for c in "wax+") if isinstance(mode, str)
                   else bool(flags & (os.O_WRONLY | os.O_RDWR)))
        if writing and _FOLDER not in os.fsdecode(args[0]):
            _record(args[0])
    elif event == "os.rename" and len(args) > 1:
        _record(args[1])


if _FOLDER:
    sys.addaudithook(_hook)
