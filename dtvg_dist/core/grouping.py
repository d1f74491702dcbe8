"""Source-task grouping rules as fixed-shape tensor programs.

Every rule takes the source-to-target similarities `sims` [n] and the source
Gram matrix `gram` [n, n] (pairwise Eq. 2) and returns a bool mask [n]. No
rule reads a tensor value on the host: loops run over the static n, choices
are made with `torch.where`, so a training step never waits on the device and
the rules compile with `torch.compile(fullgraph=True)`.

Knowledge consistency (Eq. 4) of a group is the mean pairwise similarity,
0 for fewer than two members. It is computed as an exact pair sum divided by
the integer pair count, so equal KCs compare equal.

The paper describes one grouping three ways, and they pick different groups:
`greedy` (Algorithm 2 as printed: skip a source that lowers KC, go on),
`first-drop` (section 3.2's text: stop at the first such source) and
`prefix-argmax` (the released code, zpy2477/DTVG
peft/soft_prompt_controller.py, `ablation == 0`: the ranking prefix of the
sources with sim >= 0 whose KC is highest). With sims ranking sources 1..4
and pairwise sims g12 = 1, g13 = g23 = 0.2, g14 = g24 = g34 = 2 they give
{1, 2, 4}, {1, 2} and {1, 2, 3, 4}.

The KC-only ablation `exhaustive-kc` is the released one (empty group unless
some subset has KC > 0); `exhaustive-kc-nonempty` always keeps a source.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from dtvg_dist.core.similarity import similarity_matrix, task_similarity

GROUPING_RULES: tuple[str, ...] = (
    "greedy",
    "first-drop",
    "prefix-argmax",
    "positive",
    "exhaustive-kc",
    "exhaustive-kc-nonempty",
    "all",
    "none",
)
MAX_EXHAUSTIVE_SOURCES = 16
MAX_VECTORISED_GREEDY = 10


def check_rule(rule: str, n_sources: int) -> None:
    """Fail early, on the host, for a rule name or size the rules cannot serve."""
    if rule not in GROUPING_RULES:
        raise ValueError(
            f"grouping.rule={rule!r} is not a grouping rule; choose one of {', '.join(GROUPING_RULES)}"
        )
    if rule.startswith("exhaustive-kc") and n_sources > MAX_EXHAUSTIVE_SOURCES:
        raise ValueError(
            f"grouping.rule={rule!r} scores all 2^n subsets and is limited to "
            f"n <= {MAX_EXHAUSTIVE_SOURCES} sources; got n = {n_sources}. Use 'greedy'."
        )


def _ranking(sims: Tensor) -> Tensor:
    """Sources by descending similarity; ties keep the lower index first."""
    return torch.sort(sims, descending=True, stable=True).indices


def _unpermute(mask_in_rank_order: Tensor, order: Tensor) -> Tensor:
    return torch.zeros_like(mask_in_rank_order).scatter(0, order, mask_in_rank_order)


def _kc(pair_sum: Tensor, count: Tensor) -> Tensor:
    """Eq. 4 from a pair sum and a member count (count may be a tensor)."""
    pairs = count * (count - 1) / 2
    return torch.where(count >= 2, pair_sum / pairs.clamp(min=1), torch.zeros_like(pair_sum))


def _greedy(sims: Tensor, gram: Tensor) -> Tensor:
    """Algorithm 2 as printed: walk the ranking, add a source when its
    similarity is >= 0 and the group's KC does not drop."""
    order = _ranking(sims)
    sims_r = sims[order]
    gram_r = gram[order][:, order]
    if sims.shape[0] <= MAX_VECTORISED_GREEDY:
        chosen = _greedy_by_consistency(sims_r, gram_r)
    else:
        chosen = _greedy_walk(sims_r, gram_r)
    return _unpermute(chosen, order)


def _greedy_walk(sims_r: Tensor, gram_r: Tensor) -> Tensor:
    """The walk itself, one fixed step per ranked source (any n)."""
    n = sims_r.shape[0]
    positions = torch.arange(n, device=sims_r.device)
    chosen = torch.zeros(n, dtype=sims_r.dtype, device=sims_r.device)
    pair_sum = sims_r.new_zeros(())
    count = sims_r.new_zeros(())
    for k in range(n):
        cand_pair_sum = pair_sum + (gram_r[k] * chosen).sum()
        cand_count = count + 1
        gain = _kc(cand_pair_sum, cand_count) - _kc(pair_sum, count)
        take = (sims_r[k] >= 0) & (gain >= 0)
        chosen = chosen + take.to(sims_r.dtype) * (positions == k).to(sims_r.dtype)
        pair_sum = torch.where(take, cand_pair_sum, pair_sum)
        count = count + take.to(sims_r.dtype)
    return chosen > 0


def _greedy_by_consistency(sims_r: Tensor, gram_r: Tensor) -> Tensor:
    """The walk's result in a constant number of tensor ops, for small n.

    A subset (in rank order) is the walk's result exactly when every step's
    decision agrees with it: position k is in the subset iff sim_k >= 0 and
    adding k to the subset's members before k does not lower KC. Every subset
    is checked at once and the one consistent subset is returned. The work
    is 2^n n^2, so this serves n <= MAX_VECTORISED_GREEDY; per-step dispatch
    of the walk would cost more than the arithmetic at those sizes.
    """
    subsets, before = _consistency_constants(sims_r.shape[0], sims_r.device, sims_r.dtype)
    members_before = subsets.unsqueeze(1) * before  # [2^n, k, j]: j < k and j in subset
    off_diag = gram_r - torch.diag(torch.diagonal(gram_r))
    pair_before = ((members_before @ off_diag) * members_before).sum(-1) / 2
    count_before = members_before.sum(-1)
    pair_with_k = pair_before + (members_before * off_diag).sum(-1)
    gain = _kc(pair_with_k, count_before + 1) - _kc(pair_before, count_before)
    take = (sims_r >= 0) & (gain >= 0)
    consistent = (take == (subsets > 0)).all(dim=1)
    best = torch.argmax(consistent.to(torch.int32))
    return torch.index_select(subsets, 0, best.reshape(1)).squeeze(0) > 0


def _ranked_prefix_kc(sims: Tensor, gram: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(ranking, sims in rank order, KC of every ranking prefix [n]).

    Prefix k (0-based) holds the first k + 1 ranked sources; its pair sum is
    a cumulative sum of the upper-triangle column sums in rank order."""
    n = sims.shape[0]
    order = _ranking(sims)
    sims_r = sims[order]
    gram_r = gram[order][:, order]
    pair_sum = torch.cumsum(torch.triu(gram_r, diagonal=1).sum(dim=0), dim=0)
    length = torch.arange(1, n + 1, device=sims.device, dtype=sims.dtype)
    return order, sims_r, _kc(pair_sum, length)


def _first_drop(sims: Tensor, gram: Tensor) -> Tensor:
    """Section 3.2 as written: add sources "one by one in the order in Pi until
    KC(S') is no longer increasing", i.e. stop at the first source whose
    similarity is < 0 or whose addition lowers KC. The group is a leading
    segment of the ranking. Ties: a KC change of exactly 0 continues (the
    same >= 0 test as Algorithm 2, which also lets the first source in, KC
    0 -> 0); ranking ties go to the lower index."""
    order, sims_r, kc = _ranked_prefix_kc(sims, gram)
    before = torch.cat([kc.new_zeros(1), kc[:-1]])  # KC of the group before position k
    ok = (sims_r >= 0) & (kc - before >= 0)
    chosen = torch.cumprod(ok.to(torch.int32), dim=0) > 0  # every position up to k passed
    return _unpermute(chosen, order)


def _prefix_argmax(sims: Tensor, gram: Tensor) -> Tensor:
    """The authors' released code: among sources with sim >= 0, the ranking
    prefix with the highest KC (KC of one source = 0; ties -> shorter prefix)."""
    n = sims.shape[0]
    order, sims_r, kc = _ranked_prefix_kc(sims, gram)
    valid = sims_r >= 0  # a prefix of the ranking, since it is sorted
    score = torch.where(valid, kc, torch.full_like(kc, -torch.inf))
    best = torch.argmax(score)  # the first maximum: ties -> the shorter prefix
    chosen = (torch.arange(n, device=sims.device) <= best) & valid
    return _unpermute(chosen, order)


def _build_consistency_constants(n: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Every subset including the empty one [2^n, n], and the "j before k" mask [n, n]."""
    subsets = torch.cat([torch.zeros(1, n, device=device, dtype=dtype), subset_matrix(n, device, dtype)])
    before = torch.tril(torch.ones(n, n, device=device, dtype=dtype), diagonal=-1)
    return subsets, before


_cached_consistency_constants = functools.lru_cache(maxsize=32)(_build_consistency_constants)


def _consistency_constants(n: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Built once per (n, device, dtype) in eager mode, where building them
    every step would cost more than using them; traced inline when compiling."""
    if torch.compiler.is_compiling():
        return _build_consistency_constants(n, device, dtype)
    return _cached_consistency_constants(n, device, dtype)


def subset_matrix(n: int, device: torch.device | None = None, dtype=torch.float32) -> Tensor:
    """All non-empty subsets of n sources as rows [2^n - 1, n]; row b-1 is bitmask b."""
    codes = torch.arange(1, 2**n, device=device).unsqueeze(1)
    bits = torch.arange(n, device=device).unsqueeze(0)
    return ((codes >> bits) & 1).to(dtype)


def _subset_kcs(n: int, gram: Tensor) -> tuple[Tensor, Tensor]:
    """(every non-empty subset [2^n - 1, n] as `subset_matrix` orders them, its KC)."""
    subsets = subset_matrix(n, gram.device, gram.dtype)
    off_diag = gram - torch.diag(torch.diagonal(gram))
    pair_sum = ((subsets @ off_diag) * subsets).sum(dim=1) / 2
    return subsets, _kc(pair_sum, subsets.sum(dim=1))


def _exhaustive_kc(sims: Tensor, gram: Tensor) -> Tensor:
    """The released KC-only ablation (zpy2477/DTVG
    peft/soft_prompt_controller.py, get_forward_prompt, `ablation == 2`,
    lines 216-255): the group starts empty with KC 0 and a subset replaces it
    only when its KC is strictly larger than every KC seen before, so the
    group is empty when no subset has KC > 0 (e.g. all pairwise sims <= 0).
    The release enumerates p = 0 .. 2^n - 1 taking the sources whose bit of p
    is 0, i.e. bitmasks from the largest down: of equal maximal KCs the
    largest bitmask wins. The target similarities play no part."""
    n = sims.shape[0]
    subsets, kc = _subset_kcs(n, gram)
    best_kc = kc.max()
    codes = torch.arange(1, 2**n, device=sims.device)
    best = torch.argmax(torch.where(kc == best_kc, codes, torch.zeros_like(codes)))
    row = torch.index_select(subsets, 0, best.reshape(1)).squeeze(0) > 0
    return row & (best_kc > 0)


def _exhaustive_kc_nonempty(sims: Tensor, gram: Tensor) -> Tensor:
    """KC ablation read as "the subset of highest KC" with a source always
    kept: the non-empty subset with the highest KC; ties -> the larger subset,
    then the smaller bitmask (lower source indices)."""
    subsets, kc = _subset_kcs(sims.shape[0], gram)
    count = subsets.sum(dim=1)
    best_kc = kc == kc.max()
    largest = count == torch.where(best_kc, count, torch.zeros_like(count)).max()
    best = torch.argmax((best_kc & largest).to(torch.int32))
    return torch.index_select(subsets, 0, best.reshape(1)).squeeze(0) > 0


def select_from_similarities(sims: Tensor, gram: Tensor, rule: str = "greedy") -> Tensor:
    """Group mask [n] from source-target sims [n] and the source Gram matrix [n, n]."""
    check_rule(rule, sims.shape[0])
    if rule == "greedy":
        return _greedy(sims, gram)
    if rule == "first-drop":
        return _first_drop(sims, gram)
    if rule == "prefix-argmax":
        return _prefix_argmax(sims, gram)
    if rule == "positive":
        return sims >= 0
    if rule == "exhaustive-kc":
        return _exhaustive_kc(sims, gram)
    if rule == "exhaustive-kc-nonempty":
        return _exhaustive_kc_nonempty(sims, gram)
    if rule == "all":
        return torch.ones_like(sims, dtype=torch.bool)
    return torch.zeros_like(sims, dtype=torch.bool)


def select_group(target: Tensor, sources: Tensor, rule: str = "greedy") -> Tensor:
    """BoolTensor[n]: which sources join the group. `target` [r, d] and
    `sources` [n, r, d] are already alpha-rescaled."""
    with torch.no_grad():
        sims = task_similarity(sources, target.unsqueeze(0))
        gram = similarity_matrix(sources)
        return select_from_similarities(sims, gram, rule)
