"""A run's CPU thread count and the facts that decide reproducibility.

The thread count is part of the run, not of the caller's environment:
torch's CPU kernels split reductions by thread, so the same run with 1 and
with 2 threads rounds differently, and a long chain of steps can turn that
into another result (issue 21: 3 of 70 demo runs differed between the serial
executor's 2 threads and SLURM's 1). The recipe key `distributed.threads`
sets it in the run itself (`torch.set_num_threads`), whichever executor or
launcher started it; `null` leaves it to the environment (OMP_NUM_THREADS,
else torch's default of one per core), which is then recorded but not
reproducible across machines or executors.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch

from dtvg_dist.errors import RecipeError


def apply_threads(threads: int | None) -> int:
    """Set this process's torch CPU thread count to `threads` (None: keep
    what the environment gave it); returns the count in effect."""
    if threads is not None:
        if int(threads) < 1:
            raise RecipeError(f"distributed.threads={threads}: give 1 or more, or null to "
                              "take OMP_NUM_THREADS / torch's default")
        if torch.get_num_threads() != int(threads):
            torch.set_num_threads(int(threads))
    return torch.get_num_threads()


@contextlib.contextmanager
def pinned_threads(threads: int) -> Iterator[None]:
    """`threads` CPU threads inside the block (work whose result is cached
    under a key without the thread count), the previous count after."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def reproducibility_facts(device: torch.device | str) -> dict[str, Any]:
    """What decides whether two runs give the same numbers, for results.json:
    the CPU thread count (and the OMP_NUM_THREADS it started with); on CUDA
    the device name, the CUDA and cuDNN versions and the deterministic
    flags."""
    facts: dict[str, Any] = {"threads": torch.get_num_threads(),
                             "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
                             "torch_version": torch.__version__,
                             "deterministic_algorithms": torch.are_deterministic_algorithms_enabled()}
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        facts.update({
            "device_name": torch.cuda.get_device_name(device),
            "cuda_version": torch.version.cuda,
            "cudnn_version": torch.backends.cudnn.version(),
            "cudnn_deterministic": torch.backends.cudnn.deterministic,
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
        })
    return facts
