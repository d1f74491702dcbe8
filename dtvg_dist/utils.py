"""Small helpers with no dependency on the rest of the package."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any


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
