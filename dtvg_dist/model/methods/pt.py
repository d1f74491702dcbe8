"""PT: vanilla prompt tuning (Lester et al., 2021) from the bank's P_init."""

from __future__ import annotations

from dtvg_dist.model.methods.base import BuildContext, Built, Method
from dtvg_dist.model.prompt import SoftPrompt


class PromptTuning(Method):
    name = "pt"
    title = "PT"
    source = "Lester et al., 2021, The Power of Scale for Parameter-Efficient Prompt Tuning"
    uses_sources = False

    def build(self, ctx: BuildContext) -> Built:
        return Built(SoftPrompt(ctx.target.p_init.to(ctx.device)))
