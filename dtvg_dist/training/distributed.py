"""The Accelerator and the few collective operations the trainer needs.

Everything that differs between one process, DDP and DeepSpeed ZeRO-3 lives
here, so the trainer reads the same for all of them:

- :func:`accelerator_for_recipe` builds the Accelerator from the launch
  config (``accelerate launch --config_file launch_configs/X.yaml``) and the
  recipe (batch size, gradient accumulation, clipping), refuses what cannot
  work (8-bit under ZeRO-3) before any model loads, and sets collective
  timeouts so a dead rank ends the job instead of hanging it.
- :func:`keep_prompt_whole` raises ZeRO-3's persistence threshold above the
  soft prompt's size, so the prompt and alphas stay whole and identical on
  every rank while the frozen backbone is partitioned.
- :func:`mask_broadcaster`: rank 0 decides the DTVG group, every rank uses it.
- :func:`full_trainable_state`, :func:`load_trainable_state` and
  :func:`checkpoint_optimizer` read and write the prompt's tensors and the
  optimizer's state whole (fp32 masters gathered from the ZeRO partitions),
  in the same format a single process writes, so checkpoints need no pickle
  and move between launch modes.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import logging
import math
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, InitProcessGroupKwargs
from torch import nn

from dtvg_dist.errors import RecipeError
from dtvg_dist.training.threads import reproducibility_facts
from dtvg_dist.training.tracking import local_mlflow_store
from dtvg_dist.utils import packaged_file

log = logging.getLogger("dtvg_dist.training.distributed")

ZERO3_8BIT_ERROR = (
    "backbone.load_in_8bit=true is refused under DeepSpeed ZeRO-3 (this launch config has "
    "zero_stage 3): bitsandbytes' 8-bit weights are not supported by ZeRO-3's zero.Init. "
    "transformers builds a quantised model outside zero.Init (so every rank would hold the "
    "whole 8-bit backbone, which ZeRO-3 is there to avoid) and refuses the device_map that "
    "8-bit loading needs; DeepSpeed would then partition the int8 weights as if they were "
    "ordinary tensors, which neither library supports, so the losses could not be trusted. "
    "Use instead: bf16 under ZeRO-3 (backbone.load_in_8bit=false with "
    "launch_configs/multi_gpu_zero3.yaml or multi_node_zero3.yaml) to spread a large backbone "
    "over GPUs, or 8-bit without ZeRO-3: one GPU (launch_configs/single_gpu_8bit.yaml) or plain "
    "DDP (launch_configs/multi_gpu_ddp.yaml; every GPU holds its own 8-bit copy)."
)


class LaunchError(RecipeError):
    """A launch config and a recipe that cannot work together."""


def check_launch(batch_size: int | None, world: int, *, zero3: bool = False,
                 load_in_8bit: bool = False) -> None:
    """What the trainer refuses about a launch, before any weights load: the
    same function the planner's tests call on every recommended launch.
    Every process needs at least one example of each micro-step (the global
    batch is split over ranks, it does not grow with them); 8-bit weights
    cannot be partitioned by ZeRO-3."""
    if batch_size is not None and batch_size < world:
        raise LaunchError(
            f"optim.batch_size={batch_size} is smaller than the {world} processes of this launch: "
            f"every process needs at least one example per step. Launch at most {batch_size} "
            f"processes (python -m dtvg_dist.plan recommends a count that divides it; the grid "
            f"packs the other GPUs with other runs), or raise optim.batch_size to {world} or more "
            "(that changes the recipe's global batch, and with it the results)"
        )
    if load_in_8bit and zero3:
        raise LaunchError(ZERO3_8BIT_ERROR)


# ----------------------------------------------------------------- accelerator
def _deepspeed_requested() -> bool:
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"


def import_deepspeed_without_mlflow(trackers: list[str]) -> None:
    """Import DeepSpeed with mlflow hidden, unless mlflow is one of the run's
    trackers or is already imported.

    DeepSpeed's autotuner imports mlflow at import time when it can (its only
    use: logging autotuning trials, which this trainer never runs), and mlflow
    is most of what ``import deepspeed`` costs every rank of every ZeRO-3
    launch (bench/deepspeed_import_bench.py: 1.69x the import without it). A ``None`` in ``sys.modules``
    makes that ``import mlflow`` raise ImportError, which DeepSpeed catches;
    the entry is removed right after, so mlflow imports normally later.
    """
    if "deepspeed" in sys.modules or "mlflow" in sys.modules or "mlflow" in trackers:
        return
    sys.modules["mlflow"] = None  # type: ignore[assignment]
    try:
        import deepspeed  # noqa: F401
    finally:
        del sys.modules["mlflow"]


# DeepSpeed's name for its shared-memory collective op on CPU
# (deepspeed/ops/op_builder/cpu/comm.py, ShareMemCommBuilder.NAME).
SHM_COMM_OP = "deepspeed_shm_comm"


def skip_deepspeed_cpu_inference_op() -> bool:
    """On a CPU-only machine, keep DeepSpeed from compiling an op training never uses.

    When its process group starts, DeepSpeed's comm backend on CPU compiles
    ``deepspeed_shm_comm`` with g++ (deepspeed/comm/torch.py ``build_shm_op``:
    35-50 s and about 1.5 GB on 2 cores, on every fresh environment, behind a
    lock file that a killed build leaves behind for the next run to wait on
    for ever). The op serves only ``inference_all_reduce`` (DeepSpeed's
    tensor-parallel inference layers, deepspeed/module_inject/layers.py);
    ZeRO-3 training reduces through torch.distributed (gloo). Marking it
    incompatible in ``deepspeed.ops.__compatible_ops__`` (one dict per process;
    deepspeed/ops/__init__.py keeps edits to it) takes DeepSpeed's own
    fallback: ``build_shm_op`` returns None. GPUs are left alone. Returns
    whether the op was marked.
    """
    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator

    if get_accelerator().device_name() != "cpu":
        return False
    deepspeed.ops.__compatible_ops__[SHM_COMM_OP] = False
    return True


def resolve_deepspeed_config_file(environ: dict[str, str] | os._Environ = os.environ) -> str | None:
    """The packaged launch configs name their DeepSpeed JSON as
    ``launch_configs/ds_*.json``; `accelerate launch` passes that string on
    in ACCELERATE_DEEPSPEED_CONFIG_FILE and DeepSpeedPlugin opens it relative
    to the working directory (accelerate utils/launch.py, utils/dataclasses.py).
    When it is not there, point it at the packaged file, so a launch works
    from any folder. Returns the path now in the environment."""
    value = environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE")
    if not value or value == "none" or os.path.isfile(value):
        return value
    packaged = packaged_file(value)
    if packaged is not None:
        environ["ACCELERATE_DEEPSPEED_CONFIG_FILE"] = str(packaged)
        return str(packaged)
    raise LaunchError(
        f"the launch config's deepspeed_config_file {value!r} does not exist (relative paths are "
        f"read from the working directory {os.getcwd()}): give an absolute path"
    )


def build_accelerator(
    timeout_s: int,
    trackers: list[str],
    project_dir: str,
    *,
    grad_accum: int = 1,
    batch_size: int | None = None,
    max_grad_norm: float | None = None,
    load_in_8bit: bool = False,
) -> Accelerator:
    """One Accelerator for every launch mode.

    Without CUDA the process group must be gloo (else every rank silently
    believes it is alone). Plain DDP on CPU needs ``cpu=True`` (else ranks
    train alone); DeepSpeed needs ``cpu=False`` (accelerate only turns
    DeepSpeed on for a non-CPU state; DeepSpeed's CPU accelerator then runs it
    over gloo). The scheduler is stepped once per optimizer step whatever
    the world size: the trainer's global batch is split over ranks, it does
    not grow with them.
    """
    on_cpu = not torch.cuda.is_available()
    use_deepspeed = _deepspeed_requested()
    if use_deepspeed:
        resolve_deepspeed_config_file()
        import_deepspeed_without_mlflow(list(trackers))
        skip_deepspeed_cpu_inference_op()
    handlers = []
    # A process group is wanted when launched with several processes, and by
    # DeepSpeed even for one (on CPU its default backend, oneCCL, is absent).
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 or use_deepspeed:
        handlers.append(
            InitProcessGroupKwargs(
                backend="gloo" if on_cpu else None, timeout=datetime.timedelta(seconds=timeout_s)
            )
        )
    local_mlflow_store(list(trackers), project_dir)
    accelerator = Accelerator(
        cpu=on_cpu and not use_deepspeed,
        kwargs_handlers=handlers,
        gradient_accumulation_steps=grad_accum,
        step_scheduler_with_optimizer=False,
        log_with=list(trackers) or None,
        project_dir=project_dir,
    )
    stage = zero_stage(accelerator)
    check_launch(batch_size, accelerator.num_processes, zero3=stage == 3, load_in_8bit=load_in_8bit)
    if accelerator.distributed_type == DistributedType.DEEPSPEED and stage != 3:
        raise LaunchError(
            f"DeepSpeed ZeRO stage {stage} is not supported: only the soft prompt trains, so "
            "stages 0-2 (which shard optimizer states and gradients) save nothing, and their "
            "optimizer state is not checkpointed here. Use ZeRO-3 (launch_configs/"
            "multi_gpu_zero3.yaml) to shard the frozen backbone, or plain DDP "
            "(launch_configs/multi_gpu_ddp.yaml)."
        )
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        _fill_deepspeed_config(accelerator, batch_size, grad_accum, max_grad_norm)
    log.info(
        "accelerator: %s, %d process(es), device %s, mixed precision %s, zero stage %d",
        accelerator.distributed_type, accelerator.num_processes, accelerator.device,
        accelerator.mixed_precision, stage,
    )
    return accelerator


def accelerator_for_recipe(cfg: Any, project_dir: str) -> Accelerator:
    """The Accelerator of the launch config, with the recipe's batch layout."""
    return build_accelerator(
        cfg.distributed.timeout_s,
        list(cfg.logging.trackers),
        project_dir,
        grad_accum=cfg.optim.grad_accum,
        batch_size=cfg.optim.batch_size,
        max_grad_norm=cfg.optim.max_grad_norm,
        load_in_8bit=bool(cfg.backbone.load_in_8bit),
    )


def _fill_deepspeed_config(
    accelerator: Accelerator, batch_size: int | None, grad_accum: int, max_grad_norm: float | None
) -> None:
    """Fill the DeepSpeed JSON's "auto" batch and clipping entries from the
    recipe (the trainer feeds no dataloader that accelerate could read them
    from). Explicit values that contradict the recipe are refused."""
    plugin = accelerator.state.deepspeed_plugin
    ds = plugin.deepspeed_config
    world = accelerator.num_processes
    if plugin.is_auto("gradient_accumulation_steps") or "gradient_accumulation_steps" not in ds:
        ds["gradient_accumulation_steps"] = grad_accum
    elif int(ds["gradient_accumulation_steps"]) != grad_accum:
        raise LaunchError(
            f"the DeepSpeed config sets gradient_accumulation_steps="
            f"{ds['gradient_accumulation_steps']} but the recipe has optim.grad_accum={grad_accum}; "
            'set it to "auto" in the JSON (the recipe decides)'
        )
    if batch_size is not None:
        micro = math.ceil(batch_size / world)
        if plugin.is_auto("train_micro_batch_size_per_gpu") or "train_micro_batch_size_per_gpu" not in ds:
            ds["train_micro_batch_size_per_gpu"] = micro
        if plugin.is_auto("train_batch_size") or "train_batch_size" not in ds:
            ds["train_batch_size"] = (
                int(ds["train_micro_batch_size_per_gpu"]) * grad_accum * world
            )
    if plugin.is_auto("gradient_clipping") or "gradient_clipping" not in ds:
        # DeepSpeed clips inside its step; the trainer's clip call is then a no-op.
        ds["gradient_clipping"] = float(max_grad_norm or 0.0)


def zero_stage(accelerator: Accelerator) -> int:
    if accelerator.distributed_type != DistributedType.DEEPSPEED:
        return 0
    plugin = accelerator.state.deepspeed_plugin
    return int(plugin.zero_stage) if plugin is not None else 0


def keep_prompt_whole(accelerator: Accelerator, prompt: nn.Module, hidden_size: int) -> None:
    """Before `prepare`: under ZeRO-3, raise `stage3_param_persistence_threshold`
    to at least the largest prompt tensor, so the soft prompt and alphas stay
    whole on every rank (their grads and optimizer states are still
    partitioned; after each step DeepSpeed all-gathers the updated values into
    every rank's copy). Backbone matrices are far larger and stay partitioned."""
    if zero_stage(accelerator) != 3:
        return
    zero = accelerator.state.deepspeed_plugin.deepspeed_config.setdefault("zero_optimization", {})
    # accelerate fills these "auto" entries from `model.config.hidden_size`;
    # the prepared model is the prompt wrapper, which has no config.
    for key, value in (
        ("reduce_bucket_size", hidden_size * hidden_size),
        ("stage3_prefetch_bucket_size", int(0.9 * hidden_size * hidden_size)),
    ):
        if zero.get(key) == "auto":
            zero[key] = value
    current = zero.get("stage3_param_persistence_threshold", 100_000)
    if current == "auto":
        current = 10 * hidden_size  # what accelerate would fill in
    largest = max((getattr(p, "ds_numel", p.numel()) for p in prompt.parameters()), default=0)
    zero["stage3_param_persistence_threshold"] = max(int(current), int(largest))


@contextlib.contextmanager
def zero_init(accelerator: Accelerator, enabled: bool) -> Iterator[None]:
    """Around backbone loading: with ``enabled=False`` an active ZeRO-3 plugin
    does not build the model under ``zero.Init`` (it is built whole and
    partitioned by ``prepare``). Random-weight models built from a config
    need this: under ``zero.Init`` their initialisation draws differ from a
    plain build, so the same config and seed would give other weights than
    the single-process run (and the TPV bank, keyed by config and seed,
    would silently mix backbones)."""
    plugin = accelerator.state.deepspeed_plugin if zero_stage(accelerator) == 3 else None
    if plugin is None or enabled:
        yield
        return
    # accelerate's zero3_init_context_manager(enable=False) leaves transformers'
    # is_deepspeed_zero3_enabled() true (measured, accelerate 1.15), so the
    # transformers hook is unset here and re-armed from the plugin afterwards.
    from transformers.integrations import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        plugin.set_deepspeed_weakref()


def unwrapped(accelerator: Accelerator, model: nn.Module) -> nn.Module:
    """The module under the launch's wrapper. Outside DeepSpeed this skips
    accelerate's ``unwrap_model``, which imports DeepSpeed whenever it is
    installed (and DeepSpeed imports mlflow): a tiny-t5 run took 1.22x as
    long with that import (bench/startup_bench.py, bench/RESULTS.md)."""
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        return accelerator.unwrap_model(model)
    wrappers = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    return model.module if isinstance(model, wrappers) else model


def release(accelerator: Accelerator) -> None:
    """After a run: drop the prepared objects (for DeepSpeed: destroy the
    engine and its hooks), so the next run of the same process (stage 1 task
    after task, then stage 2) gets a fresh engine around the same backbone.

    `free_memory` ends in a full `gc.collect`, which walks every object the
    process holds: the imported libraries (torch, transformers, scikit-learn)
    are millions, ~0.2 s a call on 2 CPU cores. What survives it lives on
    (modules, the backbone, cached data), so it is frozen out of later
    collections, which then walk only what the next run creates."""
    accelerator.free_memory()
    gc.freeze()


# ----------------------------------------------------------------- collectives
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


def _all_reduce(accelerator: Accelerator, value: torch.Tensor, op: Any) -> torch.Tensor:
    """`value` reduced over ranks by `op` (a copy; `value` itself is untouched)."""
    if accelerator.num_processes == 1:
        return value
    value = value.clone()
    torch.distributed.all_reduce(value, op=op)
    return value


def all_reduce_sum(accelerator: Accelerator, value: torch.Tensor) -> torch.Tensor:
    return _all_reduce(accelerator, value, torch.distributed.ReduceOp.SUM)


def all_reduce_max(accelerator: Accelerator, value: torch.Tensor) -> torch.Tensor:
    return _all_reduce(accelerator, value, torch.distributed.ReduceOp.MAX)


def _all_gather_tensor(accelerator: Accelerator, value: torch.Tensor) -> list[torch.Tensor]:
    if accelerator.num_processes == 1:
        return [value]
    out = [torch.empty_like(value) for _ in range(accelerator.num_processes)]
    torch.distributed.all_gather(out, value.contiguous())
    return out


# --------------------------------------------------------------- whole tensors
def _is_zero3_param(p: torch.Tensor) -> bool:
    return hasattr(p, "ds_id")


@contextlib.contextmanager
def gathered(params: list[torch.nn.Parameter], modifier_rank: int | None = None) -> Iterator[None]:
    """ZeRO-3 parameters whole inside the block (a collective: every rank
    enters it); a no-op for ordinary parameters. Writes inside the block
    need ``modifier_rank`` (that rank's values are kept)."""
    zero_params = [p for p in params if _is_zero3_param(p)]
    if not zero_params:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(zero_params, modifier_rank=modifier_rank):
        yield


def _has_fp32_master(p: torch.Tensor) -> bool:
    """DeepSpeed keeps the optimizer's fp32 copy of this parameter elsewhere."""
    return p.requires_grad and (hasattr(p, "_z3_optimizer") or hasattr(p, "_hp_mapping"))


def full_trainable_state(accelerator: Accelerator, prompt: nn.Module) -> dict[str, torch.Tensor]:
    """``prompt.trainable_state()`` with every trainable tensor whole and in
    fp32: under DeepSpeed the optimizer's fp32 masters, gathered. Collective
    under ZeRO: call it on every rank."""
    params = list(prompt.parameters())
    with gathered(params):
        state = prompt.trainable_state()
    if accelerator.distributed_type != DistributedType.DEEPSPEED:
        return state
    from deepspeed.utils import safe_get_full_fp32_param

    for name, p in prompt.named_parameters():
        if name in state and _has_fp32_master(p):
            full = safe_get_full_fp32_param(p)
            if full is not None:
                state[name] = full.detach().float().reshape(state[name].shape).cpu().clone()
    return state


def load_trainable_state(
    accelerator: Accelerator, prompt: nn.Module, state: dict[str, torch.Tensor]
) -> None:
    """``prompt.load_trainable_state(state)`` that sticks under DeepSpeed: the
    (partitioned) working copy and the optimizer's fp32 master both take the
    values. ``state`` must be the same on every rank. Collective under ZeRO."""
    params = list(prompt.parameters())
    with gathered(params, modifier_rank=0):
        prompt.load_trainable_state(state)
    if accelerator.distributed_type != DistributedType.DEEPSPEED:
        return
    from deepspeed.utils import safe_set_full_fp32_param

    for name, p in prompt.named_parameters():
        if name in state and _has_fp32_master(p):
            safe_set_full_fp32_param(p, state[name].to(accelerator.device, torch.float32))


class ZeroOptimizerState:
    """A ZeRO-3 optimizer seen through torch's ``state_dict`` format.

    ``state_dict()`` returns what a single-process ``torch.optim.AdamW`` over
    the prompt's param groups would: per-parameter ``step``, ``exp_avg``,
    ``exp_avg_sq`` whole (gathered from the partitions), plus the groups'
    hyperparameters. ``load_state_dict()`` scatters such a dict back. So a
    checkpoint is the same file whatever the launch mode, with no pickle.
    Both are collectives: call them on every rank.
    """

    def __init__(self, optimizer: Any, prompt: nn.Module) -> None:
        self.zero = optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer
        self.inner: torch.optim.Optimizer = self.zero.optimizer  # the client's torch optimizer
        # The order a torch optimizer built from prompt.param_groups numbers them in.
        self.groups = [list(g["params"]) for g in prompt.param_groups(1.0, 1.0, 0.0)]
        self.params = [p for group in self.groups for p in group]
        self._saved: dict[str, Any] | None = None

    def _flats(self) -> list[torch.Tensor]:
        """The flat fp32 partitions the torch optimizer steps (ZeRO-3)."""
        return list(self.zero.fp32_partitioned_groups_flat)

    def _group_meta(self) -> list[dict[str, Any]]:
        inner = self.inner.param_groups
        if len(inner) != len(self.groups):
            raise RuntimeError(
                f"DeepSpeed optimizer has {len(inner)} param groups, the prompt {len(self.groups)}"
            )
        meta, index = [], 0
        for group, params in zip(inner, self.groups, strict=True):
            entry = {k: v for k, v in group.items() if k != "params"}
            entry["params"] = list(range(index, index + len(params)))
            index += len(params)
            meta.append(entry)
        return meta

    def gather(self) -> ZeroOptimizerState:
        """Assemble the whole state now (every rank), for a later state_dict()."""
        from deepspeed.utils import safe_get_full_optimizer_state

        flat_states = [self.inner.state.get(f, {}) for f in self._flats()]
        keys = sorted({k for s in flat_states for k, v in s.items() if torch.is_tensor(v) and v.dim() > 0})
        step = next((s["step"] for s in flat_states if "step" in s), None)
        state: dict[int, dict[str, Any]] = {}
        for index, p in enumerate(self.params):
            per: dict[str, Any] = {}
            for key in keys:
                full = safe_get_full_optimizer_state(p, key)
                if full is not None:
                    shape = getattr(p, "ds_shape", p.shape)
                    per[key] = full.detach().reshape(shape).cpu().clone()
            if per and step is not None:
                per["step"] = step.detach().cpu().clone() if torch.is_tensor(step) else step
            if per:
                state[index] = per
        self._saved = {"state": state, "param_groups": self._group_meta()}
        return self

    def state_dict(self) -> dict[str, Any]:
        if self._saved is None:
            raise RuntimeError("ZeroOptimizerState.gather() must run on every rank before state_dict()")
        return self._saved

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        from deepspeed.utils import safe_set_full_optimizer_state

        saved_state = {int(k): v for k, v in state_dict["state"].items()}
        # torch optimizers create their state at the first step: create it
        # now, at the shapes of the flat fp32 partitions, so it can be filled.
        template = next(iter(saved_state.values()), {})
        for flat in self._flats():
            slot = self.inner.state.setdefault(flat, {})
            for key, value in template.items():
                if key == "step":
                    slot["step"] = (
                        value.detach().clone().float() if torch.is_tensor(value)
                        else torch.tensor(float(value))
                    )
                elif torch.is_tensor(value) and key not in slot:
                    slot[key] = torch.zeros_like(flat)
        for index, p in enumerate(self.params):
            for key, value in saved_state.get(index, {}).items():
                if key != "step" and torch.is_tensor(value) and value.dim() > 0:
                    safe_set_full_optimizer_state(p, value.to(self.inner_device(), torch.float32), key)
        groups = state_dict.get("param_groups", [])
        if len(groups) == len(self.inner.param_groups):
            for group, saved in zip(self.inner.param_groups, groups, strict=True):
                group.update({k: v for k, v in saved.items() if k != "params"})

    def inner_device(self) -> torch.device:
        flats = self._flats()
        return flats[0].device if flats else torch.device("cpu")


def checkpoint_optimizer(accelerator: Accelerator, optimizer: Any, prompt: nn.Module) -> Any:
    """What the checkpoint code should call ``state_dict()`` /
    ``load_state_dict()`` on. Under DeepSpeed a :class:`ZeroOptimizerState`
    (its state gathered here, on every rank); otherwise ``optimizer`` itself."""
    if accelerator.distributed_type != DistributedType.DEEPSPEED:
        return optimizer
    return ZeroOptimizerState(optimizer, prompt)


def optimizer_for_save(accelerator: Accelerator, optimizer: Any, prompt: nn.Module) -> Any:
    """Like :func:`checkpoint_optimizer`, with the state gathered now: call on
    every rank, then let the main process write it."""
    view = checkpoint_optimizer(accelerator, optimizer, prompt)
    return view.gather() if isinstance(view, ZeroOptimizerState) else view


# ----------------------------------------------------------------------- facts
def _local_elements(p: torch.Tensor) -> int:
    """Parameter elements resident on this rank: its ZeRO-3 partition plus
    any whole copy (persistent or currently gathered parameters)."""
    held = p.data.numel()
    if _is_zero3_param(p):
        held += p.ds_tensor.numel()
    return held


def backbone_elements(accelerator: Accelerator, model: nn.Module) -> dict[str, Any]:
    """Total backbone parameter elements and what each rank holds (collective)."""
    params = list(model.parameters())
    total = sum(int(getattr(p, "ds_numel", p.numel())) for p in params)
    local = torch.tensor([sum(_local_elements(p) for p in params)], dtype=torch.long)
    per_rank = [int(t.item()) for t in _all_gather_tensor(accelerator, local)]
    return {"backbone_param_elements": total, "backbone_param_elements_per_rank": per_rank}


def prompt_replica_difference(accelerator: Accelerator, prompt: nn.Module) -> float:
    """Largest absolute difference between any rank's working copy of the
    trainable prompt tensors and rank 0's (0.0 when they are identical)."""
    params = [p for p in prompt.parameters() if p.requires_grad]
    with gathered(params):
        flat = torch.cat([p.detach().float().reshape(-1).cpu() for p in params])
    copies = _all_gather_tensor(accelerator, flat)
    return max(float((c - copies[0]).abs().max()) if c.numel() else 0.0 for c in copies)


def run_facts(
    accelerator: Accelerator, model: nn.Module | None = None, prompt: nn.Module | None = None
) -> dict[str, Any]:
    """World size, launch mode and ZeRO stage for results.json; with `model`
    and `prompt`, also how the backbone is spread over ranks and whether the
    prompt replicas agree (collectives: call on every rank)."""
    facts: dict[str, Any] = {
        "world_size": accelerator.num_processes,
        "distributed_type": str(accelerator.distributed_type),
        "zero_stage": zero_stage(accelerator),
        "device": str(accelerator.device),
        **reproducibility_facts(accelerator.device),
    }
    if model is not None:
        facts.update(backbone_elements(accelerator, model))
    if prompt is not None:
        facts["prompt_replica_max_abs_diff"] = prompt_replica_difference(accelerator, prompt)
    return facts
