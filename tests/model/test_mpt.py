"""MPT against a float64 reference written plainly from the paper (Wang et al.,
2023, Section 3: Eqs. 2-5) and against PEFT's MultitaskPromptEmbedding.

Tolerance: 1e-10 absolute on outputs and on the gradients of P*, u and v; the
reference and ours run the same float64 backbone, so only the order of
floating-point operations differs (measured: loss 0.0, gradients <= 8.7e-15).
"""

from __future__ import annotations

import pytest
import torch

from dtvg_dist.core.mpt import (
    distillation_loss,
    hidden_distillation_sum,
    hidden_row_means,
    kl_distillation_sum,
    mpt_prompt,
)
from dtvg_dist.model.backbone import BackboneSettings, load_backbone
from dtvg_dist.model.methods.mpt import MPTDistillModel, MPTPrompt, MPTSourcePrompts, TeacherPrompts

TOL = 1e-10
R, K = 3, 2
LAM, TEMP = 0.7, 2.0  # any values: the reference takes the same ones


def _backbone(tiny_checkpoints, key: str):
    bb = load_backbone(BackboneSettings(name_or_path=str(tiny_checkpoints.path(key))))
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():  # larger weights: distributions far from uniform, non-trivial KL
        for p in bb.model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    bb.model.double().eval()
    return bb


def _students(d: int, seed: int = 0) -> MPTSourcePrompts:
    g = torch.Generator().manual_seed(seed)
    mod = MPTSourcePrompts(torch.randn(R, d, generator=g), K, ["a", "b"])
    with torch.no_grad():
        mod.u.copy_(1 + 0.3 * torch.randn(K, R, generator=g))
        mod.v.copy_(1 + 0.3 * torch.randn(K, d, generator=g))
    return mod.double()


def _batch(family: str):
    """Three rows, two tasks, right padding (T5: labels separate; Llama: the
    answer follows the input, labels -100 on the question)."""
    if family == "seq2seq":
        ids = torch.tensor([[5, 6, 7, 1], [8, 9, 1, 0], [10, 1, 0, 0]])
        mask = (torch.arange(4) < torch.tensor([[4], [3], [2]])).long()
        labels = torch.tensor([[11, 12, 1], [13, 1, -100], [14, 15, 1]])
    else:
        ids = torch.tensor([[2, 5, 6, 7, 11, 12], [2, 8, 9, 13, 0, 0], [2, 10, 14, 15, 16, 0]])
        lens = torch.tensor([[6], [4], [5]])
        mask = (torch.arange(6) < lens).long()
        labels = torch.full_like(ids, -100)
        labels[0, 4:6], labels[1, 3], labels[2, 2:5] = ids[0, 4:6], ids[1, 3], ids[2, 2:5]
    return ids, mask, labels, torch.tensor([1, 0, 1])


# ------------------------------------------------------------------ reference


def _ref_prompt(shared, u, v, k):
    """Eq. 2, element by element: P_k[i, j] = P*[i, j] * u_k[i] * v_k[j]."""
    r, d = shared.shape
    return torch.stack([torch.stack([shared[i, j] * u[k, i] * v[k, j] for j in range(d)]) for i in range(r)])


def _ref_forward(bb, prompts, ids, mask, labels):
    """Plain prompted forward, full logits: (answer logits [N, V], targets,
    hidden pairs [(h, positions)]). Prompt rows go first (no left padding)."""
    model = bb.model
    emb = model.get_input_embeddings()(ids)
    x = torch.cat([prompts, emb], 1)
    m = torch.cat([torch.ones(ids.shape[0], R, dtype=mask.dtype), mask], 1)
    if bb.family == "seq2seq":
        out = model(inputs_embeds=x, attention_mask=m, labels=labels, output_hidden_states=True)
        keep = labels != -100
        return out.logits[keep], labels[keep], [
            (out.encoder_last_hidden_state, m.bool()), (out.decoder_hidden_states[-1], keep)
        ]
    pos = (m.cumsum(-1) - 1).clamp(min=0)
    out = model(inputs_embeds=x, attention_mask=m, position_ids=pos, output_hidden_states=True)
    lab = torch.cat([torch.full((ids.shape[0], R), -100), labels], 1)
    nxt = torch.cat([lab[:, 1:], torch.full((ids.shape[0], 1), -100)], 1)
    keep = nxt != -100
    return out.logits[keep], nxt[keep], [(out.hidden_states[-1], m.bool())]


def _ref_loss(bb, students, teachers, ids, mask, labels, task_ids):
    """Eq. 5 with each term normalised by its own count: (sum CE + lam * (sum
    KL(t || s) at T + sum over hidden pairs and rows b of n_b * mean over b's
    positions of mean_d (h - h_t)^2)) / N, n_b the row's answer tokens."""
    p_s = torch.stack([_ref_prompt(students.shared, students.u, students.v, int(k)) for k in task_ids])
    p_t = torch.stack([teachers[int(k)] for k in task_ids])
    ls, tgt, hs = _ref_forward(bb, p_s, ids, mask, labels)
    with torch.no_grad():
        lt, _, ht = _ref_forward(bb, p_t, ids, mask, labels)
    n = tgt.numel()
    ce = sum(-torch.log(torch.exp(ls[i]) / torch.exp(ls[i]).sum())[tgt[i]] for i in range(n))
    kl = 0.0
    for i in range(n):
        ps = torch.exp(ls[i] / TEMP) / torch.exp(ls[i] / TEMP).sum()
        pt = torch.exp(lt[i] / TEMP) / torch.exp(lt[i] / TEMP).sum()
        kl = kl + (pt * (torch.log(pt) - torch.log(ps))).sum()
    row_tokens = _row_tokens(bb.family, labels)
    hid = 0.0
    for (h, where), (h_t, _) in zip(hs, ht, strict=True):
        for b in range(h.shape[0]):
            cols = where[b].nonzero().flatten().tolist()
            row = sum(((h[b, j] - h_t[b, j]) ** 2).sum() / h.shape[-1] for j in cols) / len(cols)
            hid = hid + row_tokens[b] * row
    return (ce + LAM * (kl + hid)) / n


def _row_tokens(family: str, labels: torch.Tensor) -> list[int]:
    """Answer tokens per row (label != -100; the causal shift keeps the count)."""
    return [int((row != -100).sum()) for row in labels]


@pytest.mark.parametrize("answer_only", [True, False])
@pytest.mark.parametrize("key", ["t5", "llama"])
def test_distillation_loss_and_grads_match_reference(tiny_checkpoints, key, answer_only):
    """Ours with the head on the answer rows only (default) or on every
    position, against the reference on full logits."""
    bb = _backbone(tiny_checkpoints, key)
    d = bb.hidden_size
    ids, mask, labels, task_ids = _batch(bb.family)
    # float32 values (the bank stores fp32), held in float64 like everything here
    teachers = torch.randn(K, R, d, generator=torch.Generator().manual_seed(9)).double()
    ours_s, ref_s = _students(d), _students(d)
    tp = TeacherPrompts(teachers).double()
    model = MPTDistillModel(bb, ours_s, tp, lam=LAM, temperature=TEMP, answer_only_logits=answer_only)
    loss = model(ids, mask, labels, task_ids).loss
    ref = _ref_loss(bb, ref_s, teachers, ids, mask, labels, task_ids)
    assert loss.dtype == torch.float64
    assert abs(float(loss) - float(ref)) < TOL
    parts = model.losses(ids, mask, labels, task_ids)
    assert float(parts["logits"]) > 1e-3 and all(float(h.min()) > 1e-3 for h in parts["hidden"])  # live
    loss.backward()
    ref.backward()
    for name in ("shared", "u", "v"):
        ours_g, ref_g = getattr(ours_s, name).grad, getattr(ref_s, name).grad
        assert ours_g is not None and ref_g is not None
        assert (ours_g - ref_g).abs().max() < TOL, name
        assert ref_g.abs().max() > 0
    # the task without rows in the batch (none here) and the teachers get nothing
    assert not any(p.requires_grad for p in tp.parameters())


def test_core_terms_reference_and_shapes():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 7, generator=g, dtype=torch.float64), torch.randn(5, 7, generator=g, dtype=torch.float64)
    ps, pt = torch.softmax(s / 1.5, -1), torch.softmax(t / 1.5, -1)
    assert abs(float(kl_distillation_sum(s, t, 1.5)) - float((pt * (pt.log() - ps.log())).sum())) < TOL
    assert float(kl_distillation_sum(t, t, 1.0)) == pytest.approx(0.0, abs=1e-14)
    h, ht = torch.randn(2, 3, 4, generator=g), torch.randn(2, 3, 4, generator=g)
    m = torch.tensor([[1, 1, 0], [1, 0, 0]]).bool()
    want = sum(((h[b, j] - ht[b, j]) ** 2).mean() for b, j in m.nonzero().tolist())
    assert float(hidden_distillation_sum(h, ht, m)) == pytest.approx(float(want), rel=1e-6)
    with pytest.raises(ValueError, match="temperature"):
        kl_distillation_sum(s, t, 0.0)
    with pytest.raises(ValueError, match="shapes disagree"):
        mpt_prompt(torch.zeros(3, 4), torch.zeros(4), torch.zeros(4))


def test_prompt_matches_peft_multitask_prompt_embedding():
    """Our P* o (u v^T) is PEFT's MultitaskPromptEmbedding output at rank 1,
    per task, and AVERAGE_SOURCE_TASKS' init is MPTPrompt's (mean u, mean v)."""
    from peft import MultitaskPromptTuningConfig, TaskType
    from peft.tuners.multitask_prompt_tuning import MultitaskPromptEmbedding

    r, d = 4, 6
    cfg = MultitaskPromptTuningConfig(
        task_type=TaskType.SEQ_2_SEQ_LM, num_virtual_tokens=r, token_dim=d, num_tasks=K,
        num_ranks=1, num_transformer_submodules=1, num_attention_heads=1, num_layers=1,
    )
    emb = MultitaskPromptEmbedding(cfg, torch.nn.Embedding(10, d))
    ours = MPTSourcePrompts(torch.randn(r, d, generator=torch.Generator().manual_seed(5)), K)
    with torch.no_grad():
        ours.u.normal_(generator=torch.Generator().manual_seed(6))
        ours.v.normal_(generator=torch.Generator().manual_seed(7))
        emb.embedding.weight.copy_(ours.shared)
        emb.prefix_task_cols.copy_(ours.u.unsqueeze(-1))
        emb.prefix_task_rows.copy_(ours.v.unsqueeze(1))
    task_ids = torch.tensor([1, 0, 1])
    indices = torch.arange(r).unsqueeze(0).expand(3, -1)
    torch.testing.assert_close(ours(task_ids=task_ids), emb(indices, task_ids), rtol=0, atol=1e-6)
    target = MPTPrompt(ours.shared, ours.u.mean(0), ours.v.mean(0))
    avg = emb.prefix_task_cols.mean(0, keepdim=True) @ emb.prefix_task_rows.mean(0, keepdim=True)
    torch.testing.assert_close(target(), (emb.embedding.weight * avg)[0], rtol=0, atol=1e-6)


def test_target_parameter_count_is_table_2():
    """T5-base (d = 768), r = 100: 76,800 + 100 + 768 = 77,668, printed 77.6K."""
    target = MPTPrompt(torch.zeros(100, 768), torch.ones(100), torch.ones(768))
    n = sum(p.numel() for p in target.parameters() if p.requires_grad)
    assert n == 77_668 and f"{int(n / 100) / 10}K" == "77.6K"


def test_recipe_checks_name_the_mpt_key():
    from dtvg_dist.errors import RecipeError
    from dtvg_dist.orchestration.config import load_recipe

    for bad, key in (("mpt.temperature=0", "mpt.temperature"), ("mpt.lam=-1", "mpt.lam"),
                     ("mpt.source_max_steps=0", "mpt.source_max_steps")):
        with pytest.raises(RecipeError, match=key):
            load_recipe("tiny-t5", ["method=mpt", bad])
    cfg = load_recipe("tiny-t5", ["method=mpt", "stage=pre"])
    assert cfg.stage == "pre" and cfg.mpt.lam == 1.0


def test_each_loss_term_is_normalised_by_its_own_count():
    """A hand-computed float64 example: two rows with 2 and 1 answer tokens.
    The cross-entropy and the KL are means over the 3 answer tokens; the
    hidden term is, per row, the mean over that row's compared positions,
    the rows weighted by their answer tokens. The old reduction summed the
    hidden error over every position and divided by the answer tokens."""
    f64 = torch.float64
    student = torch.zeros(3, 2, dtype=f64)
    teacher = torch.tensor([[float(torch.log(torch.tensor(3.0, dtype=f64))), 0.0], [0.0, 0.0], [0.0, 0.0]],
                           dtype=f64)
    # token 0: teacher (3/4, 1/4), student (1/2, 1/2); tokens 1, 2: equal, KL 0
    kl_by_hand = 0.75 * torch.log(torch.tensor(1.5, dtype=f64)) + 0.25 * torch.log(torch.tensor(0.5, dtype=f64))
    kl = kl_distillation_sum(student, teacher, 1.0)
    assert abs(float(kl) - float(kl_by_hand)) < 1e-15
    # encoder states minus teacher's: row 0 per-position means 1, 2, 0 (4th masked), row 1: 5 at one position
    enc = torch.tensor([[[1.0, 1.0], [2.0, 0.0], [0.0, 0.0], [3.0, 3.0]],
                        [[3.0, 1.0], [9.0, 9.0], [9.0, 9.0], [9.0, 9.0]]], dtype=f64)
    enc_mask = torch.tensor([[True, True, True, False], [True, False, False, False]])
    means = hidden_row_means(enc, torch.zeros_like(enc), enc_mask)
    assert means.tolist() == [1.0, 5.0]
    plm_sum, lam = torch.tensor(1.2, dtype=f64), 0.5
    got = distillation_loss(plm_sum, kl, torch.tensor([2, 1]), [means], lam)
    want = (1.2 + 0.5 * (float(kl_by_hand) + 2 * 1.0 + 1 * 5.0)) / 3
    assert abs(float(got) - want) < 1e-15
    old = (1.2 + 0.5 * (float(kl_by_hand) + float(hidden_distillation_sum(enc, torch.zeros_like(enc), enc_mask)))) / 3
    assert abs(float(got) - old) > 0.1
    # a split into two single-row "ranks", weighted by their answer tokens as the trainer does, is the whole
    kl_rows = [kl_distillation_sum(student[:2], teacher[:2], 1.0), kl_distillation_sum(student[2:], teacher[2:], 1.0)]
    parts = [distillation_loss(torch.tensor(0.7, dtype=f64), kl_rows[0], torch.tensor([2]), [means[:1]], lam),
             distillation_loss(torch.tensor(0.5, dtype=f64), kl_rows[1], torch.tensor([1]), [means[1:]], lam)]
    assert abs(float(parts[0] * 2 / 3 + parts[1] * 1 / 3) - want) < 1e-15


def test_teacher_forward_has_no_dropout_in_training_mode(tiny_checkpoints):
    """In training mode the student's forward draws dropout masks, the
    teacher's does not: two teacher calls on one batch agree exactly, and the
    model is back in training mode after them."""
    bb = load_backbone(BackboneSettings(name_or_path=str(tiny_checkpoints.path("t5"))))
    for m in bb.model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.5
    d = bb.hidden_size
    teachers = TeacherPrompts(torch.randn(K, R, d, generator=torch.Generator().manual_seed(9)))
    model = MPTDistillModel(bb, _students(d).float(), teachers, lam=LAM, temperature=TEMP)
    model.train()
    ids, mask, labels, task_ids = _batch("seq2seq")
    first = model.teacher(ids, mask, labels, task_ids)
    second = model.teacher(ids, mask, labels, task_ids)
    assert torch.equal(first.logits, second.logits)
    assert all(torch.equal(a, b) for a, b in zip(first.hidden, second.hidden, strict=True))
    assert model.training and all(m.training for m in model.modules())
    s1 = model.student.answer_logits(ids, mask, labels, task_ids=task_ids).logits
    s2 = model.student.answer_logits(ids, mask, labels, task_ids=task_ids).logits
    assert not torch.equal(s1, s2)  # dropout is live for the student
