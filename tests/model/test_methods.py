"""ATTEMPT and DePT against float64 references written plainly from their papers.

The reference runs every example alone, unpadded: the token embeddings of its
real input tokens, the method's equations with explicit loops (pooling,
SiLU, layer norm, softmax, the mixture; the low-rank update row by row), the
prompt in front, then the frozen backbone and the answer tokens' NLL. The
trainer's path (PromptedModel on a padded batch, left or right) must give the
same token-mean loss and the same gradients of every trainable tensor to
1e-10 in float64.
"""

from __future__ import annotations

import math

import pytest
import torch

from dtvg_dist.model.backbone import BackboneSettings, load_backbone
from dtvg_dist.model.methods import get_method, trainable_count
from dtvg_dist.model.methods.attempt import ATTEMPTPrompt
from dtvg_dist.model.methods.dept import DePTPrompt
from dtvg_dist.model.prompt import PromptedModel

R = 4
ROWS = [  # (input, answer): three input and three answer lengths
    ("the movie was good", "yes"),
    ("a bad plot", "no the actor was terrible"),
    ("it is not great and the actor was bad so", "negative film"),
]
ATOL = 1e-10


def _backbone(tiny_checkpoints, key: str):
    bb = load_backbone(BackboneSettings(name_or_path=str(tiny_checkpoints.path(key))))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # larger weights: outputs depend on the prompt clearly
        for p in bb.model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    bb.model.double().eval()
    return bb


def _tok(tiny_checkpoints):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_checkpoints.tokenizer))


def _pad(rows: list[list[int]], value: int, side: str) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([
        ([value] * (width - len(r)) + r) if side == "left" else (r + [value] * (width - len(r)))
        for r in rows
    ])


def _examples(tok, family: str) -> list[tuple[list[int], list[int]]]:
    """(input ids, answer ids) per row; the answer ends in EOS."""
    out = []
    for text, answer in ROWS:
        if family == "seq2seq":
            out.append((tok(text)["input_ids"], tok(answer)["input_ids"]))
        else:
            out.append((tok(text, add_special_tokens=False)["input_ids"],
                        tok(answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]))
    return out


def _batch(tok, family: str, side: str):
    """The trainer's padded batch: ids, mask, labels (causal: input + answer)."""
    ex = _examples(tok, family)
    if family == "seq2seq":
        ids = [i for i, _ in ex]
        return (_pad(ids, tok.pad_token_id, side), _pad([[1] * len(i) for i in ids], 0, side),
                _pad([a for _, a in ex], -100, "right"))
    ids = [i + a for i, a in ex]
    labels = [[-100] * len(i) + a for i, a in ex]
    return (_pad(ids, tok.pad_token_id, side), _pad([[1] * len(r) for r in ids], 0, side),
            _pad(labels, -100, side))


# ------------------------------------------------------------ plain equations
def _plain_attempt(m: ATTEMPTPrompt, x: torch.Tensor) -> torch.Tensor:
    """ATTEMPT's instance prompt (paper section 3, Eqs. 1-4) for one input x [n, d]."""
    d = x.shape[1]
    pooled = torch.stack([max(x[i, c] for i in range(x.shape[0])) for c in range(d)])
    z = m.w_down @ pooled
    z = z * (1 / (1 + torch.exp(-z)))  # SiLU
    u = m.w_up @ z
    mean = u.sum() / d
    var = ((u - mean) ** 2).sum() / d
    h = (u - mean) / torch.sqrt(var + 1e-5) * m.norm_weight + m.norm_bias  # nn.LayerNorm eps
    prompts = [*m.source_prompts, m.target_prompt]  # [sources; target]
    scores = []
    for p in prompts:
        key = torch.stack([max(p[i, c] for i in range(p.shape[0])) for c in range(d)])
        scores.append((key * h).sum() / m.temperature)
    top = max(scores)
    exps = [torch.exp(s - top) for s in scores]
    total = sum(exps)
    mixture = sum((e / total) * p for e, p in zip(exps, prompts, strict=True))
    return m.target_prompt + mixture


def _plain_dept(m: DePTPrompt, x: torch.Tensor) -> torch.Tensor:
    """DePT's updated input embeddings (paper section 2) for one input x [n, d]:
    row i gains (alpha / sqrt(k)) * sum_j A[i, j] B[j]."""
    upd = m.input_update
    k = upd.lora_a.shape[1]
    rows = []
    for i in range(x.shape[0]):
        delta = sum(upd.lora_a[i, j] * upd.lora_b[j] for j in range(k))
        rows.append(x[i] + upd.scaling * delta)
    return torch.stack(rows)


def _reference_loss(bb, module, method: str, examples) -> torch.Tensor:
    """Token-mean answer NLL, every example alone and unpadded."""
    embed = bb.model.get_input_embeddings()
    nll, count = torch.zeros((), dtype=torch.float64), 0
    for ids, answer in examples:
        x = embed(torch.tensor(ids))  # [n, d], the real input tokens only
        if method == "attempt":
            prompt, x_in = _plain_attempt(module, x), x
        else:
            prompt, x_in = module.prompt, _plain_dept(module, x)
        if bb.family == "seq2seq":
            start = bb.model.config.decoder_start_token_id
            dec = torch.tensor([[start] + answer[:-1]])
            logits = bb.model(inputs_embeds=torch.cat([prompt, x_in]).unsqueeze(0),
                              decoder_input_ids=dec).logits[0]
            logp = torch.log_softmax(logits, -1)
            for t, tok in enumerate(answer):
                nll = nll - logp[t, tok]
        else:
            a = embed(torch.tensor(answer))  # the answer tokens: not the method's input
            seq = torch.cat([prompt, x_in, a]).unsqueeze(0)
            logp = torch.log_softmax(bb.model(inputs_embeds=seq).logits[0], -1)
            before = prompt.shape[0] + len(ids)  # position before - 1 predicts answer[0]
            for t, tok in enumerate(answer):
                nll = nll - logp[before - 1 + t, tok]
        count += len(answer)
    return nll / count


def _attempt(bb, n_sources: int = 3, seed: int = 0) -> ATTEMPTPrompt:
    d = bb.hidden_size
    g = torch.Generator().manual_seed(seed)
    m = ATTEMPTPrompt(torch.randn(n_sources, R, d, generator=g), torch.randn(R, d, generator=g),
                      attention_dim=5, temperature=0.7 * d, init_std=0.5, seed=seed, train_norm=True)
    with torch.no_grad():  # off the (1, 0) start so the layer norm's tensors matter
        m.norm_weight.add_(0.3 * torch.randn(d, generator=g))
        m.norm_bias.add_(0.3 * torch.randn(d, generator=g))
    return m.double()


def _dept(bb, seed: int = 0) -> DePTPrompt:
    d = bb.hidden_size
    g = torch.Generator().manual_seed(seed)
    m = DePTPrompt(torch.randn(R, d, generator=g), max_length=24, rank=3, alpha=8.0, seed=seed)
    with torch.no_grad():  # B starts at zero; give it values so A's gradient is not zero
        m.input_update.lora_b.copy_(0.2 * torch.randn(3, d, generator=g))
    return m.double()


CASES = [("t5", "right"), ("llama", "right"), ("llama", "left")]


@pytest.mark.parametrize("method", ["attempt", "dept"])
@pytest.mark.parametrize(("key", "side"), CASES)
def test_matches_plain_reference_f64(tiny_checkpoints, method, key, side):
    bb = _backbone(tiny_checkpoints, key)
    tok = _tok(tiny_checkpoints)
    module = _attempt(bb) if method == "attempt" else _dept(bb)
    params = [p for p in module.parameters() if p.requires_grad]
    ref = _reference_loss(bb, module, method, _examples(tok, bb.family))
    ref_grads = torch.autograd.grad(ref, params)
    ids, mask, labels = _batch(tok, bb.family, side)
    assert mask.eq(0).any()  # the batch is padded
    out = PromptedModel(bb, module)(ids, mask, labels)
    grads = torch.autograd.grad(out.loss, params)
    torch.testing.assert_close(out.loss, ref, atol=ATOL, rtol=0)
    names = [n for n, p in module.named_parameters() if p.requires_grad]
    for name, g, rg in zip(names, grads, ref_grads, strict=True):
        assert rg.abs().sum() > 0, name  # every trainable tensor matters
        torch.testing.assert_close(g, rg, atol=ATOL, rtol=0, msg=name)


def test_attempt_weights_depend_on_the_instance(tiny_checkpoints):
    bb = _backbone(tiny_checkpoints, "t5")
    tok = _tok(tiny_checkpoints)
    module = _attempt(bb)
    ids, mask, labels = _batch(tok, "seq2seq", "right")
    PromptedModel(bb, module)(ids, mask, labels)
    w = module.last_weights
    assert w.shape == (3, 4)  # 3 rows, 3 sources + the target
    torch.testing.assert_close(w.sum(-1), torch.ones(3, dtype=w.dtype), atol=1e-12, rtol=0)
    assert (w[0] - w[1]).abs().max() > 1e-6


def test_attempt_pool_padding_follows_the_release(tiny_checkpoints):
    """pool_padding=true (the release) lets pad embeddings into the max-pool;
    the default does not, so a row's prompt is the same however it is padded."""
    bb = _backbone(tiny_checkpoints, "t5")
    module = _attempt(bb)
    emb = torch.randn(1, 6, bb.hidden_size, dtype=torch.float64)
    short, long_ = torch.ones(1, 6, dtype=torch.bool), torch.ones(1, 6, dtype=torch.bool)
    long_[0, 4:] = False
    alone = module(emb[:, :4], short[:, :4])
    torch.testing.assert_close(module(emb, long_), alone, atol=1e-12, rtol=0)
    module.pool_padding = True
    assert (module(emb, long_) - alone).abs().max() > 1e-8


def test_attempt_pad_embedding_pool_is_the_releases_pad_to_max_length(tiny_checkpoints):
    """pool_pad_embedding: each row's pool is what the release's max-pool over
    the row padded to max length (the pad token's embedding after the real
    tokens) gives, whatever the batch's own padding."""
    bb = _backbone(tiny_checkpoints, "t5")
    d = bb.hidden_size
    g = torch.Generator().manual_seed(3)
    pad = torch.randn(d, generator=g).double()  # fp32 values: the module keeps an fp32 copy
    base = _attempt(bb)
    module = ATTEMPTPrompt(base.source_prompts, base.target_prompt.detach(), attention_dim=5,
                           temperature=base.temperature, seed=0, pad_embedding=pad).double()
    module.load_state_dict(base.state_dict(), strict=False)
    emb = torch.randn(2, 5, d, generator=g, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    release = base  # the release: pool over every position of rows padded to length 8
    release.pool_padding = True
    padded = torch.cat([emb, pad.expand(2, 3, d)], 1).clone()
    padded[1, 3:] = pad
    want = release(padded, torch.ones(2, 8, dtype=torch.bool))
    torch.testing.assert_close(module(emb, mask), want, atol=1e-12, rtol=0)
    assert (module(emb, mask) - base(emb, torch.ones_like(mask))).abs().max() > 1e-8


def test_dept_input_past_max_length_is_kept_without_update(tiny_checkpoints):
    """A 30-token input with dept.max_length=24 runs (it used to raise): rows
    0..23 get A B's rows, the tail passes unchanged (the release's tokenizer
    cuts at max_length, ZhengxiangShi/DePT train.py ~311-313)."""
    bb = _backbone(tiny_checkpoints, "t5")
    module = _dept(bb)
    upd = module.input_update
    emb = torch.randn(1, 30, bb.hidden_size, dtype=torch.float64)
    out = upd(emb, torch.arange(30).unsqueeze(0), 30)
    delta = (upd.lora_a @ upd.lora_b) * upd.scaling
    torch.testing.assert_close(out[0, :24], emb[0, :24] + delta, atol=1e-12, rtol=0)
    assert torch.equal(out[0, 24:], emb[0, 24:])
    ids = torch.ones(1, 30, dtype=torch.long)
    loss = PromptedModel(bb, module)(ids, torch.ones_like(ids), torch.ones(1, 2, dtype=torch.long)).loss
    assert torch.isfinite(loss)


@pytest.mark.parametrize("method", ["attempt", "dept"])
def test_state_round_trip_and_rebuild(tiny_checkpoints, method):
    """trainable_state -> load_trainable_state, and the method's rebuild from
    what the trainer saves, give the same outputs (resume, predict)."""
    from omegaconf import OmegaConf

    from dtvg_dist.orchestration.config import Recipe

    bb = _backbone(tiny_checkpoints, "llama")
    module = _attempt(bb) if method == "attempt" else _dept(bb)
    cfg = OmegaConf.structured(Recipe)
    cfg.attempt.attention_dim, cfg.attempt.temperature = 5, module.temperature if method == "attempt" else None
    cfg.dept.max_length, cfg.dept.rank = 24, 3
    cfg.attempt.train_norm = True  # _attempt trains its norm
    spec = get_method(method)
    saved = {**module.trainable_state(), **spec.saved_tensors(module)}
    rebuilt = spec.rebuild(saved, cfg).double()
    ids, mask, labels = _batch(_tok(tiny_checkpoints), "causal", "left")
    with torch.no_grad():
        a = PromptedModel(bb, module)(ids, mask, labels).loss
        b = PromptedModel(bb, rebuilt)(ids, mask, labels).loss
    assert float(a) == float(b)
    state = module.trainable_state()
    assert set(state) == {n for n, p in module.named_parameters() if p.requires_grad}
    with pytest.raises(KeyError, match="missing keys"):
        rebuilt.load_trainable_state({k: v for k, v in state.items() if k != next(iter(state))})


def test_t5_base_parameter_counts_are_the_papers():
    """T5-base shape (d = 768, r = 100, no weights loaded). ATTEMPT trains what
    its release trains (AkariAsai/ATTEMPT attempt/utils/utils.py: attn_W_down,
    attn_W_up, prefix_shared): 230,400; the DTVG paper's 232K (Table 2) adds the
    layer norm's 1,536, trained only with train_norm. DePT: PT's 76.8K (60
    tokens, rank 30, max length 256)."""
    d, r = 768, 100
    attempt = ATTEMPTPrompt(torch.zeros(6, r, d), torch.zeros(r, d))
    assert trainable_count(attempt) == 230_400 == r * d + 2 * 100 * d
    names = {n for n, p in attempt.named_parameters() if p.requires_grad}
    assert names == {"target_prompt", "w_down", "w_up"} == set(attempt.trainable_state())
    assert [g["name"] for g in attempt.param_groups(0.3)] == ["prompt", "attention"]
    trained_norm = ATTEMPTPrompt(torch.zeros(6, r, d), torch.zeros(r, d), train_norm=True)
    assert trainable_count(trained_norm) == 231_936 and round(trainable_count(trained_norm) / 1000) == 232
    dept = DePTPrompt(torch.zeros(60, d), max_length=256, rank=30)
    assert trainable_count(dept) == 76_800 == r * d
    assert math.isclose(attempt.temperature, d * math.e)


# The release's per-task DePT values: ZhengxiangShi/DePT checkpoints/<task>/output.log
# (learning_rate, lora_embedding_lr) and adapter_config.json (num_virtual_tokens, r, max_length).
DEPT_RELEASE = {
    "rte": (0.4, 1e-4, 60, 30, 256), "cola": (0.3, 5e-4, 80, 15, 256),
    "boolq": (0.3, 5e-3, 40, 45, 256), "multirc": (0.3, 5e-3, 60, 30, 348),
    "cb": (0.4, 1e-4, 60, 30, 256), "wic": (0.3, 1e-3, 60, 30, 256),
    "qnli": (0.4, 5e-3, 60, 30, 256), "nq": (0.3, 1e-4, 60, 24, 512),
}


def test_dept_print_config_shows_the_releases_per_target_values(capsys):
    """--print-config of a Table 2 recipe run as DePT shows the release's RTE
    rates (0.4 / 1e-4, not MRPC's 0.3 / 5e-3), and every listed target's
    rates and shapes are what the run uses (learning_rates, prompt_state)."""
    from omegaconf import OmegaConf

    from dtvg_dist.orchestration.config import load_recipe
    from dtvg_dist.train import main

    assert main(["recipe=t5-base-dtvg-rte", "method=dept", "--print-config"]) == 0
    printed = OmegaConf.create(capsys.readouterr().out)
    assert (printed.dept.lr, printed.dept.embedding_lr) == (0.4, 1e-4)
    dept = get_method("dept")
    for target, (lr, emb_lr, m, k, length) in DEPT_RELEASE.items():
        cfg = load_recipe(f"t5-base-dtvg-{target}", ["method=dept"])
        assert dept.learning_rates(cfg) == (lr, emb_lr), target
        assert (cfg.dept.prompt_length, cfg.dept.rank, cfg.dept.max_length) == (m, k, length), target
        assert dept.prompt_state(cfg, 100, 768, 0).trainable == m * 768 + length * k + k * 768, target
    assert dept.learning_rates(load_recipe("t5-base-dtvg-rte", [])) == (0.4, 1e-4)  # not optim.lr
    # what `reproduce ... --dry-run` prints above each DePT job
    note = dept.describe(load_recipe("t5-base-dtvg-cola", ["method=dept"]))
    assert note == "DePT on cola: prompt lr 0.3, A/B lr 0.0005, m 80, k 15, max_length 256"
