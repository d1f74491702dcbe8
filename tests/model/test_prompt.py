"""Prompt modules and PromptedModel on tiny T5 / Llama (CPU, random weights)."""

from __future__ import annotations

import pytest
import torch

from dtvg_dist.core import GROUPING_RULES, dtvg_prompt, select_group
from dtvg_dist.model.backbone import BackboneSettings, load_backbone
from dtvg_dist.model.prompt import (
    DTVGPrompt,
    PromptedModel,
    SoftPrompt,
    sample_p_init,
    spot_pick_source,
    tpv_pick_source,
)
from dtvg_dist.store.checkpoint import TrainingState, load_checkpoint, save_checkpoint
from dtvg_dist.store.checkpoint_slots import find_checkpoint

R = 4
TEXTS = ["good movie", "the plot was not good and the actor was bad", "what a film"]


def _backbone(tiny_checkpoints, key: str, dtype: str = "fp32", roughen: bool = False):
    bb = load_backbone(BackboneSettings(name_or_path=str(tiny_checkpoints.path(key)), dtype=dtype))
    if roughen:
        # Tiny random T5 repeats token 0 forever; larger weights make greedy
        # decoding depend on the context, so cache bugs would show.
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in bb.model.parameters():
                if p.dim() == 2:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    bb.model.eval()
    return bb


def _batch(tok, side: str):
    tok.padding_side = side
    return tok(TEXTS, padding=True, return_tensors="pt")


def _soft_prompt(bb, seed: int = 0) -> SoftPrompt:
    p0, _ = sample_p_init(bb.model.get_input_embeddings().weight, R, seed)
    return SoftPrompt(
        p0 + 0.1 * torch.randn(p0.shape, generator=torch.Generator().manual_seed(seed))
    )


def _dtvg(r: int = R, d: int = 8, n: int = 3, seed: int = 0, **kw) -> DTVGPrompt:
    g = torch.Generator().manual_seed(seed)
    return DTVGPrompt(
        p_init=torch.randn(r, d, generator=g),
        target_tpv=torch.randn(r, d, generator=g),
        source_tpvs=torch.randn(n, r, d, generator=g),
        source_names=[f"s{i}" for i in range(n)],
        **kw,
    )


# ---------------------------------------------------------------- sample_p_init


def test_sample_p_init_deterministic_rows_of_top_k():
    weight = torch.randn(6000, 16)
    p1, ids1 = sample_p_init(weight, 100, seed=7)
    p2, ids2 = sample_p_init(weight.clone(), 100, seed=7)
    assert torch.equal(ids1, ids2) and torch.equal(p1, p2)
    assert ids1.unique().numel() == 100 and int(ids1.max()) < 5000
    assert torch.equal(p1, weight[ids1]) and p1.dtype == torch.float32
    p1.add_(1.0)  # a clone: the embedding table is untouched
    assert torch.equal(weight[ids1] + 1.0, p1)
    _, ids3 = sample_p_init(weight, 100, seed=8)
    assert not torch.equal(ids1, ids3)
    # Pinned: randperm with a seeded CPU generator is the cross-machine contract.
    expected = torch.randperm(5000, generator=torch.Generator().manual_seed(7))[:100]
    assert torch.equal(ids1, expected)


def test_sample_p_init_small_vocab_and_dtype():
    weight = torch.randn(10, 4, dtype=torch.bfloat16)
    p, ids = sample_p_init(weight, 10, seed=0)
    assert sorted(ids.tolist()) == list(range(10)) and p.dtype == torch.float32
    with pytest.raises(ValueError, match="r=11"):
        sample_p_init(weight, 11, seed=0)


# ---------------------------------------------------------------- PromptedModel: causal


def test_llama_left_and_right_padding_agree(tiny_checkpoints):
    bb = _backbone(tiny_checkpoints, "llama")
    model = PromptedModel(bb, _soft_prompt(bb))
    outs, losses = {}, {}
    for side in ("right", "left"):
        enc = _batch(bb.tokenizer, side)
        labels = enc.input_ids.masked_fill(enc.attention_mask == 0, -100)
        out = model(enc.input_ids, enc.attention_mask)  # no labels: full logits
        assert out.logits.shape[1] == enc.input_ids.shape[1] + R
        outs[side] = (enc, out)
        losses[side] = model(enc.input_ids, enc.attention_mask, labels).loss
    (enc_r, out_r), (enc_l, out_l) = outs["right"], outs["left"]
    length = enc_r.input_ids.shape[1]
    assert enc_l.attention_mask[:, 0].eq(0).any() and enc_r.attention_mask[:, -1].eq(0).any()
    for b in range(len(TEXTS)):
        n = int(enc_r.attention_mask[b].sum())
        real_r = out_r.logits[b, R : R + n]
        real_l = out_l.logits[b, R + length - n :]
        assert torch.allclose(real_r, real_l, atol=1e-5), b
        # ... and both equal the unpadded sequence alone.
        ids = enc_r.input_ids[b : b + 1, :n]
        alone = model(ids, torch.ones_like(ids)).logits[0, R:]
        assert torch.allclose(real_r, alone, atol=1e-5), b
    assert torch.allclose(losses["right"], losses["left"], atol=1e-5)


def test_llama_prompt_sits_before_first_real_token(tiny_checkpoints):
    bb = _backbone(tiny_checkpoints, "llama")
    prompt = _soft_prompt(bb)
    model = PromptedModel(bb, prompt)
    enc = _batch(bb.tokenizer, "left")
    labels = enc.input_ids.clone()
    embeds, mask, labels_ext = model.insert_prompt(enc.input_ids, enc.attention_mask, labels)
    emb = bb.model.get_input_embeddings()(enc.input_ids)
    for b in range(len(TEXTS)):
        pads = int((enc.attention_mask[b] == 0).sum())
        assert torch.equal(embeds[b, pads : pads + R], prompt.prompt.detach())
        assert torch.equal(embeds[b, pads + R :], emb[b, pads:])
        assert mask[b].tolist() == [0] * pads + [1] * (mask.shape[1] - pads)
        assert labels_ext[b, pads : pads + R].eq(-100).all()
        assert torch.equal(labels_ext[b, pads + R :], labels[b, pads:])


# ---------------------------------------------------------------- PromptedModel: T5


def test_t5_prompt_only_on_encoder(tiny_checkpoints):
    bb = _backbone(tiny_checkpoints, "t5")
    prompt = _soft_prompt(bb)
    model = PromptedModel(bb, prompt)
    enc = _batch(bb.tokenizer, "right")
    labels = bb.tokenizer(
        ["yes", "no", "positive negative"], padding=True, return_tensors="pt"
    ).input_ids
    labels = labels.masked_fill(labels == 0, -100)[:, :2]  # sliced: non-contiguous-safe path
    seen: dict[str, dict] = {}

    def grab(name):
        def hook(_mod, _args, kwargs):
            seen[name] = kwargs

        return hook

    h1 = bb.model.encoder.register_forward_pre_hook(grab("enc"), with_kwargs=True)
    h2 = bb.model.decoder.register_forward_pre_hook(grab("dec"), with_kwargs=True)
    outs = {}
    try:
        for answer_only in (False, True):
            model.answer_only_logits = answer_only
            outs[answer_only] = model(enc.input_ids, enc.attention_mask, labels)
            enc_embeds = seen["enc"]["inputs_embeds"]
            assert enc_embeds.shape[1] == enc.input_ids.shape[1] + R
            assert torch.equal(
                enc_embeds[:, :R], prompt.prompt.detach().expand(len(TEXTS), -1, -1)
            )
            assert seen["enc"]["attention_mask"][:, :R].eq(1).all()
            assert seen["dec"].get("inputs_embeds") is None
            assert seen["dec"]["input_ids"].shape == labels.shape  # decoder: labels only
    finally:
        h1.remove()
        h2.remove()
    out = outs[False]
    assert out.logits.shape[:2] == labels.shape
    # Answer-only: one head row per label that is not -100.
    assert outs[True].logits.shape == (int(labels.ne(-100).sum()), out.logits.shape[-1])
    torch.testing.assert_close(outs[True].loss, out.loss, atol=1e-6, rtol=0)
    manual = bb.model(
        inputs_embeds=torch.cat(
            [
                prompt.prompt.expand(len(TEXTS), -1, -1),
                bb.model.get_input_embeddings()(enc.input_ids),
            ],
            1,
        ),
        attention_mask=torch.cat(
            [torch.ones(len(TEXTS), R, dtype=torch.long), enc.attention_mask], 1
        ),
        labels=labels.contiguous(),
    )
    assert torch.equal(out.loss, manual.loss)


# ---------------------------------------------------------------- answer-only logits

# Rows with different prompt and answer lengths: (prompt tokens, answer tokens).
ANSWER_ROWS = [
    ("the movie was good", "yes"),
    ("a bad plot", "no the actor was terrible"),
    ("it is not great and the actor was bad so", "negative film"),
]


def _f64_model(tiny_checkpoints, key: str) -> tuple[PromptedModel, SoftPrompt]:
    bb = _backbone(tiny_checkpoints, key, roughen=True)
    bb.model.double()
    prompt = _soft_prompt(bb).double()
    return PromptedModel(bb, prompt), prompt


def _toy_tokenizer(tiny_checkpoints):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_checkpoints.tokenizer))


def _pad_rows(rows: list[list[int]], value: int, side: str) -> torch.Tensor:
    width = max(len(r) for r in rows)
    pads = [[value] * (width - len(r)) for r in rows]
    out = [p + r if side == "left" else r + p for r, p in zip(rows, pads, strict=True)]
    return torch.tensor(out)


def _causal_answer_batch(tok, side: str):
    ids, labels = [], []
    for text, answer in ANSWER_ROWS:
        p = tok(text, add_special_tokens=False)["input_ids"]
        a = tok(answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        ids.append(p + a)
        labels.append([-100] * len(p) + a)
    mask = [[1] * len(r) for r in ids]
    return (
        _pad_rows(ids, tok.pad_token_id, side),
        _pad_rows(mask, 0, side),
        _pad_rows(labels, -100, side),
    )


def _plain_causal_loss(logits: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor):
    """Token-mean NLL from full logits [B, L + r, V], written plainly: the
    prompt's r rows sit before each row's first real token, and position j
    predicts the label at j + 1 of the extended row."""
    nll, count = logits.new_zeros(()), 0
    for b in range(labels.shape[0]):
        first = int(mask[b].tolist().index(1))
        ext = labels[b, :first].tolist() + [-100] * R + labels[b, first:].tolist()
        logp = torch.log_softmax(logits[b], dim=-1)
        for j in range(len(ext) - 1):
            if ext[j + 1] != -100:
                nll = nll - logp[j, ext[j + 1]]
                count += 1
    return nll / count


def _head_rows_seen(model: PromptedModel) -> tuple[list[tuple[int, ...]], object]:
    shapes: list[tuple[int, ...]] = []
    handle = model.model.get_output_embeddings().register_forward_hook(
        lambda _m, _a, out: shapes.append(tuple(out.shape))
    )
    return shapes, handle


@pytest.mark.parametrize("side", ["right", "left"])
def test_causal_answer_only_loss_and_grad_equal_full_logits_f64(tiny_checkpoints, side):
    model, prompt = _f64_model(tiny_checkpoints, "llama")
    ids, mask, labels = _causal_answer_batch(_toy_tokenizer(tiny_checkpoints), side)
    assert mask.eq(0).any() and labels.ne(-100).sum(1).unique().numel() == 3  # 3 answer lengths
    # Reference: full logits (no labels), loss written plainly, float64.
    ref = _plain_causal_loss(model(ids, mask).logits, mask, labels)
    (ref_grad,) = torch.autograd.grad(ref, prompt.prompt)
    shapes, handle = _head_rows_seen(model)
    try:
        out = model(ids, mask, labels)
    finally:
        handle.remove()
    n_answer = int(labels.ne(-100).sum())
    assert shapes == [(n_answer, model.model.config.vocab_size)]  # the head saw answer rows only
    assert out.logits.dtype == torch.float64
    assert out.targets.tolist() == labels[labels.ne(-100)].tolist()
    (grad,) = torch.autograd.grad(out.loss, prompt.prompt)
    torch.testing.assert_close(out.loss, ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(grad, ref_grad, atol=1e-10, rtol=0)
    assert ref_grad.abs().sum() > 0
    # Switch off: rows cut from full logits give the same; the HF loss (which
    # transformers computes in float32) agrees to float32 precision.
    model.answer_only_logits = False
    off = model.answer_logits(ids, mask, labels)
    torch.testing.assert_close(off.loss, ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(off.logits, out.logits, atol=1e-10, rtol=0)
    hf = model(ids, mask, labels).loss
    torch.testing.assert_close(hf.double(), ref, atol=1e-5, rtol=0)


def test_t5_answer_only_loss_and_grad_equal_full_logits_f64(tiny_checkpoints):
    model, prompt = _f64_model(tiny_checkpoints, "t5")
    tok = _toy_tokenizer(tiny_checkpoints)
    enc = tok([t for t, _ in ANSWER_ROWS], padding=True, return_tensors="pt")
    targets = [tok(a)["input_ids"] for _, a in ANSWER_ROWS]  # + EOS
    labels = _pad_rows(targets, -100, "right")
    assert len({len(t) for t in targets}) == 3
    start = model.model.config.decoder_start_token_id
    dec_in = _pad_rows([[start] + t[:-1] for t in targets], tok.pad_token_id, "right")
    full = model(enc.input_ids, enc.attention_mask, decoder_input_ids=dec_in).logits
    keep = labels.ne(-100)
    logp = torch.log_softmax(full, -1)
    ref = -torch.stack([logp[b, t, labels[b, t]] for b, t in keep.nonzero().tolist()]).mean()
    (ref_grad,) = torch.autograd.grad(ref, prompt.prompt)
    shapes, handle = _head_rows_seen(model)
    try:
        out = model(enc.input_ids, enc.attention_mask, labels)
    finally:
        handle.remove()
    assert shapes == [(int(keep.sum()), model.model.config.vocab_size)]
    (grad,) = torch.autograd.grad(out.loss, prompt.prompt)
    torch.testing.assert_close(out.loss, ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(grad, ref_grad, atol=1e-10, rtol=0)
    assert ref_grad.abs().sum() > 0
    model.answer_only_logits = False
    off = model(enc.input_ids, enc.attention_mask, labels).loss  # T5's own loss, float64
    torch.testing.assert_close(off, ref, atol=1e-10, rtol=0)


# ---------------------------------------------------------------- generation


@pytest.mark.parametrize("key", ["t5", "llama"])
def test_generation_with_and_without_kv_cache(tiny_checkpoints, key):
    bb = _backbone(tiny_checkpoints, key, roughen=True)
    model = PromptedModel(bb, _soft_prompt(bb))
    enc = _batch(bb.tokenizer, "left")
    assert enc.attention_mask.eq(0).any()  # different lengths, left padded
    cached = model.generate(enc.input_ids, enc.attention_mask, max_new_tokens=6, use_cache=True)
    plain = model.generate(enc.input_ids, enc.attention_mask, max_new_tokens=6, use_cache=False)
    assert cached.shape[0] == len(TEXTS) and 0 < cached.shape[1] <= 6
    assert torch.equal(cached, plain)
    assert cached.unique().numel() > 1  # not a degenerate constant output
    # Only new tokens come back: the first one is the greedy pick after the input.
    for b in range(len(TEXTS)):
        n = int(enc.attention_mask[b].sum())
        ids = enc.input_ids[b : b + 1, -n:]
        if key == "llama":
            first = model(ids, torch.ones_like(ids)).logits[0, -1].argmax()
        else:
            start = torch.zeros(1, 1, dtype=torch.long)
            first = model(ids, torch.ones_like(ids), decoder_input_ids=start).logits[0, -1].argmax()
        assert int(cached[b, 0]) == int(first), b


def test_causal_generation_right_padding_equals_left(tiny_checkpoints):
    bb = _backbone(tiny_checkpoints, "llama", roughen=True)
    model = PromptedModel(bb, _soft_prompt(bb))
    right, left = _batch(bb.tokenizer, "right"), _batch(bb.tokenizer, "left")
    out_r = model.generate(right.input_ids, right.attention_mask, max_new_tokens=5)
    out_l = model.generate(left.input_ids, left.attention_mask, max_new_tokens=5)
    assert torch.equal(out_r, out_l)


# ---------------------------------------------------------------- dtype


@pytest.mark.parametrize("key", ["t5", "llama"])
def test_bf16_backbone_fp32_prompt_gets_grads(tiny_checkpoints, key):
    bb = _backbone(tiny_checkpoints, key, dtype="bf16")
    assert bb.model.get_input_embeddings().weight.dtype == torch.bfloat16
    prompt = _soft_prompt(bb)
    assert prompt.prompt.dtype == torch.float32
    model = PromptedModel(bb, prompt)
    enc = _batch(bb.tokenizer, "left")
    labels = enc.input_ids.masked_fill(enc.attention_mask == 0, -100)
    if key == "t5":
        labels = labels[:, :3]
    model(enc.input_ids, enc.attention_mask, labels).loss.backward()
    assert prompt.prompt.dtype == torch.float32
    assert prompt.prompt.grad is not None and prompt.prompt.grad.dtype == torch.float32
    assert torch.isfinite(prompt.prompt.grad).all() and prompt.prompt.grad.abs().sum() > 0
    assert all(p.grad is None for p in bb.model.parameters())


def test_gradient_checkpointing_keeps_prompt_grads(tiny_checkpoints):
    grads = []
    for ckpt in (False, True):
        bb = load_backbone(
            BackboneSettings(name_or_path=str(tiny_checkpoints.llama), gradient_checkpointing=ckpt)
        )
        prompt = _soft_prompt(bb)
        model = PromptedModel(bb, prompt).train()  # checkpointing only acts in train mode
        enc = _batch(bb.tokenizer, "left")
        labels = enc.input_ids.masked_fill(enc.attention_mask == 0, -100)
        model(enc.input_ids, enc.attention_mask, labels).loss.backward()
        grads.append(prompt.prompt.grad)
    assert torch.allclose(grads[0], grads[1], atol=1e-6) and grads[1].abs().sum() > 0


# ---------------------------------------------------------------- SPoT


def test_spot_picks_planted_source():
    g = torch.Generator().manual_seed(0)
    target = torch.randn(R, 8, generator=g)
    sources = torch.randn(5, R, 8, generator=g)
    sources[3] = 2.0 * target + 0.01 * torch.randn(R, 8, generator=g)  # same direction
    assert spot_pick_source(target, sources) == 3
    sources[1] = sources[3] * 3.0  # equal cosine: the lower index wins
    assert spot_pick_source(target, sources) == 1
    spot = SoftPrompt(init=sources[spot_pick_source(target, sources)])
    assert torch.equal(spot(), sources[1])


def test_tpv_pick_is_eq2_on_task_prompt_vectors():
    """Table 1's TPV row: the source of highest (1/r^2) (sum_i s_i) . (sum_j t_j),
    checked against that sum written plainly; SPoT's cosine picks otherwise."""
    g = torch.Generator().manual_seed(5)
    target = torch.randn(R, 8, generator=g, dtype=torch.float64)
    sources = torch.randn(6, R, 8, generator=g, dtype=torch.float64)
    sources[2] = 0.1 * target  # same direction, small: cosine 1, small dot product
    sources[4] = 3.0 * target + torch.randn(R, 8, generator=g, dtype=torch.float64)  # large dot

    def eq2(a, b):
        return sum(float(a[:, k].sum()) * float(b[:, k].sum()) for k in range(a.shape[1])) / R**2

    want = max(range(6), key=lambda i: (eq2(sources[i], target), -i))
    assert tpv_pick_source(target, sources) == want == 4
    assert spot_pick_source(target, sources) == 2
    sources[1] = sources[4].clone()  # a tie: the lower index wins
    assert tpv_pick_source(target.float(), sources.float()) == 1
    with pytest.raises(ValueError, match=r"\[n>0, r, d\]"):
        tpv_pick_source(target, sources[:0])


# ---------------------------------------------------------------- DTVG


@pytest.mark.parametrize("rule", GROUPING_RULES)
def test_dtvg_forward_equals_core(rule):
    m = _dtvg(n=4, seed=3, rule=rule)
    with torch.no_grad():
        m.alpha_t.mul_(torch.linspace(0.5, 1.5, R))
        m.alpha_s.mul_(torch.linspace(-1.0, 2.0, 4 * R).view(4, R))
    p_mix = m()
    ref, mask, sims = dtvg_prompt(
        m.p_init, m.target_tpv, m.source_tpvs, m.alpha_t, m.alpha_s, rule=rule
    )
    assert torch.equal(p_mix, ref)
    assert torch.equal(m.last_mask, mask) and torch.equal(m.last_sims, sims)
    assert not m.last_mask.requires_grad and not m.last_sims.requires_grad


def test_dtvg_mask_sync_hook_is_used():
    m = _dtvg(rule="all")
    seen = []

    def drop_all(mask):
        seen.append(mask.clone())
        return torch.zeros_like(mask)

    m.mask_sync = drop_all
    p_mix = m()
    assert seen and seen[0].all()
    assert not m.last_mask.any()
    assert torch.allclose(p_mix, m.p_init + m.alpha_t[:, None] * m.target_tpv)


def _planted(fixed: bool, rule: str = "greedy") -> DTVGPrompt:
    """Two orthogonal sources; the target points at source 0 first."""
    d = 4
    src = torch.zeros(2, R, d)
    src[0, :, 0] = 1.0
    src[1, :, 1] = 1.0
    target = torch.zeros(R, d)
    target[:, 0] = 1.0
    target[:, 1] = -1.0
    return DTVGPrompt(torch.zeros(R, d), target, src, ["a", "b"], rule=rule, fixed=fixed)


def _turn_to_source_1(m: DTVGPrompt) -> None:
    with torch.no_grad():
        m.target_tpv[:, 0] = -1.0
        m.target_tpv[:, 1] = 1.0


def test_dtvg_fixed_keeps_first_mask():
    dyn, fix = _planted(False), _planted(True)
    dyn(), fix()
    assert dyn.last_mask.tolist() == [True, False] == fix.last_mask.tolist()
    with torch.no_grad():  # the target now points at source 1
        for m in (dyn, fix):
            m.target_tpv[:, 0] = -1.0
            m.target_tpv[:, 1] = 1.0
    p_dyn, p_fix = dyn(), fix()
    assert dyn.last_mask.tolist() == [False, True]
    assert fix.last_mask.tolist() == [True, False]
    assert torch.equal(p_fix, fix.p_init + fix.target_tpv + fix.source_tpvs[0])
    assert not torch.equal(p_dyn, p_fix)
    # The kept group is checkpointed: trainable_state and load_state_dict restore it.
    state = fix.trainable_state()
    assert state["fixed_mask"].tolist() == [True, False] and bool(state["fixed_mask_set"])
    for restore in ("trainable", "state_dict"):
        fresh = _planted(True)
        with torch.no_grad():
            fresh.target_tpv.copy_(fix.target_tpv)
        if restore == "trainable":
            fresh.load_trainable_state(state)
        else:
            fresh.load_state_dict(fix.state_dict())
        fresh()
        assert fresh.last_mask.tolist() == [True, False], restore


def test_fixed_is_a_switch_not_a_rule():
    with pytest.raises(ValueError, match="grouping.rule='fixed'"):
        _dtvg(rule="fixed")
    with pytest.raises(ValueError, match="grouping.rule='best'"):
        _dtvg(rule="best")


@pytest.mark.parametrize("rule", GROUPING_RULES)
def test_fixed_keeps_each_rules_step0_group_across_a_resume(rule, tmp_path):
    """`fixed=True` with any rule: the group the rule picks at the first step
    is kept, goes through a checkpoint on disk, and a resumed module uses it
    although the rule would now pick another."""
    first = _planted(True, rule)
    first()
    step0 = first.last_mask.tolist()
    # alphas are ones at step 0: the group is the rule's on the raw TPVs
    assert step0 == select_group(first.target_tpv, first.source_tpvs, rule).tolist()
    opt = torch.optim.AdamW(first.param_groups(0.1))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    save_checkpoint(tmp_path, trainable=first.trainable_state(), best_trainable=None,
                    optimizer=opt, scheduler=sched, state=TrainingState(step=1))

    resumed = _planted(True, rule)
    loaded = load_checkpoint(find_checkpoint(tmp_path))
    resumed.load_trainable_state(loaded.trainable)
    _turn_to_source_1(resumed)
    dynamic = _planted(False, rule)
    _turn_to_source_1(dynamic)
    resumed(), dynamic()
    assert resumed.last_mask.tolist() == step0
    assert dynamic.last_mask.tolist() == select_group(
        dynamic.target_tpv, dynamic.source_tpvs, rule).tolist()
    if rule in ("greedy", "first-drop", "prefix-argmax", "positive"):  # rules that follow the target
        assert step0 == [True, False] and dynamic.last_mask.tolist() == [False, True]
    # a fresh fixed module without the checkpoint would keep its own first group instead
    fresh = _planted(True, rule)
    _turn_to_source_1(fresh)
    fresh()
    assert fresh.last_mask.tolist() == dynamic.last_mask.tolist()


def test_dtvg_unselected_source_alphas_get_zero_grad():
    m = _planted(False)
    m().sum().backward()
    assert m.last_mask.tolist() == [True, False]
    assert m.alpha_s.grad[0].abs().sum() > 0
    assert torch.equal(m.alpha_s.grad[1], torch.zeros(R))
    assert m.target_tpv.grad is not None and m.alpha_t.grad is not None
    assert m.source_tpvs.grad is None and not m.source_tpvs.requires_grad


def test_param_groups_two_speeds():
    m = _dtvg()
    groups = m.param_groups(lr=0.3, source_lr=0.4, weight_decay=1e-5)
    assert [g["lr"] for g in groups] == [0.3, 0.4]
    assert groups[0]["params"] == [m.target_tpv, m.alpha_t] and groups[1]["params"] == [m.alpha_s]
    assert all(g["weight_decay"] == 1e-5 for g in groups)
    opt = torch.optim.AdamW(groups)
    m().sum().backward()
    opt.step()
    sp = SoftPrompt(torch.zeros(R, 8))
    (group,) = sp.param_groups(lr=0.3, source_lr=0.4, weight_decay=0.0)
    assert group["lr"] == 0.3 and group["params"] == [sp.prompt]
    assert {n for n, p in m.named_parameters()} == {"target_tpv", "alpha_t", "alpha_s"}


def test_trainable_state_round_trip():
    m = _dtvg(seed=1)
    with torch.no_grad():
        m.alpha_s.mul_(0.5)
    state = m.trainable_state()
    assert set(state) == {"target_tpv", "alpha_t", "alpha_s", "fixed_mask", "fixed_mask_set"}
    assert all(t.dtype == torch.float32 for k, t in state.items() if not k.startswith("fixed"))
    fresh = _dtvg(seed=2)
    fresh.load_trainable_state(state)
    for k, t in state.items():
        assert torch.equal(getattr(fresh, k), t), k
    with pytest.raises(KeyError, match="missing keys"):
        fresh.load_trainable_state({"target_tpv": state["target_tpv"]})
    sp = SoftPrompt(torch.randn(R, 8))
    sp2 = SoftPrompt(torch.zeros(R, 8))
    sp2.load_trainable_state(sp.trainable_state())
    assert torch.equal(sp2.prompt, sp.prompt)
    with pytest.raises(ValueError, match="shape"):
        sp2.load_trainable_state({"prompt": torch.zeros(R + 1, 8)})


def test_dtvg_end_to_end_on_llama(tiny_checkpoints):
    bb = _backbone(tiny_checkpoints, "llama")
    emb = bb.model.get_input_embeddings().weight
    p_init, _ = sample_p_init(emb, R, seed=0)
    g = torch.Generator().manual_seed(0)
    m = DTVGPrompt(
        p_init,
        0.1 * torch.randn(R, 32, generator=g),
        0.1 * torch.randn(3, R, 32, generator=g),
        ["x", "y", "z"],
    )
    model = PromptedModel(bb, m)
    enc = _batch(bb.tokenizer, "left")
    labels = enc.input_ids.masked_fill(enc.attention_mask == 0, -100)
    model(enc.input_ids, enc.attention_mask, labels).loss.backward()
    assert m.target_tpv.grad.abs().sum() > 0 and m.alpha_t.grad.abs().sum() > 0
    assert m.last_mask.shape == (3,) and m.last_sims.shape == (3,)
