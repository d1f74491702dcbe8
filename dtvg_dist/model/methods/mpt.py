"""MPT's prompt modules and its distillation model (Wang et al., 2023,
"Multitask Prompt Tuning Enables Parameter-Efficient Transfer Learning").

Source training: one shared prompt P* and a rank-one task part (u_k, v_k) per
source, ``P_k = P* o (u_k v_k^T)`` (:class:`MPTSourcePrompts`), trained on the
mixture of the sources with the task loss plus the distillation from each
source's teacher prompt (:class:`MPTDistillModel`; the teachers are the
bank's stage-1 prompts). Target adaptation: the learned P* with a new rank-one
part, P* and (u, v) all trained (:class:`MPTPrompt`): r*d + r + d parameters,
77,668 for T5-base with r = 100 (the paper's Table 2 and DTVG's Table 2 print
77.6K).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import Tensor, nn

from dtvg_dist.core.mpt import (
    distillation_loss,
    hidden_row_means,
    kl_distillation_sum,
    mpt_prompt,
)
from dtvg_dist.costs import PromptState
from dtvg_dist.model.methods.base import BuildContext, Built, Method, PreStageContext
from dtvg_dist.model.prompt import (
    IGNORE_INDEX,
    AnswerOutput,
    PromptedModel,
    PromptModule,
    full_shape,
)
from dtvg_dist.store.bank import (
    BankError,
    load_bank,
    load_mpt_shared,
    mpt_shared_key,
    mpt_shared_path,
    save_mpt_shared,
    tensor_sha256,
)

log = logging.getLogger("dtvg_dist.model.methods")


@dataclass
class MptSettings:
    """Recipe keys ``mpt.*`` (source training; target adaptation uses optim.*).

    ``lam`` and ``temperature`` are the lambda of the paper's Eq. 5 and the T
    of its Eq. 4. The paper's chosen values could not be read from the
    sources available when this was written (its text was not in the stored
    copies; PEFT implements no distillation, huggingface/peft#1124), so the
    defaults are the neutral 1.0 / 1.0 and recipes set them explicitly."""

    lam: float = 1.0
    temperature: float = 1.0
    source_max_steps: int | None = None  # default: stage1.source_max_steps, else optim.max_steps
    source_lr: float | None = None  # default: optim.lr
    overwrite: bool = False  # retrain the shared prompt even if the bank has it


class MPTPrompt(PromptModule):
    """Target adaptation: ``P* o (u v^T)`` with P*, u and v trainable.

    Initialised from source training's shared prompt and the mean of the
    source task vectors (u and v averaged separately, as PEFT's
    ``MultitaskPromptTuningInit.AVERAGE_SOURCE_TASKS`` does in
    peft/tuners/multitask_prompt_tuning/model.py)."""

    def __init__(self, shared: Tensor, u: Tensor, v: Tensor) -> None:
        super().__init__()
        if shared.dim() != 2 or tuple(u.shape) != (shared.shape[0],) or tuple(v.shape) != (shared.shape[1],):
            raise ValueError(
                f"MPTPrompt needs shared [r, d], u [r], v [d]; got {tuple(shared.shape)}, "
                f"{tuple(u.shape)}, {tuple(v.shape)}"
            )
        f32 = torch.float32
        self.shared = nn.Parameter(shared.detach().to(f32).clone())
        self.u = nn.Parameter(u.detach().to(f32).clone())
        self.v = nn.Parameter(v.detach().to(f32).clone())

    @property
    def prompt_rows(self) -> int:
        return int(full_shape(self.u)[0])  # read outside forward: ZeRO-3 may hold it partitioned

    def forward(self, inputs_embeds: Tensor | None = None, attention_mask: Tensor | None = None) -> Tensor:
        """P* o (u v^T) [r, d]; the inputs are not needed."""
        return mpt_prompt(self.shared, self.u, self.v)



class MPTSourcePrompts(PromptModule):
    """Source training's students: P* [r, d] shared, u [K, r] and v [K, d] per source.

    ``forward(task_ids)`` returns one prompt per batch row [B, r, d];
    ``forward()`` (no ids) returns the shared prompt itself, which is what
    source training hands to the targets. Init: P* = the bank's P_init and
    u = v = 1, so every student starts where its teacher started (the paper
    initialises the students randomly; PEFT draws u, v from N(0, 0.02^2),
    which starts every prompt near zero)."""

    def __init__(self, shared: Tensor, num_tasks: int, names: list[str] | None = None) -> None:
        super().__init__()
        if shared.dim() != 2 or num_tasks < 1:
            raise ValueError(f"MPTSourcePrompts needs shared [r, d] and >= 1 task, got "
                             f"{tuple(shared.shape)}, {num_tasks}")
        r, d = shared.shape
        f32, dev = torch.float32, shared.device
        self.shared = nn.Parameter(shared.detach().to(f32).clone())
        self.u = nn.Parameter(torch.ones(num_tasks, r, dtype=f32, device=dev))
        self.v = nn.Parameter(torch.ones(num_tasks, d, dtype=f32, device=dev))
        self.source_names = list(names or [f"task{i}" for i in range(num_tasks)])
        if len(self.source_names) != num_tasks:
            raise ValueError(f"{len(self.source_names)} names for {num_tasks} source tasks")

    @property
    def prompt_rows(self) -> int:
        return int(full_shape(self.shared)[0])  # see MPTPrompt.prompt_rows

    def forward(
        self, inputs_embeds: Tensor | None = None, attention_mask: Tensor | None = None,
        task_ids: Tensor | None = None,
    ) -> Tensor:
        if task_ids is None:  # a copy: under ZeRO-3 the parameter's storage is released after forward
            return self.shared.clone()
        return mpt_prompt(self.shared, self.u.index_select(0, task_ids), self.v.index_select(0, task_ids))



class TeacherPrompts(nn.Module):
    """The frozen per-source teacher prompts [K, r, d] (buffers, no parameters)."""

    def __init__(self, prompts: Tensor) -> None:
        super().__init__()
        if prompts.dim() != 3:
            raise ValueError(f"teacher prompts must be [K, r, d], got {tuple(prompts.shape)}")
        self.register_buffer("prompts", prompts.detach().to(torch.float32).clone())

    def forward(self, task_ids: Tensor) -> Tensor:
        return self.prompts.index_select(0, task_ids)


def _hidden_pairs(family: str, out: AnswerOutput, mask: Tensor) -> list[tuple[Tensor, Tensor]]:
    """(last hidden states, positions to compare) of one forward: T5's encoder
    output over prompt + input and its decoder output at the answer tokens
    (the paper distils both for T5); a causal model's last layer over prompt +
    input + answer."""
    hs = out.hidden
    assert hs is not None
    if family == "seq2seq":
        enc, dec = hs
        return [(enc, mask.bool()), (dec, out.labels_ext != IGNORE_INDEX)]
    return [(hs[0], mask.bool())]


class MPTDistillModel(nn.Module):
    """Source training's loss: ``L_PLM + lam * (L_Logits + L_Hidden)`` (paper Eq. 5).

    The student and the teacher are the same frozen backbone with the student
    prompts (trained) or the teacher prompts (frozen) of each row's task.
    ``forward`` returns an :class:`AnswerOutput` whose loss is
    :func:`~dtvg_dist.core.mpt.distillation_loss`: each term normalised by its
    own count (answer tokens for the cross-entropy and the KL; per example,
    its compared positions for each hidden-state pair, the examples then
    weighted by their answer tokens), a token mean, so the trainer's token
    weighting keeps the loss independent of how the batch is split.

    The teacher forward runs without dropout (the backbone in eval mode for
    that call, its train/eval flags restored after): a distillation target is
    the teacher's deterministic output, the same for two calls on one batch.
    """

    def __init__(
        self, backbone: Any, students: MPTSourcePrompts, teachers: TeacherPrompts,
        lam: float, temperature: float, answer_only_logits: bool = True,
    ) -> None:
        super().__init__()
        if teachers.prompts.shape[0] != students.u.shape[0]:
            raise ValueError(f"{teachers.prompts.shape[0]} teachers for {students.u.shape[0]} students")
        self.student = PromptedModel(backbone, students, answer_only_logits)
        self.teacher_prompts = teachers
        self.family = backbone.family
        self.lam = float(lam)
        self.temperature = float(temperature)

    @property
    def prompt(self) -> MPTSourcePrompts:
        return self.student.prompt  # type: ignore[return-value]

    def losses(
        self, input_ids: Tensor, attention_mask: Tensor, labels: Tensor, task_ids: Tensor
    ) -> dict[str, Tensor]:
        """The summed terms and the answer-token count of one batch."""
        s = self.student.answer_logits(
            input_ids, attention_mask, labels, task_ids=task_ids, return_hidden=True
        )
        t = self.teacher(input_ids, attention_mask, labels, task_ids)
        assert s.logits is not None and t.logits is not None and s.loss is not None
        n = s.targets.numel() if s.targets is not None else 0
        ext_mask = s.mask_ext
        assert ext_mask is not None and s.labels_ext is not None
        hidden = [
            hidden_row_means(hs, ht, m)
            for (hs, m), (ht, _) in zip(
                _hidden_pairs(self.family, s, ext_mask), _hidden_pairs(self.family, t, ext_mask),
                strict=True,
            )
        ]
        row_tokens = (s.labels_ext != IGNORE_INDEX).sum(dim=1)
        return {
            "plm": s.loss * n,
            "logits": kl_distillation_sum(s.logits, t.logits, self.temperature),
            "hidden": hidden,  # per hidden-state pair: each row's mean over its positions [B]
            "row_tokens": row_tokens,
        }

    @torch.no_grad()
    def teacher(
        self, input_ids: Tensor, attention_mask: Tensor, labels: Tensor, task_ids: Tensor
    ) -> AnswerOutput:
        """The teachers' forward: each row with its task's frozen prompt, no
        gradient and no dropout."""
        modes = [(m, m.training) for m in self.student.modules()]
        self.student.eval()
        try:
            return self.student.answer_logits(
                input_ids, attention_mask, labels, prompt=self.teacher_prompts(task_ids),
                return_hidden=True,
            )
        finally:
            for module, mode in modes:
                module.training = mode

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, labels: Tensor, task_ids: Tensor
    ) -> AnswerOutput:
        p = self.losses(input_ids, attention_mask, labels, task_ids)
        return AnswerOutput(loss=distillation_loss(p["plm"], p["logits"], p["row_tokens"], p["hidden"], self.lam))


# ------------------------------------------------------------------ the method


def source_settings(cfg: Any) -> dict[str, Any]:
    """What changes source training's result, besides the sources (the
    entry's key and its metadata)."""
    node = cfg.mpt
    return {
        "lam": float(node.lam), "temperature": float(node.temperature),
        "steps": int(node.source_max_steps or cfg.stage1.source_max_steps or cfg.optim.max_steps),
        "lr": float(node.source_lr or cfg.optim.lr), "batch_size": int(cfg.optim.batch_size),
        "grad_accum": int(cfg.optim.grad_accum), "seed": int(cfg.seed), "r": int(cfg.prompt.length),
        "init_seed": int(cfg.prompt.init_seed), "template": str(cfg.data.template),
    }


@dataclass(frozen=True)
class MptRun:
    """MPT's typed settings for one run (:meth:`MPT.settings`): the recipe's
    ``mpt.*`` keys and what changes source training's result."""

    node: MptSettings
    source: dict[str, Any]  # source_settings(cfg): the shared prompt's key and metadata
    sources: tuple[str, ...]

    def shared_path(self, bank_dir: Path) -> Path:
        """Where source training of these sources with these settings is stored."""
        return mpt_shared_path(bank_dir, mpt_shared_key(list(self.sources), self.source))


def shared_entry_path(cfg: Any, bank_dir: Path) -> Path:
    """Where source training of ``cfg.source_tasks`` with these settings is stored."""
    return mpt_shared_path(bank_dir, mpt_shared_key(list(cfg.source_tasks), source_settings(cfg)))


class MPT(Method):
    name = "mpt"
    title = "MPT"
    source = ('Wang et al., 2023, "Multitask Prompt Tuning Enables Parameter-Efficient Transfer '
              'Learning" (ICLR); prompt parameterisation as PEFT\'s tuners/multitask_prompt_tuning')
    peft_adapter = "MULTITASK_PROMPT_TUNING"

    def settings(self, cfg: Any) -> MptRun:
        return MptRun(OmegaConf.to_object(cfg.mpt) if OmegaConf.is_config(cfg.mpt) else cfg.mpt,
                      source_settings(cfg), tuple(str(t) for t in cfg.source_tasks))

    def pre_stage(self, ctx: PreStageContext) -> dict[str, Any]:
        """Source training, once per (sources, settings): the shared prompt is
        read from the bank when there, else trained from the sources'
        stage-1 prompts (the teachers) and written there."""
        run: MptRun = ctx.settings
        path = run.shared_path(ctx.bank_dir)
        if path.is_file() and not run.node.overwrite:
            log.info("MPT: shared prompt from %s", path)
            return {"mpt_shared": str(path)}
        sources = list(run.sources)
        entries = load_bank(
            ctx.bank_dir, sources, backbone=ctx.backbone.name,
            d=ctx.backbone.hidden_size, r=ctx.run.prompt_length,
        )
        dev = ctx.device
        first = entries[sources[0]]
        students = MPTSourcePrompts(first.p_init.to(dev), len(sources), sources)
        teachers = TeacherPrompts(torch.stack([entries[t].prompt for t in sources]).to(dev))
        settings = run.source

        def factory(backbone: Any, prompt: nn.Module, answer_only: bool) -> nn.Module:
            return MPTDistillModel(backbone, prompt, teachers, settings["lam"],  # type: ignore[arg-type]
                                   settings["temperature"], answer_only)

        log.info("MPT: source training over %s (lambda %s, T %s, %d steps) -> %s", ", ".join(sources),
                 settings["lam"], settings["temperature"], settings["steps"], path)
        result = ctx.train_mixture(
            name="mpt-source", prompt=students, tasks=sources, model_factory=factory,
            max_steps=settings["steps"], lr=settings["lr"],
            extra_results={"stage": "mpt-source", "mpt_settings": settings, "source_tasks": sources},
        )
        if ctx.is_main:
            state = result.best_state
            save_mpt_shared(
                path, state["shared"], state["u"], state["v"], sources=sources,
                backbone=ctx.backbone.name, p_init_sha256=first.p_init_sha256,
                teacher_sha256={t: tensor_sha256(entries[t].prompt) for t in sources},
                settings=settings, steps=result.steps,
            )
            log.info("MPT: shared prompt -> %s", path)
        ctx.barrier()
        return {"mpt_shared": str(path)}

    def pre_stage_output(self, cfg: Any, bank_dir: Any) -> Path:
        return shared_entry_path(cfg, Path(bank_dir))

    def build(self, ctx: BuildContext) -> Built:
        """Target adaptation: P* from source training, u and v the mean of the
        source task vectors (PEFT's AVERAGE_SOURCE_TASKS init)."""
        run: MptRun = ctx.settings
        if ctx.bank_dir is None:
            raise BankError("MPT: no bank_dir to read the shared prompt from")
        entry = load_mpt_shared(run.shared_path(ctx.bank_dir))
        want = {"sources": list(run.sources), "backbone": ctx.backbone.name,
                "r": ctx.run.prompt_length, "d": int(ctx.backbone.hidden_size)}
        have = {"sources": entry.sources, "backbone": entry.backbone,
                "r": int(entry.shared.shape[0]), "d": int(entry.shared.shape[1])}
        for key, value in want.items():
            if have[key] != value:
                raise BankError(f"MPT shared prompt {entry.path}: {key} is {have[key]!r} but this run uses {value!r}")
        dev = ctx.device
        module = MPTPrompt(entry.shared.to(dev), entry.u.mean(0).to(dev), entry.v.mean(0).to(dev))
        return Built(module, {"mpt_shared": str(entry.path), "mpt_source_steps": entry.steps,
                              "source_tasks": entry.sources, "mpt_settings": entry.settings})

    def learning_rates(self, cfg: Any) -> tuple[float, float]:
        return float(cfg.optim.lr), float(cfg.optim.lr)

    def prompt_state(self, cfg: Any, r: int, d: int, n_sources: int) -> PromptState:
        return PromptState(r * d + r + d, 0, r * d)

    def pre_stage_state(self, cfg: Any, r: int, d: int, n_sources: int) -> PromptState:
        """Source training: P* and the n (u, v) pairs trained, the n teacher
        prompts frozen (the teacher's forward runs without gradients)."""
        return PromptState(r * d + n_sources * (r + d), n_sources * r * d, r * d)

    def rebuild(self, tensors: dict[str, Tensor], cfg: Any) -> nn.Module:
        return MPTPrompt(tensors["shared"], tensors["u"], tensors["v"])

    def describe(self, cfg: Any) -> str:
        s = source_settings(cfg)
        return (f"MPT: lambda {s['lam']:g}, T {s['temperature']:g} (both unverified: the paper's "
                f"values were not readable here), source training {s['steps']} steps at lr {s['lr']:g}")

    def check(self, cfg: Any) -> str | None:
        node = cfg.get("mpt")
        if node is None:
            return None
        if not float(node.temperature) > 0:
            return f"mpt.temperature={node.temperature!r} must be > 0"
        if float(node.lam) < 0:
            return f"mpt.lam={node.lam!r} must be >= 0"
        for key in ("source_max_steps", "source_lr"):
            value = node.get(key)
            if value is not None and not value > 0:
                return f"mpt.{key}={value!r} must be > 0"
        return None

