"""MPT's tensor math (Wang et al., 2023, "Multitask Prompt Tuning Enables
Parameter-Efficient Transfer Learning", Section 3).

Prompt decomposition (their Eq. 2): the prompt of task k is the shared prompt
times a rank-one task matrix, ``P_k = P* o (u_k v_k^T)`` with ``P*`` [r, d],
``u_k`` [r], ``v_k`` [d] (``o`` the Hadamard product). PEFT's
``MultitaskPromptEmbedding.forward`` computes the same product with rank 1
(``prefix_task_cols`` [K, r, 1] @ ``prefix_task_rows`` [K, 1, d]).

Prompt distillation (their Eqs. 3-5): the student of source k (prompt P_k)
matches the teacher of source k (its own prompt-tuned prompt) through the KL
divergence of the temperature-softened output distributions, KL(teacher ||
student), and the squared error of the hidden states; the total is
``L_PLM + lambda * (L_Logits + L_Hidden)``.

Reductions: the functions here return *sums* with their counts left to the
caller, and :func:`distillation_loss` divides each term by its own count (its
Eq. 5 with each loss a mean): the cross-entropy and the KL over the answer
tokens (KL summed over the vocabulary per token), the hidden squared error
over the compared positions of each hidden-state pair (averaged over the d
features per position, so that its scale does not grow with the model
width). Dividing the hidden sum by the answer-token count instead weighted it
by (encoder positions / answer tokens), 30-150x on classification tasks, a
hidden multiplier on lambda. The paper writes each loss as a sum over
examples and fixes no normaliser (arXiv 2303.02861, section 3; its text was
not readable here, so this reading is unverified). No T^2 factor is applied
to the KL term.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def mpt_prompt(shared: Tensor, u: Tensor, v: Tensor) -> Tensor:
    """``shared * outer(u, v)``: [r, d] from [r, d], [r], [d]; with u [K, r] and
    v [K, d] the K task prompts [K, r, d]."""
    if shared.dim() != 2 or u.shape[-1] != shared.shape[0] or v.shape[-1] != shared.shape[1]:
        raise ValueError(
            f"MPT shapes disagree: shared {tuple(shared.shape)} needs u [..., {shared.shape[0]}] "
            f"and v [..., {shared.shape[-1]}], got u {tuple(u.shape)}, v {tuple(v.shape)}"
        )
    if u.shape[:-1] != v.shape[:-1]:
        raise ValueError(f"u {tuple(u.shape)} and v {tuple(v.shape)} name different task counts")
    return shared * (u.unsqueeze(-1) * v.unsqueeze(-2))


def kl_distillation_sum(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """Sum over rows of KL(softmax(t / T) || softmax(s / T)), logits [N, V]
    (their Eq. 3 with the temperature of Eq. 4). The teacher side carries no
    gradient. Half precision is upcast to float32 first."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} must have one shape"
        )
    if not temperature > 0:
        raise ValueError(f"distillation temperature must be > 0, got {temperature}")
    dtype = torch.promote_types(student_logits.dtype, torch.float32)
    log_s = F.log_softmax(student_logits.to(dtype) / temperature, dim=-1)
    log_t = F.log_softmax(teacher_logits.detach().to(dtype) / temperature, dim=-1)
    return F.kl_div(log_s, log_t, log_target=True, reduction="sum")


def hidden_distillation_sum(student: Tensor, teacher: Tensor, mask: Tensor) -> Tensor:
    """Sum over the positions where ``mask`` is true of the mean over features
    of (student - teacher)^2 (their Eq. 5); hidden states [..., d], mask [...]."""
    if student.shape != teacher.shape or student.shape[:-1] != mask.shape:
        raise ValueError(
            f"hidden states {tuple(student.shape)} / {tuple(teacher.shape)} and mask "
            f"{tuple(mask.shape)} disagree"
        )
    dtype = torch.promote_types(student.dtype, torch.float32)
    diff = student.to(dtype) - teacher.detach().to(dtype)
    return (diff.pow(2).mean(dim=-1) * mask.to(dtype)).sum()


def distillation_loss(
    plm_sum: Tensor, kl_sum: Tensor, tokens: Tensor,
    hidden: list[tuple[Tensor, Tensor]], lam: float,
) -> Tensor:
    """``L_PLM + lam * (L_Logits + L_Hidden)`` (their Eq. 5), each term the
    mean over its own count: ``plm_sum`` and ``kl_sum`` over ``tokens`` answer
    tokens, each ``(sum, positions)`` of ``hidden`` over its positions (T5:
    encoder and decoder states, each its own mean, summed). A zero count
    contributes zero."""
    def mean(total: Tensor, count: Tensor) -> Tensor:
        return total / count.clamp(min=1)

    l_hidden = sum((mean(h, c) for h, c in hidden), torch.zeros_like(plm_sum))
    return mean(plm_sum, tokens) + lam * (mean(kl_sum, tokens) + l_hidden)
