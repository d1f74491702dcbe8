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
    settings_key = "grouping"

    def build(self, ctx: BuildContext) -> Built:
        g, target, sources = ctx.settings, ctx.target, ctx.sources
        module = DTVGPrompt(
            target.p_init.to(ctx.device),
            target.tpv.to(ctx.device),
            torch.stack([s.tpv for s in sources]).to(ctx.device),
            [s.task for s in sources],
            rule=g.rule,
            fixed=g.fixed,
        )
        log.info("DTVG: grouping rule %s%s over %s", g.rule,
                 " (step-0 group kept)" if g.fixed else "", ", ".join(ctx.run.source_tasks))
        return Built(module, {"grouping_rule": g.rule,
                              "grouping_fixed": bool(g.fixed),
                              "source_tasks": list(ctx.run.source_tasks)})

    def prompt_state(self, cfg: Any, r: int, d: int, n_sources: int) -> PromptState:
        return PromptState.of("dtvg", r, d, n_sources)
