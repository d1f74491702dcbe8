"""Per-call time of the fused `dtvg_prompt` against a naive implementation
shaped like the authors' released code (Python loops per source and per pair,
host reads of every similarity), measured in the same run.

    python bench/core_bench.py [--r 100 --d 4096 --n 6 --iters 20 --rounds 7]

Prints one line per device with both times and their ratio; on CUDA it also
runs the fused call under torch.cuda.set_sync_debug_mode("error"), which
raises on any host-device synchronisation.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from dtvg_dist.core import dtvg_prompt


def naive_dtvg(p_init, target_tpv, source_tpvs, alpha_t, alpha_s):
    """The released code's shape: rescale each TPV, similarity per pair with
    .item(), sort on the host, prefix KC by loops, merge one source at a time."""
    r = target_tpv.shape[0]
    target = target_tpv * alpha_t.detach()[:, None]
    sources = [source_tpvs[i] * alpha_s[i].detach()[:, None] for i in range(len(source_tpvs))]

    def sim(a, b):
        return (torch.sum(a, 0) @ torch.sum(b, 0)).item() / r**2

    sims = [sim(s, target) for s in sources]
    ranked = sorted(range(len(sources)), key=lambda i: -sims[i])
    group, best_kc = [], float("-inf")
    for i in ranked:
        if sims[i] < 0:
            break
        candidate = group + [i]
        pairs = [sim(sources[a], sources[b]) for a in candidate for b in candidate if a < b]
        kc = sum(pairs) / len(pairs) if pairs else 0.0
        if kc - (best_kc if group else 0.0) >= 0:
            group, best_kc = candidate, kc
    p_mix = p_init + alpha_t[:, None] * target_tpv
    for i in group:
        p_mix = p_mix + alpha_s[i][:, None] * source_tpvs[i]
    return p_mix


def time_call(fn, iters: int, device: torch.device) -> float:
    for _ in range(3):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / iters


def bench(device: torch.device, r: int, d: int, n: int, iters: int, rounds: int) -> None:
    gen = torch.Generator(device="cpu").manual_seed(0)
    target = torch.randn(r, d, generator=gen) * 0.01
    sources = torch.randn(n, r, d, generator=gen) * 0.01 + target
    args = (
        torch.randn(r, d, generator=gen).to(device),
        target.to(device).requires_grad_(),
        sources.to(device),
        torch.ones(r, device=device, requires_grad=True),
        torch.ones(n, r, device=device, requires_grad=True),
    )
    # Interleaved rounds, median of each: the machines are noisy.
    fused_rounds, naive_rounds = [], []
    for _ in range(rounds):
        fused_rounds.append(time_call(lambda: dtvg_prompt(*args), iters, device))
        naive_rounds.append(time_call(lambda: naive_dtvg(*args), iters, device))
    fused, naive = statistics.median(fused_rounds), statistics.median(naive_rounds)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"{name}: r={r} d={d} n={n} float32  fused {fused * 1e3:.3f} ms  "
        f"naive {naive * 1e3:.3f} ms  naive/fused = {naive / fused:.2f}x"
    )
    if device.type == "cuda":
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(3):
                dtvg_prompt(*args)
            print(f"{name}: fused call ran under set_sync_debug_mode('error'): 0 host syncs")
        finally:
            torch.cuda.set_sync_debug_mode("default")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--r", type=int, default=100)
    parser.add_argument("--d", type=int, default=4096)
    parser.add_argument("--n", type=int, default=6)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    bench(torch.device("cpu"), args.r, args.d, args.n, args.iters, args.rounds)
    if torch.cuda.is_available():
        bench(torch.device("cuda"), args.r, args.d, args.n, args.iters, args.rounds)


if __name__ == "__main__":
    main()
