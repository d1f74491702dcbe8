"""Small helpers with no dependency on the rest of the package."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Recipes and launch configs are package data (pyproject package-data), so
# they resolve the same from a checkout, an editable install or a wheel,
# wherever the user stands.
PACKAGE_DIR = Path(__file__).resolve().parent
RECIPES_DIR = PACKAGE_DIR / "recipes"
LAUNCH_CONFIGS_DIR = PACKAGE_DIR / "launch_configs"


def packaged_file(path: str | os.PathLike) -> Path | None:
    """`path` as the packaged launch configs write it (``launch_configs/x.json``,
    relative to the repository root) resolved inside the installed package;
    None when it names no packaged file."""
    parts = Path(path).parts
    if Path(path).is_absolute() or not parts or parts[0] != LAUNCH_CONFIGS_DIR.name:
        return None
    candidate = PACKAGE_DIR.joinpath(*parts)
    return candidate if candidate.is_file() else None


def to_plain(obj: Any) -> Any:
    """Deep-convert OmegaConf containers / mappings to plain dicts and lists."""
    with contextlib.suppress(ImportError):
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(obj, DictConfig | ListConfig):
            return OmegaConf.to_container(obj, resolve=True)
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_plain(v) for v in obj]
    return obj
