"""ATTEMPT (Asai et al., 2022): an attentional mixture of frozen source
prompts and a trained target prompt, computed per instance.

Paper, section 3: with X the input token embeddings and P_1..P_t the source
prompts (here the bank's stage-1 prompts P* = P_init + T, frozen) and P_{t+1}
the target prompt (trained),

    x^ = max-pool over tokens of X                      [d]
    h  = LayerNorm(W_up SiLU(W_down x^))                [d]   (W_down: d -> 100)
    p^_j = max-pool over the r rows of P_j              [d]
    a_j = softmax_j(p^_j . h / T),  j = 1..t+1
    P_instance = P_{t+1} + sum_{j=1}^{t+1} a_j P_j      [r, d]

Trainable: the target prompt, W_down and W_up, as the release trains them:
AkariAsai/ATTEMPT attempt/utils/utils.py (freeze_model_params,
``attn_method == "sub"``) turns requires_grad on for
``encoder.attn_W_down.weight``, ``encoder.attn_W_up.weight`` and
``prefix_shared`` only, so the layer norm stays at its (1, 0) start:
r d + 2 * 100 d = 230,400 trained at T5-base (the paper's 232K adds the
norm's 2 d = 1,536, which its code does not train). ``attempt.train_norm``
trains the norm too. The release (modeling_t5.py, T5Stack, lines 1071-1159)
computes the same forward; where it differs (pooling over pad positions, the
target's initialisation) the setting below names it.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dtvg_dist.costs import PromptState
from dtvg_dist.model.methods.base import BuildContext, Built, Method
from dtvg_dist.model.prompt import PromptModule

TARGET_INITS = ("first_source", "p_init")


@dataclass
class AttemptSettings:
    """Recipe keys ``attempt.*``."""

    # Bottleneck of the attention module: modeling_t5.py line 933
    # (nn.Linear(model_dim, 100, bias=False)).
    attention_dim: int = 100
    # Softmax temperature; None: d * e, which is the release's 2087 for T5-base
    # (attempt/configs/attempt/sinlge_task.json "temperature": 2087 = 768 e).
    temperature: float | None = None
    # Rate of the attention module; None: optim.lr. The release's
    # attn_learning_rate (attempt/options.py, default None) is the same switch.
    attention_lr: float | None = None
    # Target prompt start. first_source: the first source prompt, as the
    # release's single-task training does (attempt/run_seq2seq.py line 182,
    # model.update_prefix_weights_single(shared_params[0])); p_init: the
    # bank's P_init (a vocabulary sample, as init_prefix_from_vocab).
    target_init: str = "first_source"
    # The release max-pools over every position of the padded input
    # (modeling_t5.py line 1072, torch.max(inputs_embeds, 1), with
    # pad_to_max_length); false pools only the real tokens, so the result does
    # not depend on how a batch is padded (and 2 processes equal 1).
    pool_padding: bool = False
    # The release pads every row to max_source_length (sinlge_task.json
    # "pad_to_max_length": true), so its max-pool sees the pad token's
    # embedding in every row shorter than that. True adds the pad embedding to
    # every row's pool (independent of the batch's padding, so 2 processes
    # still equal 1); the release differs only for a row of exactly
    # max_source_length tokens.
    pool_pad_embedding: bool = False
    # The release keeps the layer norm after W_up frozen at (1, 0)
    # (attempt/utils/utils.py, freeze_model_params); true trains it.
    train_norm: bool = False
    # W_down / W_up start N(0, init_std): the release's _init_weights for
    # nn.Linear (modeling_t5.py line 870). The layer norm starts at (1, 0).
    init_std: float = 0.01


class ATTEMPTPrompt(PromptModule):
    """Per-instance prompt: the target prompt plus an attention mixture."""

    def __init__(
        self,
        source_prompts: Tensor,
        target_init: Tensor,
        attention_dim: int = 100,
        temperature: float | None = None,
        init_std: float = 0.01,
        seed: int = 0,
        pool_padding: bool = False,
        source_names: list[str] | None = None,
        train_norm: bool = False,
        pad_embedding: Tensor | None = None,
    ) -> None:
        super().__init__()
        if source_prompts.dim() != 3 or tuple(source_prompts.shape[1:]) != tuple(target_init.shape):
            raise ValueError(
                f"ATTEMPTPrompt: source prompts {tuple(source_prompts.shape)} do not match "
                f"the target prompt {tuple(target_init.shape)} (want [n, r, d] and [r, d])"
            )
        r, d = target_init.shape
        f32, dev = torch.float32, target_init.device
        self.source_names = list(source_names or [f"source{i}" for i in range(len(source_prompts))])
        self.temperature = float(temperature) if temperature is not None else d * math.e
        self.pool_padding = pool_padding
        self.register_buffer("source_prompts", source_prompts.detach().to(f32).clone())
        self.target_prompt = nn.Parameter(target_init.detach().to(f32).clone())
        gen = torch.Generator(device="cpu").manual_seed(int(seed))  # same start on every rank
        self.w_down = nn.Parameter(torch.randn(attention_dim, d, generator=gen).mul_(init_std).to(dev))
        self.w_up = nn.Parameter(torch.randn(d, attention_dim, generator=gen).mul_(init_std).to(dev))
        self.train_norm = bool(train_norm)
        for name, value in (("norm_weight", torch.ones(d, dtype=f32, device=dev)),
                            ("norm_bias", torch.zeros(d, dtype=f32, device=dev))):
            if self.train_norm:
                setattr(self, name, nn.Parameter(value))
            else:  # frozen as in the release: a buffer, not a parameter
                self.register_buffer(name, value)
        if pad_embedding is not None:
            if tuple(pad_embedding.shape) != (d,):
                raise ValueError(f"ATTEMPTPrompt: pad_embedding must be [{d}], got {tuple(pad_embedding.shape)}")
            self.register_buffer("pad_embedding", pad_embedding.detach().to(f32).clone())
        else:
            self.pad_embedding = None
        self.last_weights: Tensor | None = None

    def attention(self, inputs_embeds: Tensor, attention_mask: Tensor | None) -> Tensor:
        """a [B, n + 1]: the softmax weights over [sources; target] per instance."""
        x = inputs_embeds.to(self.target_prompt.dtype)
        if attention_mask is not None and not self.pool_padding:
            x = x.masked_fill(~attention_mask.bool().unsqueeze(-1), float("-inf"))
        pooled = x.max(dim=1).values  # [B, d]
        if self.pad_embedding is not None:  # the release's pad-to-max-length rows
            pooled = torch.maximum(pooled, self.pad_embedding.to(pooled.dtype))
        h = F.linear(F.silu(F.linear(pooled, self.w_down)), self.w_up)
        h = F.layer_norm(h, (h.shape[-1],), self.norm_weight, self.norm_bias)
        prompts = torch.cat([self.source_prompts, self.target_prompt.unsqueeze(0)])  # [n+1, r, d]
        keys = prompts.max(dim=1).values  # [n + 1, d]
        return torch.softmax(h @ keys.T / self.temperature, dim=-1)

    def forward(self, inputs_embeds: Tensor | None = None, attention_mask: Tensor | None = None) -> Tensor:
        if inputs_embeds is None:
            raise ValueError(
                "ATTEMPT's prompt depends on the input: call it with the token embeddings "
                "(PromptedModel does)"
            )
        weights = self.attention(inputs_embeds, attention_mask)
        self.last_weights = weights.detach()
        prompts = torch.cat([self.source_prompts, self.target_prompt.unsqueeze(0)])
        mixture = torch.einsum("bj,jrd->brd", weights, prompts)
        return self.target_prompt.unsqueeze(0) + mixture  # [B, r, d]

    def attention_params(self) -> list[nn.Parameter]:
        norm = [self.norm_weight, self.norm_bias] if self.train_norm else []
        return [self.w_down, self.w_up, *norm]

    second_group = "attention"

    def second_rate_params(self) -> list[nn.Parameter]:
        """The attention module at the second rate; the target prompt at ``lr``."""
        return self.attention_params()


def pad_embedding(backbone: Any) -> Tensor:
    """The pad token's input embedding [d] (fp32), gathered first where ZeRO-3
    partitions the table."""
    model = backbone.model
    pad_id = model.config.pad_token_id
    if pad_id is None:
        raise ValueError(f"attempt.pool_pad_embedding: backbone {backbone.name} has no pad token")
    weight = model.get_input_embeddings().weight
    gather: Any = contextlib.nullcontext()
    if hasattr(weight, "ds_id"):  # a ZeRO-3 partitioned parameter
        import deepspeed

        gather = deepspeed.zero.GatheredParameters([weight])
    with gather, torch.no_grad():
        return weight[int(pad_id)].detach().float().clone()


class ATTEMPT(Method):
    name = "attempt"
    title = "ATTEMPT"
    source = ("Asai et al., 2022, ATTEMPT: Parameter-Efficient Multi-task Tuning via Attentional "
              "Mixtures of Soft Prompts (release AkariAsai/ATTEMPT)")
    static_prompt = False
    settings_key = "attempt"
    peft_adapter = None
    peft_refusal = ("PEFT has no adapter type for ATTEMPT's per-instance attentional mixture of "
                    "prompts (its prompt depends on each input, PROMPT_TUNING holds one fixed prompt)")

    def build(self, ctx: BuildContext) -> Built:
        s: AttemptSettings = ctx.settings
        sources = ctx.sources
        stacked = torch.stack([e.prompt for e in sources]).to(ctx.device)
        init = stacked[0] if s.target_init == "first_source" else ctx.target.p_init.to(ctx.device)
        pad = pad_embedding(ctx.backbone).to(ctx.device) if s.pool_pad_embedding else None
        module = ATTEMPTPrompt(
            stacked, init, attention_dim=s.attention_dim, temperature=s.temperature,
            init_std=s.init_std, seed=ctx.run.seed, pool_padding=s.pool_padding,
            source_names=[e.task for e in sources], train_norm=s.train_norm, pad_embedding=pad,
        )
        return Built(module, {"source_tasks": list(ctx.run.source_tasks),
                              "attempt_temperature": module.temperature,
                              "attempt_target_init": s.target_init,
                              "attempt_train_norm": bool(s.train_norm),
                              "attempt_pool_pad_embedding": bool(s.pool_pad_embedding)})

    def learning_rates(self, cfg: Any) -> tuple[float, float]:
        lr = float(cfg.optim.lr)
        return lr, float(cfg.attempt.attention_lr) if cfg.attempt.attention_lr is not None else lr

    def prompt_state(self, cfg: Any, r: int, d: int, n_sources: int) -> PromptState:
        k = int(cfg.attempt.attention_dim) if cfg is not None else 100
        norm = 2 * d if cfg is not None and cfg.attempt.train_norm else 0
        return PromptState(r * d + 2 * k * d + norm, n_sources * r * d + 2 * d - norm, r * d)

    def saved_tensors(self, module: nn.Module) -> dict[str, Tensor]:
        assert isinstance(module, ATTEMPTPrompt)
        out = {"soft_prompt": module.target_prompt.detach().float().clone(),
               "source_prompts": module.source_prompts.detach().float().clone()}
        if module.pad_embedding is not None:
            out["pad_embedding"] = module.pad_embedding.detach().float().clone()
        return out

    def rebuild(self, tensors: dict[str, Tensor], cfg: Any) -> nn.Module:
        s = cfg.attempt
        module = ATTEMPTPrompt(
            tensors["source_prompts"], tensors["target_prompt"], attention_dim=s.attention_dim,
            temperature=s.temperature, pool_padding=s.pool_padding, train_norm=s.train_norm,
            pad_embedding=tensors.get("pad_embedding"),
        )
        module.load_trainable_state({k: tensors[k] for k in module.trainable_state()})
        return module

    def describe(self, cfg: Any) -> str:
        s = cfg.attempt
        lr, attn_lr = self.learning_rates(cfg)
        return (f"ATTEMPT: prompt lr {lr:g}, attention lr {attn_lr:g}, norm "
                f"{'trained' if s.train_norm else 'frozen'}, pool "
                f"{'+ pad embedding' if s.pool_pad_embedding else 'real tokens'}, eps "
                f"{cfg.optim.stage2_eps if cfg.optim.stage2_eps is not None else cfg.optim.eps:g}")

    def check(self, cfg: Any) -> str | None:
        s = cfg.attempt
        if s.target_init not in TARGET_INITS:
            return f"attempt.target_init={s.target_init!r} is not one of {', '.join(TARGET_INITS)}"
        if s.attention_dim <= 0:
            return f"attempt.attention_dim={s.attention_dim!r} must be > 0"
        if s.temperature is not None and s.temperature <= 0:
            return f"attempt.temperature={s.temperature!r} must be > 0"
        return None
