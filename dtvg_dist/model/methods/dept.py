"""DePT (Shi and Lipani, 2024): a shorter soft prompt plus a low-rank update
of the input token embeddings, trained with two learning rates.

Paper, section 2: with E [s, d] the frozen token embeddings of an input of s
positions (s <= max_length), A [max_length, k] and B [k, d],

    E' = E + (alpha / sqrt(k)) * (A B)[:s]          (position-wise update)
    input = [P ; E'],  P [m, d] the soft prompt

with m d + max_length k + k d = r d trainable elements, PT's budget (T5-base,
r = 100, max_length 256: m = 60, k = 30 gives 76,800). The scaling and
initialisation are the release's: ZhengxiangShi/DePT,
peft/tuners/prompt_tuning_lora.py (PromptEmbeddingLoRA: A kaiming-uniform,
B zeros, scaling = lora_alpha / sqrt(r), lines 134-139) and peft/peft_model.py
line 834 (``inputs_embeds += scaling * (lora_embedding_A @ lora_embedding_B)``).

Where this differs from the release: the release pads every input to
max_length and adds row p of A B to position p of the padded sequence; here
row p goes to the p-th real token (the same for right-padded T5 inputs; for
left-padded Llama inputs the release's rows would shift with the padding).
For causal models the release's forward adds the update to every position,
the answer tokens of teacher forcing included (peft/peft_model.py line 1081),
while its generate updates only the prompt given (line 1194); here only the
input tokens are updated in both, so training sees what generation sees.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from dtvg_dist.costs import PromptState
from dtvg_dist.model.methods.base import BuildContext, Built, Method
from dtvg_dist.model.prompt import PromptModule


@dataclass
class DeptSettings:
    """Recipe keys ``dept.*``. The release tunes them per task: every
    t5-base-dtvg-<target> recipe sets its target's values from
    ZhengxiangShi/DePT checkpoints/<task>/output.log and adapter_config.json.
    The defaults here are the release's MRPC run (checkpoints/mrpc/)."""

    # The soft prompt's rate; None: optim.lr. A recipe key of its own because
    # optim.lr is shared with the other methods (DTVG's C.7 rate) while DePT's
    # differs per task (RTE: output.log learning_rate=0.4).
    lr: float | None = None

    prompt_length: int = 60  # m: adapter_config.json "num_virtual_tokens": 60
    # k; None: the largest k within PT's budget r d, floor((r - m) d / (max_length + d)),
    # which is the release's 30 for T5-base (adapter_config.json "r": 30).
    rank: int | None = None
    max_length: int = 256  # rows of A: adapter_config.json "max_length": 256
    alpha: float = 8.0  # scaling alpha / sqrt(k): adapter_config.json "lora_alpha": 8
    embedding_lr: float = 5e-3  # A and B: output.log lora_embedding_lr=0.005
    # The release starts the prompt from the text "Classify this text is
    # postive or not:" repeated (adapter_config.json prompt_tuning_init TEXT);
    # here it starts from the first m rows of the bank's P_init (a vocabulary
    # sample, the start every other method of the trainer shares).


def dept_rank(settings: Any, r: int, d: int) -> int:
    """The rank of A and B: ``dept.rank``, or PT's budget (see DeptSettings)."""
    if settings.rank is not None:
        return int(settings.rank)
    rank = (r - int(settings.prompt_length)) * d // (int(settings.max_length) + d)
    if rank < 1:
        raise ValueError(
            f"DePT: PT's budget (prompt.length={r} rows of width {d}) leaves no rank for A and B "
            f"with dept.prompt_length={settings.prompt_length} and dept.max_length="
            f"{settings.max_length}; set dept.rank or shorten dept.prompt_length"
        )
    return rank


class LowRankEmbeddingUpdate(nn.Module):
    """E -> E + scaling * (A B)[position] at every position in [0, max_length).

    Positions at or past ``max_length`` pass unchanged. The release never has
    them: its tokenizer truncates every input to max_seq_length = max_length
    (ZhengxiangShi/DePT train.py lines 311-313, ``truncation=True``), and the
    recipes set dept.max_length to the task's max_source_length (256, 348 for
    MultiRC, 512 for MRQA, as checkpoints/<task>/adapter_config.json), so the
    data path's truncation is the release's. A recipe with a shorter
    dept.max_length keeps the tail tokens without an update instead of
    failing (the release would drop them)."""

    def __init__(self, max_length: int, rank: int, d: int, alpha: float, seed: int,
                 device: torch.device | None = None) -> None:
        super().__init__()
        gen = torch.Generator(device="cpu").manual_seed(int(seed))  # same start on every rank
        a = torch.empty(max_length, rank)
        # kaiming_uniform_(a=sqrt(5)) on [max_length, k] is U(-1/sqrt(k), 1/sqrt(k))
        nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=gen)
        self.lora_a = nn.Parameter(a.to(device))
        self.lora_b = nn.Parameter(torch.zeros(rank, d, device=device))
        self.scaling = alpha / math.sqrt(rank)

    def forward(self, inputs_embeds: Tensor, positions: Tensor, length: int) -> Tensor:
        """``positions`` [B, S]: index from the first real token, -1: no update;
        ``length``: the longest input of the batch (known on the host)."""
        max_length = self.lora_a.shape[0]
        if length > max_length:  # host-side: no device sync when every input fits
            positions = positions.masked_fill(positions >= max_length, -1)
        rows = self.lora_a[positions.clamp(min=0)]  # [B, S, k]
        delta = ((rows @ self.lora_b) * self.scaling).masked_fill((positions < 0).unsqueeze(-1), 0.0)
        return inputs_embeds + delta.to(inputs_embeds.dtype)


class DePTPrompt(PromptModule):
    """A soft prompt [m, d] and the low-rank update of the input embeddings."""

    def __init__(self, prompt_init: Tensor, max_length: int, rank: int, alpha: float = 8.0,
                 seed: int = 0) -> None:
        super().__init__()
        if prompt_init.dim() != 2:
            raise ValueError(f"DePTPrompt init must be [m, d], got {tuple(prompt_init.shape)}")
        self.prompt = nn.Parameter(prompt_init.detach().to(torch.float32).clone())
        self.input_update = LowRankEmbeddingUpdate(
            max_length, rank, prompt_init.shape[1], alpha, seed, device=prompt_init.device
        )

    def forward(self, inputs_embeds: Tensor | None = None, attention_mask: Tensor | None = None) -> Tensor:
        # A new tensor, not the parameter: ZeRO-3 may free the parameter's
        # storage when this forward returns (seen with tiny Llama).
        return self.prompt.clone()

    second_group = "embedding_update"

    def second_rate_params(self) -> list[nn.Parameter]:
        """A and B at the second rate (the paper's two rates); the prompt at ``lr``."""
        return [self.input_update.lora_a, self.input_update.lora_b]


class DePT(Method):
    name = "dept"
    title = "DePT"
    source = ("Shi and Lipani, 2024, DePT: Decomposed Prompt Tuning for Parameter-Efficient "
              "Fine-tuning (release ZhengxiangShi/DePT)")
    uses_sources = False
    static_prompt = False
    settings_key = "dept"
    peft_adapter = None
    peft_refusal = ("PEFT has no adapter type for DePT (a soft prompt plus a low-rank update of the "
                    "input embeddings; its PROMPT_TUNING_LORA type exists only in DePT's own fork "
                    "of PEFT)")

    def build(self, ctx: BuildContext) -> Built:
        s: DeptSettings = ctx.settings
        init = ctx.target.p_init[: s.prompt_length].to(ctx.device)
        rank = dept_rank(s, ctx.run.prompt_length, int(init.shape[1]))
        module = DePTPrompt(init, s.max_length, rank, s.alpha, seed=ctx.run.seed)
        return Built(module, {"dept_prompt_length": s.prompt_length, "dept_rank": rank,
                              "dept_max_length": s.max_length})

    def learning_rates(self, cfg: Any) -> tuple[float, float]:
        lr = cfg.dept.lr
        return float(cfg.optim.lr if lr is None else lr), float(cfg.dept.embedding_lr)

    def prompt_state(self, cfg: Any, r: int, d: int, n_sources: int) -> PromptState:
        s = cfg.dept
        m, k, n = int(s.prompt_length), dept_rank(s, r, d), int(s.max_length)
        return PromptState(m * d + n * k + k * d, 0, max(m * d, n * k, k * d))

    def prompt_tokens(self, cfg: Any) -> int:
        return int(cfg.dept.prompt_length)

    def saved_tensors(self, module: nn.Module) -> dict[str, Tensor]:
        assert isinstance(module, DePTPrompt)
        return {"soft_prompt": module.prompt.detach().float().clone()}

    def rebuild(self, tensors: dict[str, Tensor], cfg: Any) -> nn.Module:
        s = cfg.dept
        a = tensors["input_update.lora_a"]
        module = DePTPrompt(tensors["prompt"], int(a.shape[0]), int(a.shape[1]), s.alpha)
        module.load_trainable_state({k: tensors[k] for k in module.trainable_state()})
        return module

    def describe(self, cfg: Any) -> str:
        s = cfg.dept
        lr, emb_lr = self.learning_rates(cfg)
        rank = s.rank if s.rank is not None else "PT's budget"
        return (f"DePT on {cfg.target_task}: prompt lr {lr:g}, A/B lr {emb_lr:g}, "
                f"m {s.prompt_length}, k {rank}, max_length {s.max_length}")

    def check(self, cfg: Any) -> str | None:
        s = cfg.dept
        for key in ("prompt_length", "rank", "max_length"):
            if getattr(s, key) is not None and getattr(s, key) <= 0:
                return f"dept.{key}={getattr(s, key)!r} must be > 0"
        if s.prompt_length > cfg.prompt.length:
            return (f"dept.prompt_length={s.prompt_length} is longer than prompt.length="
                    f"{cfg.prompt.length} (DePT's prompt starts from the first rows of P_init)")
        if s.rank is None and s.prompt_length >= cfg.prompt.length:
            return (f"dept.rank is unset (PT's budget) but dept.prompt_length={s.prompt_length} "
                    f"leaves none of prompt.length={cfg.prompt.length} rows for A and B; set dept.rank")
        if s.lr is not None and s.lr <= 0:
            return f"dept.lr={s.lr!r} must be > 0"
        if s.embedding_lr <= 0:
            return f"dept.embedding_lr={s.embedding_lr!r} must be > 0"
        return None
