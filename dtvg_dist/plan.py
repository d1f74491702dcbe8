"""Command line: python -m dtvg_dist.plan recipe=NAME --gpus N --gpu-memory GiB [--nodes M]

Which launch mode fits a recipe on the GPUs at hand, and why. Per GPU, for
DDP in the recipe's dtype, DDP with an 8-bit backbone and ZeRO-3 in bf16:
the memory of the weights, of one training step's activations at the
recipe's batch and the longest lengths its tasks allow, of evaluation, and
of the prompt and its optimizer state (arithmetic in :mod:`dtvg_dist.costs`,
from the backbone's config alone); the bytes every GPU sends per optimizer
step; whether it fits; and the ``accelerate launch`` line to use.

The backbone is frozen, so DDP all-reduces only the prompt's gradients,
while ZeRO-3 gathers the whole backbone in every forward and backward: DDP
is chosen whenever a replica fits.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from dtvg_dist import cli
from dtvg_dist.costs import (
    GIB,
    ModelShape,
    PlanError,
    PromptState,
    Step,
    activations,
    eval_bytes,
    find_model_config,
    prompt_bytes,
    weight_bytes,
    zero3_elements_per_rank,
)
from dtvg_dist.model.methods import get_method
from dtvg_dist.orchestration.config import launch_config_path, list_recipes, load_recipe
from dtvg_dist.training.distributed import check_launch

# Package data: absolute paths that exist wherever the user stands.
ZERO3_CONFIG = launch_config_path("ds_zero3_bf16.json")  # what the ZeRO-3 GPU launch configs use
# Per GPU, outside torch's allocator: the CUDA context, cuBLAS/cuDNN workspaces
# and NCCL buffers. An assumption, not a measurement: bench/gpu_check.py
# reports the card's figure (memory in use minus torch's reserved memory).
RUNTIME_RESERVE_BYTES = 1 * GIB

USAGE = """usage: python -m dtvg_dist.plan recipe=NAME --gpus N --gpu-memory GiB [--nodes M] [--json] [key=value ...]

Per launch mode (DDP in the recipe's dtype, DDP with an 8-bit backbone, ZeRO-3
in bf16): the memory per GPU, the bytes every GPU sends per optimizer step,
whether it fits, and the recommended `accelerate launch` line.
  --gpus N          GPUs per node
  --gpu-memory GiB  memory of one GPU (e.g. 80 for an H100 80GB)
  --nodes M         machines (default 1); N x M processes in all
  --json            print the plan as JSON
Computed from the backbone's config.json (local folder, Hugging Face cache,
or a known shape); no weights are read. Overrides as for dtvg_dist.train.
"""

__all__ = ["PlanError", "Plan", "ModeEstimate", "make_plan", "plan_launch", "launch_check", "choose",
           "render", "main"]

# ------------------------------------------------------------- the recipe
@dataclass(frozen=True)
class Workload:
    """What a recipe asks of one process, before the launch mode is chosen."""

    recipe: str
    stage_desc: str
    task: str
    batch: int  # global batch per micro-step
    grad_accum: int
    prompt_len: int
    source_len: int  # task's max source tokens
    target_len: int  # task's max target tokens
    eval_batch: int
    new_tokens: int
    dtype: str
    dtype_bytes: int
    checkpointing: bool
    answer_only_logits: bool
    load_in_8bit: bool
    config_built: bool
    prompt: PromptState




def _answer_only(cfg: Any) -> bool:
    """The recipe's answer-only-logits switch, where this checkout has one
    (`backbone.answer_only_logits`); False (logits at every position) otherwise."""
    from omegaconf import OmegaConf

    for key in ("backbone.answer_only_logits", "optim.answer_only_logits", "answer_only_logits"):
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None:
            return bool(value)
    return False


def _tasks_of(cfg: Any) -> tuple[str, list[str]]:
    """Which tasks the recipe trains (`recipe_tasks` for its stage), and a description of the stage."""
    from dtvg_dist.orchestration.config import recipe_tasks

    desc = {"1": "stage 1 (prompt tuning)", "2": f"stage 2 ({cfg.method})",
            "pre": f"pre-stage ({cfg.method})"}.get(str(cfg.stage), f"stage 1 + stage 2 ({cfg.method})")
    return desc, recipe_tasks(cfg, str(cfg.stage))


def workload(cfg: Any, shape: ModelShape, task_name: str | None = None) -> list[Workload]:
    """One Workload per task the recipe trains (the planner keeps the worst)."""
    from dtvg_dist.orchestration.config import recipe_tasks
    from dtvg_dist.tasks import get_task
    from dtvg_dist.tasks.synthetic import register_if_named

    register_if_named(recipe_tasks(cfg))
    stage_desc, names = _tasks_of(cfg)
    dtype = str(cfg.backbone.dtype)
    from dtvg_dist.model.backbone import DTYPES

    if dtype not in DTYPES:
        raise PlanError(f"backbone.dtype={dtype!r} is not one of fp32, bf16, fp16")
    r = int(cfg.prompt.length)
    n_src = len(cfg.source_tasks)
    # The method says what its stage-2 prompt holds and how many positions it
    # adds; stage 1 is prompt tuning with r rows. With both stages, the larger.
    method = get_method("pt" if cfg.stage == "1" else str(cfg.method))
    prompt = method.prompt_state(cfg, r, shape.hidden, n_src)
    if cfg.stage == "pre":
        prompt = method.pre_stage_state(cfg, r, shape.hidden, n_src) or prompt
    tokens = method.prompt_tokens(cfg)
    prompt_len = tokens if cfg.stage == "2" else max(r, tokens)
    out = []
    for name in names if task_name is None else [task_name]:
        try:
            task = get_task(name)
        except ValueError as err:
            raise PlanError(str(err)) from None
        out.append(Workload(
            recipe=str(cfg.recipe), stage_desc=stage_desc, task=task.name,
            batch=int(cfg.optim.batch_size), grad_accum=int(cfg.optim.grad_accum), prompt_len=prompt_len,
            source_len=task.max_source_length, target_len=task.max_target_length,
            eval_batch=int(cfg.eval.batch_size),
            new_tokens=int(cfg.eval.max_new_tokens or task.max_target_length),
            dtype=dtype, dtype_bytes=DTYPES[dtype].itemsize,
            checkpointing=bool(cfg.backbone.gradient_checkpointing),
            answer_only_logits=_answer_only(cfg), load_in_8bit=bool(cfg.backbone.load_in_8bit),
            config_built=cfg.backbone.config is not None and cfg.backbone.name_or_path is None,
            prompt=prompt,
        ))
    return out


def step_for(shape: ModelShape, w: Workload, world: int, act_bytes: int, checkpointing: bool) -> Step:
    """The micro-step one of ``world`` ranks runs (it takes every world-th example)."""
    b = math.ceil(w.batch / world)
    if shape.family == "causal":
        t = w.prompt_len + w.source_len + w.target_len
        rows = b * (w.target_len if w.answer_only_logits else t)
        return Step(b, t, 0, rows, act_bytes, checkpointing)
    return Step(b, w.prompt_len + w.source_len, w.target_len, b * w.target_len, act_bytes, checkpointing)


# -------------------------------------------------------------- launch modes
@dataclass
class ModeEstimate:
    """One launch mode on this hardware: memory per GPU, bytes sent, the line."""

    key: str  # "ddp" | "ddp8" | "zero3"
    name: str
    available: bool
    reason: str = ""
    weights: int = 0
    gathered: int = 0  # ZeRO-3: parameters gathered for compute
    activations: int = 0
    logits: int = 0  # of which the logits and loss
    evaluation: int = 0
    prompt: int = 0
    reserve: int = RUNTIME_RESERVE_BYTES
    sends: int = 0
    sends_detail: str = ""
    launch: str = ""
    fits: bool = False

    @property
    def total(self) -> int:
        return self.weights + self.gathered + self.prompt + self.reserve + max(self.activations, self.evaluation)


@dataclass
class Plan:
    recipe: str
    gpus: int
    nodes: int
    gpu_memory_gib: float
    backbone: str
    config_source: str
    parameters: int
    workload: dict[str, Any]
    modes: list[ModeEstimate]
    recommended: str | None
    why: str
    launch_notes: list[str] = field(default_factory=list)
    asked_gpus: int = 0  # what the user has (plan_launch may recommend fewer)
    asked_nodes: int = 0

    @property
    def world(self) -> int:
        return self.gpus * self.nodes

    def mode(self, key: str) -> ModeEstimate:
        return next(m for m in self.modes if m.key == key)

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for m, d in zip(self.modes, out["modes"], strict=True):
            d["total"] = m.total
        out["world"] = self.world
        return out


def _zero3_settings() -> tuple[int | None, int]:
    """(stage3_param_persistence_threshold or None for "auto", stage3_max_live_parameters)."""
    zero = json.loads(ZERO3_CONFIG.read_text()).get("zero_optimization", {})
    threshold = zero.get("stage3_param_persistence_threshold", 100_000)
    live = int(zero.get("stage3_max_live_parameters", 1_000_000_000))
    return (None if threshold == "auto" else int(threshold)), live


def _launch_line(key: str, gpus: int, nodes: int, recipe: str, overrides: list[str]) -> str:
    world = gpus * nodes
    tail = " ".join(["-m dtvg_dist.train", f"recipe={recipe}", *overrides])
    if nodes > 1:
        config = "multi_node_zero3.yaml" if key == "zero3" else "multi_gpu_ddp.yaml"
        return (
            f"accelerate launch --config_file {launch_config_path(config)} --num_machines {nodes} "
            f"--num_processes {world} --machine_rank $MACHINE_RANK --main_process_ip $MAIN_IP "
            f"--main_process_port 29500 {tail}"
        )
    if key == "zero3":
        return f"accelerate launch --config_file {launch_config_path('multi_gpu_zero3')} --num_processes {world} {tail}"
    if world == 1:
        config = "single_gpu_8bit.yaml" if key == "ddp8" else "single_gpu.yaml"
        return f"accelerate launch --config_file {launch_config_path(config)} {tail}"
    return f"accelerate launch --config_file {launch_config_path('multi_gpu_ddp')} --num_processes {world} {tail}"


def _mode_overrides(key: str, w: Workload, user: list[str]) -> list[str]:
    keep = [o for o in user if not o.startswith("backbone.load_in_8bit=")]
    if key == "ddp8":
        return [*keep, "backbone.load_in_8bit=true"]
    if w.load_in_8bit:
        return [*keep, "backbone.load_in_8bit=false"]
    return keep


def estimate_mode(
    key: str, shape: ModelShape, w: Workload, gpus: int, nodes: int, overrides: list[str]
) -> ModeEstimate:
    """Memory and traffic of one launch mode for one workload."""
    world = gpus * nodes
    names = {"ddp": f"DDP {w.dtype}", "ddp8": "DDP 8-bit", "zero3": "ZeRO-3 bf16"}
    est = ModeEstimate(key=key, name=names[key], available=True)
    if key == "ddp8" and w.config_built:
        est.available = False
        est.reason = "8-bit needs a saved checkpoint (backbone.name_or_path); this backbone is built from backbone.config"
    act_bytes = 2 if key == "zero3" else w.dtype_bytes
    step = step_for(shape, w, world, act_bytes, w.checkpointing)
    acts = activations(shape, step)
    est.activations = acts.peak
    est.logits = acts.saved_head + acts.head
    prompt_eval = w.prompt_len + w.source_len
    est.evaluation = eval_bytes(shape, w.eval_batch, prompt_eval, w.new_tokens, act_bytes)
    if key == "zero3":
        threshold, live = _zero3_settings()
        threshold = max(threshold if threshold is not None else 10 * shape.hidden, w.prompt.largest)
        part, persist = zero3_elements_per_rank(shape, world, threshold)
        est.weights = (part + persist) * 2
        est.gathered = min(shape.parameters() - persist, live) * 2
        est.prompt = prompt_bytes(w.prompt, "zero3", world)
        frac = (world - 1) / world
        gathers = 2 * w.grad_accum * frac * (shape.parameters() - persist) * 2
        grads = w.grad_accum * frac * w.prompt.trainable * 2 + frac * w.prompt.trainable * 2
        est.sends = int(gathers + grads)
        est.sends_detail = (
            f"all-gathers of the backbone in forward and backward ({_fmt_bytes(gathers)}, "
            f"x{w.grad_accum} micro-steps), prompt gradient reduce-scatter and update "
            f"all-gather ({_fmt_bytes(grads)})"
        )
    else:
        est.weights = weight_bytes(shape, w.dtype_bytes, load_in_8bit=key == "ddp8")
        est.prompt = prompt_bytes(w.prompt, "ddp", world)
        est.sends = int(2 * (world - 1) / world * w.prompt.trainable * 4)
        est.sends_detail = "ring all-reduce of the prompt's fp32 gradients, once per optimizer step"
    est.launch = _launch_line(key, gpus, nodes, w.recipe, _mode_overrides(key, w, overrides))
    return est


def _fmt_bytes(n: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


def _gib(n: float) -> str:
    return f"{n / GIB:.2f}"


def choose(modes: list[ModeEstimate], world: int, gpu_bytes: float) -> tuple[str | None, str]:
    """The mode to use and why: DDP in the recipe's dtype when a replica
    fits (it sends only the prompt's gradients); else, on several GPUs,
    ZeRO-3 (the backbone's numerics unchanged, at the price of moving the
    backbone every step), else DDP 8-bit (a quantised backbone)."""
    by = {m.key: m for m in modes}
    ddp, ddp8, z3 = by["ddp"], by["ddp8"], by["zero3"]
    ok = {k: m.available and m.fits for k, m in by.items()}
    cap = f"{gpu_bytes / GIB:.1f} GiB"
    ratio = z3.sends / ddp.sends if ddp.sends else float("inf")
    if ok["ddp"]:
        why = f"a whole {ddp.name.split()[1]} replica fits ({_gib(ddp.total)} of {cap} per GPU)"
        if world > 1:
            why += (
                f"; DDP sends {_fmt_bytes(ddp.sends)} per GPU per step (the prompt's gradients: "
                f"the backbone is frozen) against {_fmt_bytes(z3.sends)} for ZeRO-3 "
                f"({ratio:,.0f}x), which gathers the whole backbone in every forward and backward"
            )
        return "ddp", why
    why = f"a whole {ddp.name.split()[1]} replica needs {_gib(ddp.total)} GiB per GPU, more than {cap}"
    # One GPU: ZeRO-3 has nothing to shard it over (it only adds gathered copies).
    order = ["zero3", "ddp8"] if world > 1 else ["ddp8"]
    for key in order:
        if not ok[key]:
            continue
        m = by[key]
        why += f"; {m.name} fits ({_gib(m.total)} GiB)"
        if key == "zero3":
            why += (
                f" and keeps the backbone's bf16 numerics, but every GPU sends "
                f"{_fmt_bytes(z3.sends)} per step (the backbone is gathered in forward and backward)"
            )
            if ok["ddp8"]:
                why += f"; DDP 8-bit also fits ({_gib(ddp8.total)} GiB) and sends {_fmt_bytes(ddp8.sends)}, with a quantised backbone"
        else:
            why += " with the backbone quantised to 8 bits (LLM.int8), which changes its numerics"
        return key, why
    return None, why + "; no launch mode fits"


def _suggestions(
    shape: ModelShape, w: Workload, gpus: int, nodes: int, gpu_bytes: float, overrides: list[str]
) -> list[str]:
    """When nothing fits: the GPU count at which ZeRO-3 would, and what
    gradient checkpointing would save."""
    notes = []
    for more in range(nodes + 1, 513):
        est = estimate_mode("zero3", shape, w, gpus, more, overrides)
        if est.total <= gpu_bytes:
            world_more = gpus * more
            batch_note = "" if splits_evenly(w.batch, world_more) else (
                f", with optim.batch_size a multiple of {world_more} (the recipe's is {w.batch}: "
                "another recipe)")
            notes.append(
                f"ZeRO-3 bf16 would fit on {more} nodes x {gpus} GPUs ({_gib(est.total)} GiB each{batch_note})"
            )
            break
    if w.dtype_bytes == 4:
        half = dataclasses.replace(w, dtype="bf16", dtype_bytes=2)
        est = estimate_mode("ddp", shape, half, gpus, nodes, overrides)
        verdict = "fits" if est.total <= gpu_bytes else "does not fit"
        notes.append(f"with backbone.dtype=bf16 DDP needs {_gib(est.total)} GiB per GPU ({verdict})")
    if not w.checkpointing:
        on = dataclasses.replace(w, checkpointing=True)
        for key in ("ddp", "zero3"):
            est = estimate_mode(key, shape, on, gpus, nodes, overrides)
            verdict = "fits" if est.total <= gpu_bytes else "does not fit"
            notes.append(
                f"with backbone.gradient_checkpointing=true {est.name} needs {_gib(est.total)} GiB "
                f"per GPU ({verdict})"
            )
    notes.append("a smaller optim.batch_size with a larger optim.grad_accum lowers the activations")
    ddp = estimate_mode("ddp", shape, w, gpus, nodes, overrides)
    if ddp.evaluation > ddp.activations:
        notes.append(
            f"evaluation needs more than training ({_gib(ddp.evaluation)} against "
            f"{_gib(ddp.activations)} GiB): lower eval.batch_size (now {w.eval_batch})"
        )
    return notes


def make_plan(
    recipe: str, gpus: int, gpu_memory_gib: float, nodes: int = 1, overrides: list[str] | None = None,
    config: dict[str, Any] | None = None,
) -> Plan:
    """The plan for ``recipe`` (with ``overrides``) on ``nodes`` x ``gpus`` GPUs.
    ``config`` replaces the backbone's config lookup (tests)."""
    if gpus < 1 or nodes < 1:
        raise PlanError(f"--gpus and --nodes must be at least 1 (got --gpus {gpus}, --nodes {nodes})")
    if not gpu_memory_gib > 0:
        raise PlanError(f"--gpu-memory must be a positive number of GiB (got {gpu_memory_gib})")
    overrides = list(overrides or [])
    cfg = load_recipe(recipe, overrides)
    if config is None:
        config, source = find_model_config(cfg.backbone)
    else:
        source = "given"
    shape = ModelShape.from_config(config)
    world = gpus * nodes
    gpu_bytes = gpu_memory_gib * GIB
    # The worst task decides: the one whose DDP step needs the most memory.
    loads = workload(cfg, shape)
    w = max(loads, key=lambda x: estimate_mode("ddp", shape, x, gpus, nodes, overrides).total)
    modes = [estimate_mode(k, shape, w, gpus, nodes, overrides) for k in ("ddp", "ddp8", "zero3")]
    for m in modes:
        m.fits = m.available and m.total <= gpu_bytes
    key, why = choose(modes, world, gpu_bytes)
    notes = [] if key is not None else _suggestions(shape, w, gpus, nodes, gpu_bytes, overrides)
    if not splits_evenly(w.batch, world):
        key = None
        why = (f"the recipe's global batch (optim.batch_size={w.batch}) does not split evenly over "
               f"{world} processes; launch {_divisor_text(w.batch, world)}")
    if nodes > 1:
        notes.insert(0, f"run the line on every node with MACHINE_RANK=0..{nodes - 1} and MAIN_IP an "
                     "address of node 0 that every node reaches")
    name = cfg.backbone.name_or_path or "backbone.config"
    step = step_for(shape, w, world, w.dtype_bytes, w.checkpointing)
    return Plan(
        recipe=str(cfg.recipe), gpus=gpus, nodes=nodes, gpu_memory_gib=gpu_memory_gib,
        backbone=str(name), config_source=source, parameters=shape.parameters(),
        workload={
            "stage": w.stage_desc, "task": w.task, "global_batch": w.batch,
            "batch_per_gpu": step.batch, "grad_accum": w.grad_accum, "prompt_length": w.prompt_len,
            "source_tokens": w.source_len, "target_tokens": w.target_len, "dtype": w.dtype,
            "gradient_checkpointing": w.checkpointing, "answer_only_logits": w.answer_only_logits,
            "eval_batch_per_gpu": w.eval_batch, "eval_new_tokens": w.new_tokens,
            "prompt_trainable": w.prompt.trainable, "family": shape.family,
        },
        modes=modes, recommended=key, why=why, launch_notes=notes, asked_gpus=gpus, asked_nodes=nodes,
    )


def splits_evenly(batch: int, world: int) -> bool:
    """The launches the planner recommends: every process gets the same share
    of the recipe's global batch (the trainer itself needs world <= batch)."""
    return world <= batch and batch % world == 0


def _divisor_text(batch: int, world: int) -> str:
    counts = [n for n in range(1, min(batch, world) + 1) if batch % n == 0]
    return f"{', '.join(map(str, counts))} process(es) (counts that divide {batch})"


def launchable_layouts(batch: int, gpus: int, nodes: int) -> list[tuple[int, int]]:
    """(GPUs per node, nodes), fewest processes first, on which the recipe's
    global batch splits evenly: within one node while it holds them, whole
    nodes beyond."""
    out = []
    for world in range(1, gpus * nodes + 1):
        if not splits_evenly(batch, world):
            continue
        if world <= gpus:
            out.append((world, 1))
        elif world % gpus == 0:
            out.append((gpus, world // gpus))
    return out


def plan_launch(
    recipe: str, gpus: int, gpu_memory_gib: float, nodes: int = 1, overrides: list[str] | None = None,
    config: dict[str, Any] | None = None,
) -> Plan:
    """The launch to use on ``nodes`` x ``gpus`` GPUs: the fewest processes
    (dividing the recipe's global batch, so the trainer runs it unchanged) on
    which a mode that keeps the backbone's numerics fits (DDP, ZeRO-3); only
    when none does, the fewest on which DDP 8-bit fits. More GPUs than that
    would only split the batch: one run uses the fewer, a grid packs the rest."""
    asked = make_plan(recipe, gpus, gpu_memory_gib, nodes, overrides, config=config)
    batch = int(asked.workload["global_batch"])
    plans = [make_plan(recipe, g, gpu_memory_gib, n, overrides, config=config)
             for g, n in launchable_layouts(batch, gpus, nodes)]
    chosen = next((p for p in plans if p.recommended in ("ddp", "zero3")), None)
    chosen = chosen or next((p for p in plans if p.recommended is not None), None)
    if chosen is None:
        chosen = plans[-1] if plans and not splits_evenly(batch, asked.world) else asked
    chosen.asked_gpus, chosen.asked_nodes = gpus, nodes
    notes = []
    if chosen.recommended is not None and chosen.world < asked.world:
        if chosen.world == 1 and chosen.recommended == "ddp":
            notes.append(
                f"one replica fits one GPU: use one GPU per run. More processes would only split the "
                f"global batch of {batch}; python -m dtvg_dist.reproduce (--gpus-per-run auto) packs "
                f"the other {asked.world - 1} GPU(s) with other runs of the grid")
        else:
            notes.append(
                f"{chosen.world} of the {asked.world} GPUs are enough for this run; more would only "
                f"split the global batch of {batch}; a grid (python -m dtvg_dist.reproduce) packs the rest")
    if not splits_evenly(batch, asked.world):
        most = max((g * n for g, n in launchable_layouts(batch, gpus, nodes)), default=1)
        raised = asked.world * max(1, math.ceil(batch / asked.world))
        notes.append(
            f"the recipe's global batch (optim.batch_size={batch}) splits evenly over at "
            f"most {most} of the {asked.world} GPUs. With optim.batch_size={raised} all {asked.world} "
            f"would train, {raised // asked.world} example(s) each, but that is another recipe: "
            f"{raised / batch:g}x the examples per step, so fewer steps per epoch and other "
            "learning-rate dynamics than the recipe was set for (re-tune optim.lr, and compare "
            "against a run at the recipe's batch)")
    chosen.launch_notes = notes + chosen.launch_notes
    return chosen


def launch_check(plan: Plan, overrides: list[str] | None = None) -> None:
    """Run the trainer's own launch checks on the plan's recommended launch
    (no weights load): the recipe with the launch's overrides at its
    process count and mode."""
    if plan.recommended is None:
        raise PlanError(f"no recommended launch: {plan.why}")
    mode = plan.mode(plan.recommended)
    cfg = load_recipe(plan.recipe, [*(overrides or []), *_mode_overrides_of(mode.launch)])
    check_launch(int(cfg.optim.batch_size), plan.world, zero3=mode.key == "zero3",
                 load_in_8bit=bool(cfg.backbone.load_in_8bit))


def _mode_overrides_of(line: str) -> list[str]:
    tokens = line.split()
    cut = tokens.index("-m")
    return [t for t in tokens[cut + 3:] if "=" in t]


def recommend(
    recipe: str, gpu_memory_gib: float, max_gpus: int, overrides: list[str] | None = None,
    config: dict[str, Any] | None = None,
) -> Plan:
    """The plan a grid gives a run: :func:`plan_launch` on one node of
    ``max_gpus`` GPUs (the fewest GPUs that help, dividing the batch)."""
    return plan_launch(recipe, max_gpus, gpu_memory_gib, 1, overrides, config=config)


# -------------------------------------------------------------------- output
def render(plan: Plan) -> str:
    w = plan.workload
    if w["family"] == "causal":
        length = f"{w['prompt_length']} + {w['source_tokens']} + {w['target_tokens']} tokens"
    else:
        length = (f"encoder {w['prompt_length']} + {w['source_tokens']}, decoder "
                  f"{w['target_tokens']} tokens")
    logits = "answer tokens only" if w["answer_only_logits"] else "every position"
    lines = [
        f"plan: recipe {plan.recipe} on {plan.nodes} node(s) x {plan.gpus} GPU(s) "
        f"({plan.world} process(es)), {plan.gpu_memory_gib:g} GiB each",
        f"backbone: {plan.backbone}, {plan.parameters / 1e9:.3f} B parameters "
        f"(config: {plan.config_source})",
        f"step: {w['stage']}, longest task {w['task']}: global batch {w['global_batch']} -> "
        f"{w['batch_per_gpu']} per GPU (x{w['grad_accum']} accumulation), {length}, "
        f"{w['dtype']}, gradient checkpointing {'on' if w['gradient_checkpointing'] else 'off'}, "
        f"logits at {logits}",
        f"evaluation: {w['eval_batch_per_gpu']} examples per GPU, {w['eval_new_tokens']} new tokens",
        "",
    ]
    if plan.asked_gpus and (plan.asked_gpus, plan.asked_nodes) != (plan.gpus, plan.nodes):
        lines.insert(1, f"(asked: {plan.asked_nodes} node(s) x {plan.asked_gpus} GPU(s); the "
                        "recommended launch uses fewer, see the notes)")
    header = ["per GPU (GiB)", *[m.name for m in plan.modes]]
    rows = [
        ("weights", lambda m: _gib(m.weights)),
        ("gathered for compute", lambda m: _gib(m.gathered) if m.key == "zero3" else "-"),
        ("activations, train step", lambda m: _gib(m.activations)),
        ("  of which logits + loss", lambda m: _gib(m.logits)),
        ("evaluation (generation)", lambda m: _gib(m.evaluation)),
        ("prompt + optimizer", lambda m: _gib(m.prompt)),
        ("CUDA context (assumed)", lambda m: _gib(m.reserve)),
        ("peak", lambda m: _gib(m.total)),
        (f"fits in {plan.gpu_memory_gib:g} GiB", lambda m: ("yes" if m.fits else "no") if m.available else "n/a"),
        ("sent per GPU per step", lambda m: _fmt_bytes(m.sends)),
    ]
    table = [header] + [[label, *[fn(m) for m in plan.modes]] for label, fn in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for r in table:
        lines.append("  ".join([r[0].ljust(widths[0])] + [c.rjust(widths[i]) for i, c in enumerate(r) if i]))
    lines.append("(peak = weights + gathered + prompt + context + the larger of training and evaluation)")
    if plan.world > 1:
        lines.append("sent: DDP: " + plan.mode("ddp").sends_detail)
        lines.append("      ZeRO-3: " + plan.mode("zero3").sends_detail)
    for m in plan.modes:
        if not m.available:
            lines.append(f"{m.name}: not available: {m.reason}")
    lines.append("")
    if plan.recommended is None:
        lines.append(f"recommended: none. {plan.why}.")
    else:
        m = plan.mode(plan.recommended)
        lines.append(f"recommended: {m.name}. Why: {plan.why}.")
        lines.append(f"  {m.launch}")
    lines += [f"note: {n}" for n in plan.launch_notes]
    return "\n".join(lines)


def _parse(args: list[str]) -> tuple[str, int, float, int, bool, list[str]]:
    recipe, values, flags, rest = cli.split_recipe_args(
        args, ("--gpus", "--gpu-memory", "--nodes"), flags=("--json",), error=PlanError)
    as_json = "--json" in flags
    for required in ("--gpus", "--gpu-memory"):
        if required not in values:
            raise PlanError(f"{required} is required (e.g. --gpus 8 --gpu-memory 80)")

    def number(name: str, kind: type) -> Any:
        try:
            return kind(values[name])
        except ValueError:
            raise PlanError(f"{name}={values[name]!r} is not a {'whole ' if kind is int else ''}number") from None

    nodes = number("--nodes", int) if "--nodes" in values else 1
    return recipe, number("--gpus", int), number("--gpu-memory", float), nodes, as_json, rest


@cli.command
def main(argv: Iterable[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or "-h" in args or "--help" in args:
        print(USAGE + "\nrecipes: " + ", ".join(list_recipes()))
        return 0
    recipe, gpus, memory, nodes, as_json, overrides = _parse(args)
    plan = plan_launch(recipe, gpus, memory, nodes, overrides)
    print(json.dumps(plan.to_json(), indent=2) if as_json else render(plan))
    return 0


if __name__ == "__main__":
    sys.exit(main())
