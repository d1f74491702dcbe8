"""`python -m dtvg_dist.dataset download --to DIR`: an offline mirror of the tasks' data.

On a machine with hub access, copies each task's hub Parquet files (only the
splits the task uses) to `DIR/<task>/<hub split>-NNNNN-of-NNNNN.parquet`,
the layout `data.local_dir=DIR` reads, and records hub id, revision, commit,
row counts and sha256 of every file in `DIR/manifest.json`. Compute nodes
without internet then train with `data.local_dir=DIR`; loading checks the
files against the manifest.
"""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dtvg_dist.data import hub
from dtvg_dist.data.manifest import sha256_file
from dtvg_dist.tasks.base import Task

__all__ = ["download_task"]


def download_task(task: Task, dest: str | Path, revision: str | None = None) -> dict[str, Any]:
    """Mirror one task into `dest/<task>/`; return its manifest entry."""
    import pyarrow.parquet as pq

    found = hub.fetch(task, revision, hint="(data download needs hub access)")
    folder = Path(dest).expanduser() / task.name
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.parquet"):  # a previous download of this task
        stale.unlink()
    files: dict[str, dict[str, Any]] = {}
    for split, paths in found.files.items():
        for i, src in enumerate(paths):
            name = f"{split}-{i:05d}-of-{len(paths):05d}.parquet"
            target = folder / name
            shutil.copyfile(src, target)  # follows the cache's symlink to the blob
            files[f"{task.name}/{name}"] = {
                "split": split,
                "rows": pq.ParquetFile(target).metadata.num_rows,
                "sha256": sha256_file(target),
                "hub_path": src.relative_to(found.root).as_posix(),
            }
    return {
        "hub_id": task.hub_id,
        "config": task.hub_config,
        "folder": task.hub_folder,
        "revision": found.revision,
        "commit": found.commit,
        "downloaded": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "files": files,
    }
