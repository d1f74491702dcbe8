"""The manifest of an offline mirror (`python -m dtvg_dist.dataset download`).

`<dir>/manifest.json` records, per task, the hub id, revision and commit the
files came from and, per file, its split, row count and sha256. Loading from
`data.local_dir=<dir>` checks the files of the task it reads against it, so
a file edited or truncated after the download is named, not silently used.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from dtvg_dist.tasks.schema import DataError

__all__ = ["MANIFEST", "read_manifest", "sha256_file", "verify_task", "write_manifest"]

MANIFEST = "manifest.json"
FORMAT = 1


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(folder: str | Path) -> dict[str, Any] | None:
    """The manifest of a mirror folder, or None when it has none."""
    path = Path(folder).expanduser() / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from err
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), dict):
        raise DataError(f"{path}: not a dtvg-dist data manifest (no 'tasks' mapping)")
    return data


def write_manifest(folder: str | Path, tasks: dict[str, dict[str, Any]]) -> Path:
    """Merge `tasks` into the folder's manifest (other tasks' entries are kept)."""
    path = Path(folder).expanduser() / MANIFEST
    data = read_manifest(folder) or {"format": FORMAT, "tasks": {}}
    data["format"] = FORMAT
    data["tasks"].update(tasks)
    data["tasks"] = dict(sorted(data["tasks"].items()))
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(path)  # never a half-written manifest
    return path


def verify_task(folder: str | Path, task_name: str) -> dict[str, Any] | None:
    """Check the task's mirrored files against the manifest; return its entry
    (None when the folder has no manifest or the manifest lacks the task)."""
    root = Path(folder).expanduser()
    manifest = read_manifest(root)
    if manifest is None or task_name not in manifest["tasks"]:
        return None
    entry = manifest["tasks"][task_name]
    for rel, facts in sorted(entry.get("files", {}).items()):
        path = root / rel
        if not path.is_file():
            raise DataError(
                f"task '{task_name}': {path} is listed in {root / MANIFEST} but missing; "
                "download the task again (python -m dtvg_dist.dataset download --to DIR tasks=...)"
            )
        digest = sha256_file(path)
        if digest != facts.get("sha256"):
            raise DataError(
                f"task '{task_name}': {path} changed since it was downloaded (sha256 {digest[:12]}..., "
                f"manifest {str(facts.get('sha256'))[:12]}...); download the task again or remove "
                f"its entry from {root / MANIFEST}"
            )
    return entry
