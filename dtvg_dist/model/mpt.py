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

from typing import Any

import torch
from torch import Tensor, nn

from dtvg_dist.core.mpt import hidden_distillation_sum, kl_distillation_sum, mpt_prompt
from dtvg_dist.model.prompt import IGNORE_INDEX, AnswerOutput, PromptedModel, _check_state


class MPTPrompt(nn.Module):
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

    def forward(self) -> Tensor:
        return mpt_prompt(self.shared, self.u, self.v)

    def param_groups(
        self, lr: float, source_lr: float | None = None, weight_decay: float = 0.0
    ) -> list[dict[str, Any]]:
        """One group (the paper trains the target prompt at one rate)."""
        return [{"name": "prompt", "params": [self.shared, self.u, self.v], "lr": lr,
                 "weight_decay": weight_decay}]

    def trainable_state(self) -> dict[str, Tensor]:
        return {k: getattr(self, k).detach().float().clone() for k in ("shared", "u", "v")}

    @torch.no_grad()
    def load_trainable_state(self, state: dict[str, Tensor]) -> None:
        own = {k: getattr(self, k) for k in ("shared", "u", "v")}
        _check_state(self, state, own)
        for k, t in own.items():
            t.copy_(state[k])


class MPTSourcePrompts(nn.Module):
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

    def forward(self, task_ids: Tensor | None = None) -> Tensor:
        if task_ids is None:
            return self.shared
        return mpt_prompt(self.shared, self.u.index_select(0, task_ids), self.v.index_select(0, task_ids))

    def param_groups(
        self, lr: float, source_lr: float | None = None, weight_decay: float = 0.0
    ) -> list[dict[str, Any]]:
        return [{"name": "prompt", "params": [self.shared, self.u, self.v], "lr": lr,
                 "weight_decay": weight_decay}]

    def trainable_state(self) -> dict[str, Tensor]:
        return {k: getattr(self, k).detach().float().clone() for k in ("shared", "u", "v")}

    @torch.no_grad()
    def load_trainable_state(self, state: dict[str, Tensor]) -> None:
        own = {k: getattr(self, k) for k in ("shared", "u", "v")}
        _check_state(self, state, own)
        for k, t in own.items():
            t.copy_(state[k])


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
    ``forward`` returns an :class:`AnswerOutput` whose loss is the *token mean*
    of the total over this batch's answer tokens: cross-entropy and KL summed
    per answer token, the hidden term summed per compared position, all
    divided by the number of answer tokens, so the trainer's token weighting
    keeps the loss independent of how the batch is split over ranks.
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
        with torch.no_grad():
            t = self.student.answer_logits(
                input_ids, attention_mask, labels, prompt=self.teacher_prompts(task_ids),
                return_hidden=True,
            )
        assert s.logits is not None and t.logits is not None and s.loss is not None
        n = s.targets.numel() if s.targets is not None else 0
        ext_mask = s.mask_ext
        assert ext_mask is not None
        hidden = sum(
            hidden_distillation_sum(hs, ht, m)
            for (hs, m), (ht, _) in zip(
                _hidden_pairs(self.family, s, ext_mask), _hidden_pairs(self.family, t, ext_mask),
                strict=True,
            )
        )
        return {
            "plm": s.loss * n,
            "logits": kl_distillation_sum(s.logits, t.logits, self.temperature),
            "hidden": hidden,
            "tokens": torch.tensor(float(n), dtype=s.loss.dtype, device=s.logits.device),
        }

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, labels: Tensor, task_ids: Tensor
    ) -> AnswerOutput:
        parts = self.losses(input_ids, attention_mask, labels, task_ids)
        total = (parts["plm"] + self.lam * (parts["logits"] + parts["hidden"])) / parts["tokens"]
        return AnswerOutput(loss=total)
