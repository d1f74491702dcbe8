"""The Accelerator and the few collective operations the trainer needs.

Everything that differs between one process, DDP and DeepSpeed ZeRO-3 lives
here, so the trainer reads the same for all of them.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Callable
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, InitProcessGroupKwargs

log = logging.getLogger("dtvg_dist.distributed")


def build_accelerator(timeout_s: int, trackers: list[str], project_dir: str) -> Accelerator:
    """One Accelerator for every launch mode. Without CUDA the process group
    must be gloo (else every rank silently believes it is alone) and
    `cpu=True` (else DDP ranks train alone)."""
    on_cpu = not torch.cuda.is_available()
    handlers = []
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # launched: a process group is wanted
        handlers.append(
            InitProcessGroupKwargs(
                backend="gloo" if on_cpu else None, timeout=datetime.timedelta(seconds=timeout_s)
            )
        )
    accelerator = Accelerator(
        cpu=on_cpu,
        kwargs_handlers=handlers,
        log_with=list(trackers) or None,
        project_dir=project_dir,
    )
    log.info(
        "accelerator: %s, %d process(es), device %s, mixed precision %s",
        accelerator.distributed_type, accelerator.num_processes, accelerator.device,
        accelerator.mixed_precision,
    )
    return accelerator


def zero_stage(accelerator: Accelerator) -> int:
    if accelerator.distributed_type != DistributedType.DEEPSPEED:
        return 0
    plugin = accelerator.state.deepspeed_plugin
    return int(plugin.zero_stage) if plugin is not None else 0


def mask_broadcaster(accelerator: Accelerator) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """Rank 0 decides the group: every step its mask is broadcast as a tensor
    (an asynchronous collective on the device stream; no host read)."""
    if accelerator.num_processes == 1:
        return None

    def broadcast(mask: torch.Tensor) -> torch.Tensor:
        as_int = mask.to(torch.uint8)
        torch.distributed.broadcast(as_int, src=0)
        return as_int.bool()

    return broadcast


def all_reduce_sum(accelerator: Accelerator, value: torch.Tensor) -> torch.Tensor:
    if accelerator.num_processes == 1:
        return value
    value = value.clone()
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.SUM)
    return value


def run_facts(accelerator: Accelerator) -> dict[str, Any]:
    return {
        "world_size": accelerator.num_processes,
        "distributed_type": str(accelerator.distributed_type),
        "zero_stage": zero_stage(accelerator),
        "device": str(accelerator.device),
    }
