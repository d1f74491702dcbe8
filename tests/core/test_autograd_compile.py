"""Gradients of the fused step, and the promise that it compiles as one graph
(no host reads, no data-dependent shapes)."""

from __future__ import annotations

import pytest
import torch

from dtvg_dist.core import GROUPING_RULES, dtvg_prompt


def _case(n: int = 4, r: int = 3, d: int = 5, seed: int = 0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    target = torch.randn(r, d, generator=gen, dtype=dtype)
    sources = torch.randn(n, r, d, generator=gen, dtype=dtype)
    sources[0] = target * 0.8  # make sure at least one source is chosen
    return {
        "p_init": torch.randn(r, d, generator=gen, dtype=dtype),
        "target_tpv": target,
        "source_tpvs": sources,
        "alpha_t": 1 + 0.1 * torch.randn(r, generator=gen, dtype=dtype),
        "alpha_s": 1 + 0.1 * torch.randn(n, r, generator=gen, dtype=dtype),
    }


@pytest.mark.parametrize("rule", ["greedy", "positive", "all"])
def test_gradcheck_float64(rule):
    case = _case()
    target, alpha_t, alpha_s = (
        case[k].clone().requires_grad_(True) for k in ("target_tpv", "alpha_t", "alpha_s")
    )

    def fn(target_tpv, a_t, a_s):
        return dtvg_prompt(case["p_init"], target_tpv, case["source_tpvs"], a_t, a_s, rule)[0]

    # The mask is piecewise constant in the inputs; the case sits far from a
    # switch (checked below), so finite differences see a smooth function.
    base_mask = dtvg_prompt(case["p_init"], target, case["source_tpvs"], alpha_t, alpha_s, rule)[1]
    assert torch.autograd.gradcheck(fn, (target, alpha_t, alpha_s), eps=1e-6, atol=1e-7)
    bumped = dtvg_prompt(
        case["p_init"], target + 1e-6, case["source_tpvs"], alpha_t, alpha_s, rule
    )[1]
    assert torch.equal(base_mask, bumped)


def test_unselected_source_alpha_gets_exactly_zero_gradient():
    case = _case(n=5)
    case["source_tpvs"][3] = -case["target_tpv"]  # sim < 0: never selected
    alpha_s = case["alpha_s"].clone().requires_grad_(True)
    target = case["target_tpv"].clone().requires_grad_(True)
    alpha_t = case["alpha_t"].clone().requires_grad_(True)
    p_mix, mask, _ = dtvg_prompt(
        case["p_init"], target, case["source_tpvs"], alpha_t, alpha_s, "greedy"
    )
    (p_mix.sin().sum()).backward()
    assert not mask[3] and mask[0]
    for i in range(5):
        if mask[i]:
            assert alpha_s.grad[i].abs().sum() > 0
        else:
            assert torch.count_nonzero(alpha_s.grad[i]) == 0
    assert target.grad.abs().sum() > 0 and alpha_t.grad.abs().sum() > 0


def test_similarities_use_detached_alphas():
    case = _case()
    alpha_s = case["alpha_s"].clone().requires_grad_(True)
    _, _, sims = dtvg_prompt(
        case["p_init"], case["target_tpv"], case["source_tpvs"], case["alpha_t"], alpha_s
    )
    assert not sims.requires_grad


@pytest.mark.parametrize("rule", GROUPING_RULES)
def test_compiles_fullgraph_and_matches_eager(rule):
    torch._dynamo.reset()
    case = _case(n=6, r=4, d=8, dtype=torch.float32)
    compiled = torch.compile(dtvg_prompt, fullgraph=True, backend="aot_eager")
    args = [case[k] for k in ("p_init", "target_tpv", "source_tpvs", "alpha_t", "alpha_s")]
    got = compiled(*args, rule=rule)
    want = dtvg_prompt(*args, rule=rule)
    torch.testing.assert_close(got[0], want[0])
    assert torch.equal(got[1], want[1])
    torch.testing.assert_close(got[2], want[2])


@pytest.mark.slow
def test_compiles_with_inductor_for_greedy():
    torch._dynamo.reset()
    case = _case(n=6, r=4, d=8, dtype=torch.float32)
    args = [case[k] for k in ("p_init", "target_tpv", "source_tpvs", "alpha_t", "alpha_s")]
    compiled = torch.compile(dtvg_prompt, fullgraph=True)
    # compiled here, not by a pool of fresh interpreters (each imports torch)
    with torch._inductor.config.patch(compile_threads=1):
        got = compiled(*args)
    want = dtvg_prompt(*args)
    torch.testing.assert_close(got[0], want[0])
    assert torch.equal(got[1], want[1])
