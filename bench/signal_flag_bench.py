"""What the per-step stop check costs: the stop flag rides as a second
element of the loss all-reduce the trainer already does, against that
all-reduce alone (before the stop check existed) and against a separate
one-element all-reduce for the flag. Two CPU processes over gloo; prints
microseconds per step and the ratios, measured in one run.

    python bench/signal_flag_bench.py [--iters 3000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _variant(name: str, loss: torch.Tensor) -> float:
    if name == "loss only":
        value = loss.clone()
        dist.all_reduce(value)
        return value.item()
    if name == "flag in the loss all-reduce":
        both = torch.stack([loss, torch.full_like(loss, 0.0)])
        dist.all_reduce(both)
        return both.tolist()[0]
    value, flag = loss.clone(), torch.zeros(())
    dist.all_reduce(value)
    dist.all_reduce(flag)
    return value.item() + flag.item()


NAMES = ("loss only", "flag in the loss all-reduce", "separate flag all-reduce")


def _worker(rank: int, port: int, iters: int, rounds: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    loss = torch.tensor(0.5)
    times: dict[str, list[float]] = {name: [] for name in NAMES}
    for _ in range(rounds):  # interleaved rounds, so load changes hit every variant
        for name in NAMES:
            dist.barrier()
            start = time.perf_counter()
            for _ in range(iters):
                _variant(name, loss)
            times[name].append((time.perf_counter() - start) / iters * 1e6)
    if rank == 0:
        queue.put({name: statistics.median(values) for name, values in times.items()})
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iters", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    procs = [ctx.Process(target=_worker, args=(r, port, args.iters, args.rounds, queue)) for r in (0, 1)]
    for proc in procs:
        proc.start()
    result = queue.get()
    for proc in procs:
        proc.join()
    base = result["loss only"]
    for name in NAMES:
        print(f"{name:<30} {result[name]:8.1f} us/step  x{result[name] / base:.3f}")


if __name__ == "__main__":
    main()
