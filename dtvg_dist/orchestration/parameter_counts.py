"""Trainable parameters of every registered prompt method (paper Figure 8).

Each method builds its own stage-2 module, at a recipe's sizes (r prompt
tokens, the backbone's hidden size d, the recipe's sources), from a bank of
random entries, and the count is that module's trainable parameters
(`trainable_count`). A method added to the registry is counted with no
change here; one that cannot be built without its pre-stage's files (MPT's
shared prompt) is reported as None, with the reason logged.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from dtvg_dist import __version__
from dtvg_dist.costs import KNOWN_CONFIGS
from dtvg_dist.model.methods import REGISTRY, BuildContext, trainable_count
from dtvg_dist.store.bank import BankEntry

log = logging.getLogger("dtvg_dist.orchestration.parameter_counts")


def hidden_size(name_or_path: str) -> int:
    """d of a backbone the planner knows (its hub config.json, KNOWN_CONFIGS)."""
    if name_or_path not in KNOWN_CONFIGS:
        raise ValueError(f"backbone {name_or_path!r} is not one of {', '.join(KNOWN_CONFIGS)}")
    config = KNOWN_CONFIGS[name_or_path][0]
    return int(config.get("d_model") or config["hidden_size"])


def _entry(task: str, r: int, d: int, gen: torch.Generator, backbone: str) -> BankEntry:
    return BankEntry(task=task, tpv=torch.randn(r, d, generator=gen), p_init=torch.randn(r, d, generator=gen),
                     backbone=backbone, init_seed=0, steps=0, best_score=None, version=__version__,
                     path=Path(f"{task}.safetensors"))


def method_parameter_counts(cfg: Any, d: int | None = None,
                            methods: list[str] | None = None) -> dict[str, int | None]:
    """method name -> trainable parameters of its stage-2 module at the
    sizes of recipe `cfg` (d: the backbone's hidden size, looked up if None)."""
    d = int(d or hidden_size(str(cfg.backbone.name_or_path)))
    r = int(cfg.prompt.length)
    gen = torch.Generator().manual_seed(0)
    counts: dict[str, int | None] = {}
    for name in methods or list(REGISTRY):
        method = REGISTRY[name]
        entries = {t: _entry(t, r, d, gen, str(cfg.backbone.name_or_path)) for t in method.bank_tasks(cfg)}
        ctx = BuildContext.from_recipe(method, cfg, entries, backbone=None, device=torch.device("cpu"))
        try:
            counts[name] = trainable_count(method.build(ctx).module)
        except Exception as err:  # noqa: BLE001 -- a method that needs its pre-stage's files
            log.warning("%s: not counted (its module needs more than bank entries: %s)", name, err)
            counts[name] = None
    return counts
