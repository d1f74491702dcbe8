"""DTVG stage 2 (Eq. 6): the target TPV merged every step with the group of
source TPVs the grouping rule picks."""

from __future__ import annotations

import logging
from typing import Any

import torch

from dtvg_dist.costs import PromptState
from dtvg_dist.model.methods.base import BuildContext, Built, Method
from dtvg_dist.model.prompt import DTVGPrompt

log = logging.getLogger("dtvg_dist.model.methods")


class DTVG(Method):
    name = "dtvg"
    title = "DTVG"
    source = "Dynamic Task Vector Grouping (the DTVG paper; release zpy2477/DTVG)"

    def build(self, ctx: BuildContext) -> Built:
        cfg, target, sources = ctx.cfg, ctx.target, ctx.sources
        module = DTVGPrompt(
            target.p_init.to(ctx.device),
            target.tpv.to(ctx.device),
            torch.stack([s.tpv for s in sources]).to(ctx.device),
            [s.task for s in sources],
            rule=cfg.grouping.rule,
            fixed=cfg.grouping.fixed,
        )
        log.info("DTVG: grouping rule %s%s over %s", cfg.grouping.rule,
                 " (step-0 group kept)" if cfg.grouping.fixed else "", ", ".join(cfg.source_tasks))
        return Built(module, {"grouping_rule": cfg.grouping.rule,
                              "grouping_fixed": bool(cfg.grouping.fixed),
                              "source_tasks": list(cfg.source_tasks)})

    def prompt_state(self, cfg: Any, r: int, d: int, n_sources: int) -> PromptState:
        return PromptState.of("dtvg", r, d, n_sources)
