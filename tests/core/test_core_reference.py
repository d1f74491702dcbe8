"""The core against an independent float64 reference written with plain loops.

Random cases use small integer TPV entries and dyadic alphas with r a power
of two, so every similarity and pair sum is exact in float64: the group
masks must then agree exactly (no tolerance), including on ties. Merged
prompts are compared with atol 1e-12 (float64).
"""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dtvg_dist.core import (
    GROUPING_RULES,
    dtvg_prompt,
    merge_prompts,
    select_from_similarities,
    select_group,
    similarity_matrix,
    task_similarity,
)

# ---------------------------------------------------------------- reference


def ref_sim(a: list[list[float]], b: list[list[float]]) -> float:
    """Eq. 2: (1/r^2) (sum_i a_i) . (sum_j b_j)."""
    r, d = len(a), len(a[0])
    sum_a = [sum(a[i][k] for i in range(r)) for k in range(d)]
    sum_b = [sum(b[j][k] for j in range(r)) for k in range(d)]
    return sum(sum_a[k] * sum_b[k] for k in range(d)) / (r * r)


def ref_kc(group: list[int], gram: list[list[float]]) -> float:
    """Eq. 4: mean pairwise similarity, 0 below two members."""
    pairs = [gram[i][j] for i, j in itertools.combinations(sorted(group), 2)]
    return sum(pairs) / len(pairs) if pairs else 0.0


def ref_ranking(sims: list[float]) -> list[int]:
    return sorted(range(len(sims)), key=lambda i: (-sims[i], i))


def ref_greedy(sims, gram):
    group: list[int] = []
    for i in ref_ranking(sims):
        delta = ref_kc(group + [i], gram) - ref_kc(group, gram)
        if sims[i] >= 0 and delta >= 0:
            group.append(i)
    return group


def ref_first_drop(sims, gram):
    """Section 3.2's text: the greedy walk, but the first failing source ends it."""
    group: list[int] = []
    for i in ref_ranking(sims):
        delta = ref_kc(group + [i], gram) - ref_kc(group, gram)
        if not (sims[i] >= 0 and delta >= 0):
            break
        group.append(i)
    return group


def ref_prefix_argmax(sims, gram):
    ranked = [i for i in ref_ranking(sims) if sims[i] >= 0]
    best, best_kc = [], None
    for length in range(1, len(ranked) + 1):
        kc = ref_kc(ranked[:length], gram)
        if best_kc is None or kc > best_kc:
            best, best_kc = ranked[:length], kc
    return best


def ref_exhaustive(sims, gram):
    """The released KC-only ablation transcribed loop for loop (zpy2477/DTVG
    peft/soft_prompt_controller.py, ablation == 2): p = 0 .. 2^n - 1 selects
    the sources whose bit of p is 0; a subset replaces the group only when
    its KC (mean over ordered pairs) is strictly above every KC so far,
    starting from an empty group and KCS = [0]."""
    n = len(sims)
    chosen: list[int] = []
    kcs = [0.0]
    for p in range(2**n):
        select = [i for i in range(n) if (p >> i) % 2 == 0]
        intra = [gram[i][j] for i in select for j in select if i != j]
        kc = sum(intra) / len(intra) if intra else 0.0
        if kc > max(kcs):
            chosen = select
        kcs.append(kc)
    return chosen


def ref_exhaustive_nonempty(sims, gram):
    n = len(sims)
    best, best_key = None, None
    for code in range(1, 2**n):
        group = [i for i in range(n) if code >> i & 1]
        key = (ref_kc(group, gram), len(group), -code)
        if best_key is None or key > best_key:
            best, best_key = group, key
    return best


def ref_select(sims, gram, rule):
    n = len(sims)
    if rule == "greedy":
        group = ref_greedy(sims, gram)
    elif rule == "first-drop":
        group = ref_first_drop(sims, gram)
    elif rule == "prefix-argmax":
        group = ref_prefix_argmax(sims, gram)
    elif rule == "positive":
        group = [i for i in range(n) if sims[i] >= 0]
    elif rule == "exhaustive-kc":
        group = ref_exhaustive(sims, gram)
    elif rule == "exhaustive-kc-nonempty":
        group = ref_exhaustive_nonempty(sims, gram)
    elif rule == "all":
        group = list(range(n))
    else:
        group = []
    return [i in group for i in range(n)]


def ref_rescale(tpv, alpha):
    return [[alpha[i] * x for x in row] for i, row in enumerate(tpv)]


def ref_dtvg(p_init, target, sources, alpha_t, alpha_s, rule):
    t = ref_rescale(target, alpha_t)
    srcs = [ref_rescale(s, a) for s, a in zip(sources, alpha_s, strict=True)]
    sims = [ref_sim(s, t) for s in srcs]
    gram = [[ref_sim(a, b) for b in srcs] for a in srcs]
    mask = ref_select(sims, gram, rule)
    r, d = len(p_init), len(p_init[0])
    p_mix = [[p_init[i][k] + t[i][k] for k in range(d)] for i in range(r)]
    for s, keep in zip(srcs, mask, strict=True):
        if keep:
            for i in range(r):
                for k in range(d):
                    p_mix[i][k] += s[i][k]
    return p_mix, mask, sims


# ----------------------------------------------------------------- strategies

SMALL_INT = st.integers(min_value=-3, max_value=3)


@st.composite
def dtvg_case(draw, max_n: int = 7):
    n = draw(st.integers(min_value=1, max_value=max_n))
    r = draw(st.sampled_from([1, 2, 4]))
    d = draw(st.integers(min_value=1, max_value=4))

    def tensor(*shape, elements=SMALL_INT):
        size = 1
        for s in shape:
            size *= s
        values = draw(st.lists(elements, min_size=size, max_size=size))
        return torch.tensor(values, dtype=torch.float64).reshape(shape)

    halves = st.sampled_from([0.5, 1.0, 1.5, 2.0, -1.0])
    return {
        "p_init": tensor(r, d),
        "target": tensor(r, d),
        "sources": tensor(n, r, d),
        "alpha_t": tensor(r, elements=halves),
        "alpha_s": tensor(n, r, elements=halves),
    }


def as_lists(case):
    return {k: v.tolist() for k, v in case.items()}


# ---------------------------------------------------------------- similarity


@settings(max_examples=60, deadline=None)
@given(case=dtvg_case())
def test_similarity_matches_reference(case):
    sources = case["sources"]
    gram = similarity_matrix(sources)
    lists = sources.tolist()
    for i in range(len(lists)):
        assert task_similarity(sources[i], case["target"]).item() == ref_sim(
            lists[i], case["target"].tolist()
        )
        for j in range(len(lists)):
            assert gram[i, j].item() == ref_sim(lists[i], lists[j])


def test_similarity_broadcasts_over_leading_dims():
    a = torch.randn(3, 1, 5, 8, dtype=torch.float64)
    b = torch.randn(4, 5, 8, dtype=torch.float64)
    out = task_similarity(a, b)
    assert out.shape == (3, 4)
    assert out[2, 1].item() == pytest.approx(ref_sim(a[2, 0].tolist(), b[1].tolist()), abs=1e-12)


# ------------------------------------------------------------------ grouping


@pytest.mark.parametrize("rule", GROUPING_RULES)
@settings(max_examples=60, deadline=None)
@given(case=dtvg_case())
def test_every_rule_matches_reference(rule, case):
    target, sources = case["target"], case["sources"]
    got = select_group(target, sources, rule).tolist()
    srcs = sources.tolist()
    sims = [ref_sim(s, target.tolist()) for s in srcs]
    gram = [[ref_sim(a, b) for b in srcs] for a in srcs]
    assert got == ref_select(sims, gram, rule)


def _one_row(values: list[float]) -> torch.Tensor:
    """TPVs with r = 1, d = len(values[0]): sims are plain dot products."""
    return torch.tensor(values, dtype=torch.float64).unsqueeze(1)


def test_greedy_and_prefix_argmax_differ_on_hand_built_case():
    # Ranking A > B > C, every sim >= 0, A.B < 0, A.C = 0, B.C > 0.
    target = torch.tensor([[1.0, 1.0, 1.0]], dtype=torch.float64)
    a, b, c = [3.0, 0.0, -1.0], [-1.0, 2.0, 0.0], [0.0, 1.0, 0.0]
    sources = _one_row([a, b, c])
    sims = task_similarity(sources, target.unsqueeze(0)).tolist()
    assert sims == [2.0, 1.0, 1.0]  # ranking A, B, C (B before C on the tie)
    gram = similarity_matrix(sources)
    assert gram[0, 1] < 0 and gram[0, 2] == 0 and gram[1, 2] > 0
    # greedy: A in; B drops KC to -3 -> out; C keeps KC at 0 -> in.
    assert select_group(target, sources, "greedy").tolist() == [True, False, True]
    # prefix-argmax: KC([A]) = 0, KC([A,B]) = -3, KC([A,B,C]) = (-3+0+2)/3 < 0 -> [A].
    assert select_group(target, sources, "prefix-argmax").tolist() == [True, False, False]


def test_the_three_readings_of_the_grouping_differ_on_one_example():
    """Sims rank 1, 2, 3, 4 (all >= 0); g12 = 1, g13 = g23 = 0.2,
    g14 = g24 = g34 = 2. Algorithm 2 skips 3 and takes 4; the text of 3.2
    stops at 3; the released code takes the prefix with the best KC,
    KC(1..4) = 7.4 / 6 > KC(1, 2) = 1."""
    sims = torch.tensor([4.0, 3.0, 2.0, 1.0], dtype=torch.float64)
    gram = torch.tensor(
        [[9.0, 1.0, 0.2, 2.0], [1.0, 9.0, 0.2, 2.0], [0.2, 0.2, 9.0, 2.0], [2.0, 2.0, 2.0, 9.0]],
        dtype=torch.float64,
    )
    want = {
        "greedy": [True, True, False, True],
        "first-drop": [True, True, False, False],
        "prefix-argmax": [True, True, True, True],
    }
    for rule, mask in want.items():
        assert select_from_similarities(sims, gram, rule).tolist() == mask, rule
        assert ref_select(sims.tolist(), gram.tolist(), rule) == mask, rule
    # The same in float32 (0.2 is inexact there, the decisions are not close calls).
    for rule, mask in want.items():
        assert select_from_similarities(sims.float(), gram.float(), rule).tolist() == mask, rule
    # The order of the sources does not matter, only the ranking: reverse the indices.
    flip = torch.arange(3, -1, -1)
    for rule, mask in want.items():
        got = select_from_similarities(sims[flip], gram[flip][:, flip], rule)
        assert got.tolist() == mask[::-1], rule


def test_first_drop_ties_a_zero_kc_change_continues():
    # Ranking 0..4 (sims tie in pairs: lower index first). KC: [0] 0 -> [0,1] 1
    # -> [0,1,2] 1 (a change of exactly 0: go on) -> [0..3] 0.5 (drop: stop). 4
    # would raise KC again; greedy takes it, first-drop never looks.
    sims = torch.tensor([2.0, 2.0, 1.0, 1.0, 0.0], dtype=torch.float64)
    gram = torch.full((5, 5), 1.0, dtype=torch.float64)
    gram[3, :3] = gram[:3, 3] = 0.0
    gram[4, :] = gram[:, 4] = 4.0
    assert select_from_similarities(sims, gram, "first-drop").tolist() == [True, True, True, False, False]
    assert select_from_similarities(sims, gram, "greedy").tolist() == [True, True, True, False, True]
    # the first source always enters (KC 0 -> 0) when its sim is >= 0, even at sim = 0
    zero = torch.zeros(1, dtype=torch.float64)
    assert select_from_similarities(zero, zero.reshape(1, 1), "first-drop").tolist() == [True]
    # a negative sim ends the walk even where KC would grow
    sims = torch.tensor([1.0, -1.0, -2.0], dtype=torch.float64)
    gram = torch.full((3, 3), 5.0, dtype=torch.float64)
    assert select_from_similarities(sims, gram, "first-drop").tolist() == [True, False, False]


def test_first_drop_is_the_leading_run_of_greedy_decisions():
    """Property: first-drop keeps greedy's choices up to greedy's first skip."""
    gen = torch.Generator().manual_seed(11)
    for _ in range(200):
        n = int(torch.randint(1, 9, (1,), generator=gen))
        sources = torch.randint(-2, 3, (n, 2, 2), generator=gen).double()
        target = torch.randint(-2, 3, (2, 2), generator=gen).double()
        sims = task_similarity(sources, target.unsqueeze(0))
        order = sorted(range(n), key=lambda i: (-float(sims[i]), i))
        greedy = select_group(target, sources, "greedy").tolist()
        first = select_group(target, sources, "first-drop").tolist()
        lead = []
        for i in order:
            if not greedy[i]:
                break
            lead.append(i)
        assert first == [i in lead for i in range(n)]


def test_no_source_with_nonnegative_sim_gives_empty_group():
    target = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    sources = _one_row([[-1.0, 0.0], [-2.0, 5.0], [-0.5, -1.0]])
    for rule in ("greedy", "first-drop", "prefix-argmax", "positive", "none"):
        assert select_group(target, sources, rule).tolist() == [False, False, False]


def test_all_equal_sims_ties_go_to_lower_index():
    # Every sim equal; sources 0 and 2 conflict (negative), 1 agrees with both.
    target = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    sources = _one_row([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [1.0, -2.0, 0.0]])
    assert task_similarity(sources, target.unsqueeze(0)).tolist() == [1.0, 1.0, 1.0]
    # ranking 0, 1, 2: 0 in; 0.1 = 1 -> KC 1 >= 0 -> in; adding 2 -> (1 - 1 + 1)/3 < 1 -> out.
    assert select_group(target, sources, "greedy").tolist() == [True, True, False]
    # reversing the indices reverses the choice
    flipped = sources.flip(0)
    assert select_group(target, flipped, "greedy").tolist() == [True, True, False]


def test_single_source():
    target = torch.tensor([[1.0]], dtype=torch.float64)
    pos, neg = _one_row([[2.0]]), _one_row([[-2.0]])
    assert select_group(target, pos, "greedy").tolist() == [True]
    assert select_group(target, neg, "greedy").tolist() == [False]
    assert select_group(target, neg, "exhaustive-kc-nonempty").tolist() == [True]
    # one source has KC 0, never strictly above the release's starting 0
    assert select_group(target, pos, "exhaustive-kc").tolist() == [False]


def test_exhaustive_kc_is_empty_when_every_pair_conflicts():
    # pairwise sims all -1, target sims 1, 2, 3 (Eq. 2 with r = 1)
    gram = torch.tensor([[4.0, -1.0, -1.0], [-1.0, 4.0, -1.0], [-1.0, -1.0, 4.0]], dtype=torch.float64)
    sims = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    assert select_from_similarities(sims, gram, "exhaustive-kc").tolist() == [False, False, False]
    assert select_from_similarities(sims, gram, "exhaustive-kc-nonempty").tolist() == [True, False, False]
    assert ref_exhaustive(sims.tolist(), gram.tolist()) == []


def test_exhaustive_kc_ties_go_to_the_largest_bitmask():
    # {0, 1} and {2, 3} both have KC 2; the release meets {2, 3} (bitmask 12) first
    gram = torch.full((4, 4), -5.0, dtype=torch.float64)
    gram[0, 1] = gram[1, 0] = gram[2, 3] = gram[3, 2] = 2.0
    sims = torch.zeros(4, dtype=torch.float64)
    assert select_from_similarities(sims, gram, "exhaustive-kc").tolist() == [False, False, True, True]
    assert ref_exhaustive(sims.tolist(), gram.tolist()) == [2, 3]


def test_twelve_sources_match_reference():
    gen = torch.Generator().manual_seed(3)
    for _ in range(20):
        sources = torch.randint(-3, 4, (12, 2, 3), generator=gen).double()
        target = torch.randint(-3, 4, (2, 3), generator=gen).double()
        srcs = sources.tolist()
        sims = [ref_sim(s, target.tolist()) for s in srcs]
        gram = [[ref_sim(a, b) for b in srcs] for a in srcs]
        for rule in GROUPING_RULES:
            assert select_group(target, sources, rule).tolist() == ref_select(sims, gram, rule), rule


def test_negative_pairwise_similarities():
    # All sources agree with the target but pairwise conflict.
    target = torch.tensor([[1.0, 1.0, 1.0, 1.0]], dtype=torch.float64)
    sources = _one_row([[2.0, -1.0, 0.0, 0.0], [0.0, 2.0, -1.0, 0.0], [-1.0, 0.0, 1.0, 1.0]])
    gram = similarity_matrix(sources)
    assert (gram[~torch.eye(3, dtype=torch.bool)] < 0).all()
    assert select_group(target, sources, "greedy").tolist() == [True, False, False]
    assert select_group(target, sources, "positive").tolist() == [True, True, True]


def test_exhaustive_refuses_more_than_sixteen_sources():
    with pytest.raises(ValueError, match="n <= 16"):
        select_group(torch.zeros(1, 2), torch.zeros(17, 1, 2), "exhaustive-kc")


def test_unknown_rule_is_named():
    with pytest.raises(ValueError, match="'best'"):
        select_group(torch.zeros(1, 2), torch.zeros(2, 1, 2), "best")


# -------------------------------------------------------------------- merge


@settings(max_examples=60, deadline=None)
@given(case=dtvg_case(), data=st.data())
def test_merge_matches_reference(case, data):
    tpvs = torch.cat([case["target"].unsqueeze(0), case["sources"]])
    alphas = torch.cat([case["alpha_t"].unsqueeze(0), case["alpha_s"]])
    mask = torch.tensor(data.draw(st.lists(st.booleans(), min_size=len(tpvs), max_size=len(tpvs))))
    got = merge_prompts(case["p_init"], tpvs, alphas, mask)
    lists = as_lists(case)
    r, d = case["p_init"].shape
    expected = [[lists["p_init"][i][k] for k in range(d)] for i in range(r)]
    for idx, (tpv, alpha) in enumerate(zip(tpvs.tolist(), alphas.tolist(), strict=True)):
        if idx == 0 or mask[idx]:  # the target is always merged
            for i in range(r):
                for k in range(d):
                    expected[i][k] += alpha[i] * tpv[i][k]
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), atol=1e-12, rtol=0)


# --------------------------------------------------------------- fused step


@pytest.mark.parametrize("rule", GROUPING_RULES)
@settings(max_examples=40, deadline=None)
@given(case=dtvg_case())
def test_dtvg_prompt_matches_reference(rule, case):
    p_mix, mask, sims = dtvg_prompt(
        case["p_init"], case["target"], case["sources"], case["alpha_t"], case["alpha_s"], rule
    )
    lists = as_lists(case)
    ref_p, ref_mask, ref_sims = ref_dtvg(
        lists["p_init"], lists["target"], lists["sources"], lists["alpha_t"], lists["alpha_s"], rule
    )
    assert mask.tolist() == ref_mask
    assert sims.tolist() == ref_sims
    torch.testing.assert_close(p_mix, torch.tensor(ref_p, dtype=torch.float64), atol=1e-12, rtol=0)


def test_dtvg_prompt_float32_real_scale_matches_float64_reference():
    gen = torch.Generator().manual_seed(0)
    r, d, n = 100, 64, 6
    p_init, target = torch.randn(r, d, generator=gen), torch.randn(r, d, generator=gen) * 0.1
    sources = torch.randn(n, r, d, generator=gen) * 0.1 + target * 0.5
    alpha_t, alpha_s = torch.rand(r, generator=gen) + 0.5, torch.rand(n, r, generator=gen) + 0.5
    p_mix, mask, sims = dtvg_prompt(p_init, target, sources, alpha_t, alpha_s)
    ref_p, ref_mask, ref_sims = ref_dtvg(
        p_init.double().tolist(),
        target.double().tolist(),
        sources.double().tolist(),
        alpha_t.double().tolist(),
        alpha_s.double().tolist(),
        "greedy",
    )
    assert mask.tolist() == ref_mask
    torch.testing.assert_close(sims.double(), torch.tensor(ref_sims, dtype=torch.float64), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(p_mix.double(), torch.tensor(ref_p, dtype=torch.float64), atol=1e-5, rtol=1e-5)
