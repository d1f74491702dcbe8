"""Table 1's TPV row (DTVG paper 3.2, C.1): SPoT's single-source start, the
source chosen by Eq. 2 on the task prompt vectors instead of prompt cosine."""

from __future__ import annotations

import torch

from dtvg_dist.model.methods.base import BuildContext
from dtvg_dist.model.methods.spot import SPoT
from dtvg_dist.model.prompt import tpv_pick_source


class TPVTransfer(SPoT):
    name = "tpv"
    title = "TPV"
    source = "DTVG paper, section 3.2 and appendix C.1 (Table 1)"

    def pick(self, ctx: BuildContext) -> int:
        return tpv_pick_source(ctx.target.tpv, torch.stack([s.tpv for s in ctx.sources]))
