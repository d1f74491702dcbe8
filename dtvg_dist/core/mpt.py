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

Reductions: each term is normalised by its own count. The cross-entropy
and the KL (summed over the vocabulary) are means over the answer tokens;
the hidden squared error (averaged over the d features, so that its scale
does not grow with the model width) is, per example, the mean over that
example's compared positions of each hidden-state pair (:func:`hidden_row_means`),
and the examples' means are weighted by their answer tokens like every other
term (:func:`distillation_loss`). That weighting makes every term a sum over
answer tokens divided by one global count, so the trainer's token weighting
keeps 2 processes (and gradient accumulation) equal to 1. Until this change
the hidden sum over every encoder position was divided by the answer-token
count, which weighted it 30-150x against the cross-entropy on classification
tasks, a hidden multiplier on lambda. The paper writes each loss as a sum
over examples and fixes no normaliser (arXiv 2303.02861, section 3; its text
was not readable here, so this reading is unverified). No T^2 factor is
applied to the KL term.
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


def hidden_row_means(student: Tensor, teacher: Tensor, mask: Tensor) -> Tensor:
    """Per row b: the mean over the positions where ``mask[b]`` is true of the
    mean over features of (student - teacher)^2 [B]; hidden states [B, S, d],
    mask [B, S]; a row without positions gives 0."""
    if student.dim() != 3 or student.shape != teacher.shape or student.shape[:-1] != mask.shape:
        raise ValueError(
            f"hidden states {tuple(student.shape)} / {tuple(teacher.shape)} and mask "
            f"{tuple(mask.shape)} disagree (want [B, S, d] and [B, S])"
        )
    dtype = torch.promote_types(student.dtype, torch.float32)
    diff = student.to(dtype) - teacher.detach().to(dtype)
    m = mask.to(dtype)
    return (diff.pow(2).mean(dim=-1) * m).sum(dim=1) / m.sum(dim=1).clamp(min=1)


def distillation_loss(
    plm_sum: Tensor, kl_sum: Tensor, row_tokens: Tensor, hidden: list[Tensor], lam: float,
) -> Tensor:
    """``L_PLM + lam * (L_Logits + L_Hidden)`` (their Eq. 5) as a mean over the
    answer tokens: ``plm_sum`` and ``kl_sum`` are sums over them; each
    ``hidden`` entry is :func:`hidden_row_means` of one hidden-state pair [B]
    (T5: encoder and decoder), weighted by the row's answer tokens
    ``row_tokens`` [B]. Returned: (plm + lam (kl + sum_pairs sum_b n_b h_b)) / sum_b n_b."""
    tokens = row_tokens.to(plm_sum.dtype)
    l_hidden = sum(((h * tokens).sum() for h in hidden), torch.zeros_like(plm_sum))
    return (plm_sum + lam * (kl_sum + l_hidden)) / tokens.sum().clamp(min=1)
