"""Multi-task merging (Eq. 6) and the fused per-step DTVG prompt."""

from __future__ import annotations

import torch
from torch import Tensor

from dtvg_dist.core.grouping import check_rule, select_from_similarities


def merge_prompts(p_init: Tensor, tpvs: Tensor, alphas: Tensor, mask: Tensor) -> Tensor:
    """P_mix = P_init + sum_k mask_k * alpha_k * T_k, with `tpvs` [k, r, d]
    (index 0 = target), `alphas` [k, r], `mask` [k]. mask[0] is forced on:
    the target always takes part."""
    weights = alphas * mask.to(alphas.dtype).unsqueeze(-1)
    weights = torch.cat([alphas[:1], weights[1:]], dim=0)
    return _weighted_sum(p_init, weights, tpvs)


def _weighted_sum(base: Tensor, weights: Tensor, tpvs: Tensor) -> Tensor:
    """base + sum_k weights[k, :, None] * tpvs[k]: one fused multiply-add per
    TPV reads each TPV once (a batched matmul over r is 3x slower on CPU)."""
    out = base
    for k in range(tpvs.shape[0]):
        out = torch.addcmul(out, weights[k].unsqueeze(-1), tpvs[k])
    return out


def dtvg_prompt(
    p_init: Tensor,
    target_tpv: Tensor,
    source_tpvs: Tensor,
    alpha_t: Tensor,
    alpha_s: Tensor,
    rule: str = "greedy",
    mask_sync=None,
) -> tuple[Tensor, Tensor, Tensor]:
    """One DTVG step: rescale, similarities, grouping, merge.

    Returns (p_mix [r, d], mask [n] over sources, sims [n]). Similarities use
    detached alphas (as the paper and the released code do); the gradient
    reaches `target_tpv`, `alpha_t` and the alphas of selected sources only.
    Two passes over the source TPVs: one for the alpha-weighted means, one
    for the merge. `mask_sync` (optional) maps the mask before the merge, e.g.
    a broadcast from rank 0.
    """
    r = target_tpv.shape[-2]
    check_rule(rule, source_tpvs.shape[0])
    with torch.no_grad():
        mean_t = (alpha_t.detach() @ target_tpv) / r
        mean_s = torch.bmm(alpha_s.detach().unsqueeze(1), source_tpvs).squeeze(1) / r
        sims = mean_s @ mean_t
        gram = mean_s @ mean_s.transpose(0, 1)
        mask = select_from_similarities(sims, gram, rule)
    if mask_sync is not None:
        mask = mask_sync(mask)
    weights_s = alpha_s * mask.to(alpha_s.dtype).unsqueeze(-1)
    p_target = torch.addcmul(p_init, alpha_t.unsqueeze(-1), target_tpv)
    return _weighted_sum(p_target, weights_s, source_tpvs), mask, sims
