"""SPoT (Vu et al., 2022): the target starts from the stage-1 prompt of the
source whose mean-pooled prompt has the highest cosine with the target's."""

from __future__ import annotations

import logging

import torch

from dtvg_dist.model.methods.base import BuildContext, Built, Method
from dtvg_dist.model.prompt import SoftPrompt, spot_pick_source

log = logging.getLogger("dtvg_dist.model.methods")


class SPoT(Method):
    name = "spot"
    title = "SPoT"
    source = "Vu et al., 2022, SPoT: Better Frozen Model Adaptation through Soft Prompt Transfer"

    def pick(self, ctx: BuildContext) -> int:
        return spot_pick_source(ctx.target.prompt, torch.stack([s.prompt for s in ctx.sources]))

    def build(self, ctx: BuildContext) -> Built:
        sources = ctx.sources
        index = self.pick(ctx)
        log.info("%s: initialising from source %s", self.title, sources[index].task)
        return Built(
            SoftPrompt(sources[index].prompt.to(ctx.device)),
            {f"{self.name}_source": sources[index].task},
        )
