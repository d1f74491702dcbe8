"""A task's Parquet files on the Hugging Face Hub, fetched into the local cache.

Every paper dataset is read from Parquet files at a fixed repository folder
and revision (`Task.hub_folder`, `Task.hub_revision`): loading scripts are
never run. `huggingface_hub.snapshot_download` fetches only the files of the
splits a task uses and serves them from the cache when the hub is offline;
it is the one place this package touches the network for data, so tests
replace it with a local folder.

A split's files are found by the three layouts the hub uses, in this order:
`<folder>/<split>/*.parquet` (the Parquet converter's
`refs/convert/parquet` branch, documented at
https://huggingface.co/docs/dataset-viewer/parquet), `<folder>/<split>-*.parquet`
(`push_to_hub` and "Convert dataset to Parquet" commits, e.g.
https://huggingface.co/datasets/rajpurkar/squad/blob/main/README.md) and
`<folder>/*-<split>.parquet` (the converter's older naming, e.g.
https://huggingface.co/datasets/GEM/dart/commit/4e5f3cc6c8ad9fdbfdc0aaf52872ca9b8f8bfd73).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from dtvg_dist.tasks.base import Task
from dtvg_dist.tasks.schema import DataError

__all__ = ["CONVERTED_REVISION", "HubFiles", "fetch", "split_patterns", "snapshot"]

# The branch where the hub keeps a Parquet copy of every public dataset.
CONVERTED_REVISION = "refs/convert/parquet"
_COMMIT = re.compile(r"[0-9a-f]{40}")


@dataclass
class HubFiles:
    """Where a task's hub splits are on this machine after `fetch`."""

    repo_id: str
    revision: str
    commit: str  # the snapshot's commit hash (the cache folder's name), else the revision
    root: Path
    files: dict[str, list[Path]] = field(default_factory=dict)  # hub split -> Parquet files

    def describe(self) -> str:
        commit = f" ({self.commit[:12]})" if self.commit != self.revision else ""
        return f"hub {self.repo_id}@{self.revision}{commit}"


def split_patterns(folder: str, split: str) -> list[str]:
    """The hub's Parquet layouts for one split of one config folder, preferred first."""
    return [f"{folder}/{split}/*.parquet", f"{folder}/{split}-*.parquet", f"{folder}/*-{split}.parquet"]


def snapshot(repo_id: str, revision: str, patterns: list[str]) -> Path:
    """Fetch the matching files of a dataset repository into the hub cache (or
    find them there when offline) and return the snapshot folder."""
    import huggingface_hub

    return Path(
        huggingface_hub.snapshot_download(
            repo_id=repo_id, repo_type="dataset", revision=revision, allow_patterns=patterns
        )
    )


def _split_files(root: Path, folder: str, split: str) -> list[Path]:
    from huggingface_hub.utils import filter_repo_objects

    names = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.parquet"))
    for pattern in split_patterns(folder, split):
        # The same matcher snapshot_download uses for allow_patterns.
        matched = sorted(filter_repo_objects(names, allow_patterns=[pattern]))
        if matched:
            return [root / name for name in matched]
    return []


def offline(library_flag: str = "HF_DATASETS_OFFLINE") -> bool:
    """True when hub downloads are switched off: huggingface_hub's HF_HUB_OFFLINE
    (read at its import, or set now) or the calling library's own flag
    (datasets' HF_DATASETS_OFFLINE, transformers' TRANSFORMERS_OFFLINE)."""
    import os

    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or any(
        os.environ.get(v, "").strip().lower() in {"1", "true", "yes", "on"}
        for v in ("HF_HUB_OFFLINE", library_flag)
    )


def fetch(task: Task, revision: str | None = None, hint: str = "") -> HubFiles:
    """The task's hub split files, downloaded (or cached) at `revision`
    (default `task.hub_revision`)."""
    rev = revision or task.hub_revision
    splits = list(dict.fromkeys(task.hub_splits().values()))
    patterns = [p for s in splits for p in split_patterns(task.hub_folder, s)]
    where = f"hub dataset '{task.hub_id}' at revision '{rev}' (folder '{task.hub_folder}/')"
    try:
        root = snapshot(task.hub_id, rev, patterns)
    except Exception as err:  # network, auth, missing repo or revision, offline without cache
        from huggingface_hub.errors import LocalEntryNotFoundError

        if offline():
            why = "it is not in the local hub cache and the hub is offline (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE)"
        elif isinstance(err, LocalEntryNotFoundError):
            why = "it is not in the local hub cache and the hub could not be reached"
        else:
            why = f"{type(err).__name__}: {str(err).strip().rstrip('.')}"
        raise DataError(f"task '{task.name}': could not load {where}: {why}. {hint}".rstrip()) from err
    files = {s: _split_files(root, task.hub_folder, s) for s in splits}
    missing = [s for s, found in files.items() if not found]
    if missing:
        looked = ", ".join(p for s in missing for p in split_patterns(task.hub_folder, s))
        raise DataError(
            f"task '{task.name}': {where} has no Parquet files for split(s) {missing} in {root} "
            f"(looked for {looked}). {hint}".rstrip()
        )
    commit = root.name if _COMMIT.fullmatch(root.name) else rev
    return HubFiles(repo_id=task.hub_id, revision=rev, commit=commit, root=root, files=files)
