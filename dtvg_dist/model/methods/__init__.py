"""The prompt methods, one module each, and the registry the pipeline asks.

To add a method: write ``dtvg_dist/model/methods/<name>.py`` with a
:class:`~dtvg_dist.model.methods.base.Method` subclass, import it below and
add an instance to ``_BUILTIN``. See docs/methods.md.
"""

from __future__ import annotations

import difflib

from dtvg_dist.model.methods.attempt import ATTEMPT, AttemptSettings
from dtvg_dist.model.methods.base import (
    BuildContext,
    Built,
    Method,
    MixtureTrainer,
    PreStageContext,
    RunSettings,
    trainable_count,
)
from dtvg_dist.model.methods.dept import DePT, DeptSettings
from dtvg_dist.model.methods.dtvg import DTVG
from dtvg_dist.model.methods.mpt import MPT, MptSettings
from dtvg_dist.model.methods.pt import PromptTuning
from dtvg_dist.model.methods.spot import SPoT
from dtvg_dist.model.methods.tpv import TPVTransfer

_BUILTIN: tuple[Method, ...] = (PromptTuning(), SPoT(), TPVTransfer(), DTVG(), ATTEMPT(), DePT(), MPT())
REGISTRY: dict[str, Method] = {m.name: m for m in _BUILTIN}


def method_names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def get_method(name: str) -> Method:
    """The registered method called ``name``; the error names the closest one."""
    try:
        return REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(REGISTRY), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise KeyError(
            f"method={name!r} is not one of {', '.join(REGISTRY)}{hint}"
        ) from None


__all__ = [
    "ATTEMPT", "DTVG", "REGISTRY", "AttemptSettings", "BuildContext", "Built", "DePT",
    "DeptSettings", "MPT", "Method", "MixtureTrainer", "MptSettings", "PreStageContext", "PromptTuning",
    "RunSettings", "SPoT", "TPVTransfer", "get_method",
    "method_names", "trainable_count",
]
