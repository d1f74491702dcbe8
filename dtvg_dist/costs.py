"""What a frozen backbone costs in memory, computed from its config alone.

The byte arithmetic behind ``python -m dtvg_dist.plan``: parameter tensors
of the Llama and T5 architectures (whole, 8-bit, or ZeRO-3 shares), the
activations one training step keeps for backward, generation's cache, and
the soft prompt's state. No weights are read; a config comes from the
recipe, a local folder, the Hugging Face cache or :data:`KNOWN_CONFIGS`.

The activation counts follow what autograd keeps in transformers' Llama and
T5 code when only the input (the soft prompt) needs a gradient: a frozen
``nn.Linear`` keeps no input, so per layer what is kept is the RMSNorm
inputs (in fp32), the attention inputs and output, its log-sum-exp and mask
or bias, and the MLP's activation inputs. tests/analysis/test_memory.py checks them
byte for byte against the tensors autograd saves in tiny models, and
bench/plan_memory.py against a real step's peak memory.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dtvg_dist.errors import RecipeError
from dtvg_dist.utils import to_plain

GIB = 1024**3


class PlanError(RecipeError):
    """A recipe, config or option the planner cannot work with."""


# ------------------------------------------------------------------ configs
# Shapes of the paper's backbones, for when neither a local folder nor the
# Hugging Face cache has their config.json. Every number is the one in the
# hub's config.json (URL beside it); copies checked in public repositories
# are named, since the hub itself is not reachable from here.
KNOWN_CONFIGS: dict[str, tuple[dict[str, Any], str]] = {
    "HuggingFaceTB/SmolLM2-135M": (
        {
            "model_type": "llama", "vocab_size": 49152, "hidden_size": 576,
            "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
            "num_key_value_heads": 3, "head_dim": 64, "hidden_act": "silu",
            "rms_norm_eps": 1e-5, "rope_theta": 100000, "tie_word_embeddings": True,
            "max_position_embeddings": 8192,
        },
        "https://huggingface.co/HuggingFaceTB/SmolLM2-135M/blob/main/config.json "
        "(copy printed in satyasundar/erav3-s13 README.md; 134,515,008 parameters)",
    ),
    "meta-llama/Llama-3.2-1B": (
        {
            "model_type": "llama", "vocab_size": 128256, "hidden_size": 2048,
            "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
            "num_key_value_heads": 8, "head_dim": 64, "hidden_act": "silu",
            "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "tie_word_embeddings": True,
            "max_position_embeddings": 131072,
        },
        "https://huggingface.co/meta-llama/Llama-3.2-1B/blob/main/config.json "
        "(copies: kevinstephano/thunder_model_blocks hf_llama/llama_config.py, hub commit "
        "4e20de36 of the -Instruct twin; oumi configs/recipes/llama3_2/README.md)",
    ),
    "meta-llama/Llama-3.2-3B": (
        {
            "model_type": "llama", "vocab_size": 128256, "hidden_size": 3072,
            "intermediate_size": 8192, "num_hidden_layers": 28, "num_attention_heads": 24,
            "num_key_value_heads": 8, "head_dim": 128, "hidden_act": "silu",
            "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "tie_word_embeddings": True,
            "max_position_embeddings": 131072,
        },
        "https://huggingface.co/meta-llama/Llama-3.2-3B/blob/main/config.json "
        "(copy: oumi configs/recipes/llama3_2/README.md, as vendored in xtoazt/aeroai)",
    ),
    "meta-llama/Meta-Llama-3-8B": (
        {
            "model_type": "llama", "vocab_size": 128256, "hidden_size": 4096,
            "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
            "num_key_value_heads": 8, "hidden_act": "silu", "rms_norm_eps": 1e-5,
            "rope_theta": 500000.0, "tie_word_embeddings": False,
            "max_position_embeddings": 8192,
        },
        "https://huggingface.co/meta-llama/Meta-Llama-3-8B/blob/main/config.json "
        "(copies: a config.json test fixture found by code search; oumi "
        "configs/recipes/llama3_1/README.md for the same 8B architecture)",
    ),
    "t5-base": (
        {
            "model_type": "t5", "vocab_size": 32128, "d_model": 768, "d_kv": 64, "d_ff": 3072,
            "num_layers": 12, "num_decoder_layers": 12, "num_heads": 12,
            "relative_attention_num_buckets": 32, "feed_forward_proj": "relu",
            "dropout_rate": 0.1, "tie_word_embeddings": True,
        },
        "https://huggingface.co/google-t5/t5-base/blob/main/config.json (shapes: T5 paper, "
        "Raffel et al. 2020, section 3.1.1; vocabulary 32128 and ReLU FF as printed by "
        "T5ForConditionalGeneration in dasarpai/old.dasarpai.github.io "
        "_draft/DS/2023-08-29-T5-Architecture.md)",
    ),
}
KNOWN_CONFIGS["google-t5/t5-base"] = KNOWN_CONFIGS["t5-base"]
KNOWN_CONFIGS["HuggingFaceTB/SmolLM2-135M-Instruct"] = KNOWN_CONFIGS["HuggingFaceTB/SmolLM2-135M"]


def _hub_cache_config(repo_id: str) -> str | None:
    """Path of ``config.json`` for ``repo_id`` in the local Hugging Face cache, or None."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers depends on it
        return None
    try:
        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # noqa: BLE001 - an id that is not a valid repo name is simply absent
        return None
    return found if isinstance(found, str) else None


def find_model_config(backbone: Any) -> tuple[dict[str, Any], str]:
    """The backbone's config as a dict, and where it came from.

    ``backbone.config`` (config-built and synthetic backbones) first, then
    ``backbone.name_or_path`` as a local folder, then the Hugging Face cache,
    then :data:`KNOWN_CONFIGS`. Nothing is downloaded.
    """
    node = dict(backbone) if not isinstance(backbone, dict) else backbone
    if node.get("config") is not None:

        return dict(to_plain(node["config"])), "backbone.config of the recipe"
    name = node.get("name_or_path")
    if not name:
        raise PlanError("backbone: the recipe sets neither backbone.name_or_path nor backbone.config")
    folder = Path(os.path.expanduser(str(name)))
    if folder.is_dir():
        path = folder / "config.json"
        if not path.is_file():
            raise PlanError(f"backbone.name_or_path={name!r}: the folder has no config.json")
        return json.loads(path.read_text()), f"{path}"
    cached = _hub_cache_config(str(name))
    if cached is not None:
        return json.loads(Path(cached).read_text()), f"Hugging Face cache ({cached})"
    if name in KNOWN_CONFIGS:
        config, source = KNOWN_CONFIGS[name]
        return dict(config), f"known shape, {source.split()[0]}"
    raise PlanError(
        f"backbone.name_or_path={name!r}: its config.json is not available offline (not a local "
        "folder, not in the Hugging Face cache, not one of the known shapes "
        f"{', '.join(sorted(KNOWN_CONFIGS))}). Get it with `hf download {name} config.json` "
        f"(or `huggingface-cli download {name} config.json`), which puts it in the cache, or "
        "point the planner at a folder holding it: backbone.name_or_path=/path/to/folder"
    )


# ------------------------------------------------------------------- shapes
# B*T*I-sized tensors autograd keeps per MLP activation when the weights are
# frozen (see _ffn_saved): what the activation function itself keeps.
_ACT_KEEPS = {"relu": "output", "silu": "input", "gelu": "input", "gelu_pytorch_tanh": "input",
              "gelu_new": "gelu_new"}


@dataclass(frozen=True)
class ModelShape:
    """The few numbers of a Llama or T5 config that memory depends on."""

    model_type: str
    family: str  # "causal" | "seq2seq"
    vocab: int
    hidden: int
    layers: int  # decoder layers (causal) or encoder layers (T5)
    decoder_layers: int  # T5 only (0 for causal)
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    activation: str
    gated: bool
    tied: bool
    attention_bias: bool = False
    mlp_bias: bool = False
    buckets: int = 0  # T5 relative attention buckets
    dropout: float = 0.0  # T5 dropout_rate (Llama: attention_dropout, 0)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ModelShape:
        """From a config.json dict; transformers fills the defaults it would use."""
        from transformers import AutoConfig

        values = dict(config)
        model_type = values.pop("model_type", None)
        if model_type not in ("llama", "t5"):
            raise PlanError(
                f"backbone config model_type={model_type!r}: the planner models the Llama and "
                "T5 architectures (model_type 'llama' or 't5')"
            )
        for key in ("architectures", "_name_or_path", "transformers_version", "torch_dtype", "dtype"):
            values.pop(key, None)
        hf = AutoConfig.for_model(model_type, **values)
        if model_type == "llama":
            act = str(hf.hidden_act)
            shape = cls(
                model_type="llama", family="causal", vocab=hf.vocab_size, hidden=hf.hidden_size,
                layers=hf.num_hidden_layers, decoder_layers=0, heads=hf.num_attention_heads,
                kv_heads=hf.num_key_value_heads or hf.num_attention_heads,
                head_dim=getattr(hf, "head_dim", None) or hf.hidden_size // hf.num_attention_heads,
                intermediate=hf.intermediate_size, activation=act, gated=True,
                tied=bool(hf.tie_word_embeddings), attention_bias=bool(hf.attention_bias),
                mlp_bias=bool(hf.mlp_bias), dropout=float(hf.attention_dropout or 0.0),
            )
        else:
            shape = cls(
                model_type="t5", family="seq2seq", vocab=hf.vocab_size, hidden=hf.d_model,
                layers=hf.num_layers, decoder_layers=hf.num_decoder_layers, heads=hf.num_heads,
                kv_heads=hf.num_heads, head_dim=hf.d_kv, intermediate=hf.d_ff,
                activation=str(hf.dense_act_fn), gated=bool(hf.is_gated_act),
                tied=bool(hf.tie_word_embeddings), buckets=hf.relative_attention_num_buckets,
                dropout=float(hf.dropout_rate),
            )
        if shape.activation not in _ACT_KEEPS:
            raise PlanError(
                f"backbone config: activation {shape.activation!r} is not modelled "
                f"(known: {', '.join(sorted(_ACT_KEEPS))})"
            )
        return shape

    # ---- parameters
    def tensors(self) -> list[tuple[str, int, bool]]:
        """(name, elements, is an 8-bit candidate) for every parameter tensor,
        as transformers builds the model (tied weights once). The 8-bit
        candidates are the linear layers bitsandbytes quantises: all but the
        output head and, for T5, ``wo`` (its ``_keep_in_fp32_modules``)."""
        d, hd = self.hidden, self.head_dim
        out: list[tuple[str, int, bool]] = []
        if self.family == "causal":
            q, kv = self.heads * hd, self.kv_heads * hd
            out.append(("embed", self.vocab * d, False))
            for i in range(self.layers):
                p = f"layers.{i}."
                for name, n_in, n_out, bias in (
                    ("q", d, q, self.attention_bias), ("k", d, kv, self.attention_bias),
                    ("v", d, kv, self.attention_bias), ("o", q, d, self.attention_bias),
                    ("gate", d, self.intermediate, self.mlp_bias),
                    ("up", d, self.intermediate, self.mlp_bias),
                    ("down", self.intermediate, d, self.mlp_bias),
                ):
                    out.append((p + name, n_in * n_out, True))
                    if bias:
                        out.append((p + name + ".bias", n_out, False))
                out += [(p + "norm1", d, False), (p + "norm2", d, False)]
            out.append(("norm", d, False))
        else:
            inner, ff = self.heads * hd, self.intermediate
            out.append(("shared", self.vocab * d, False))
            wi = [("wi_0", d * ff), ("wi_1", d * ff)] if self.gated else [("wi", d * ff)]
            for stack, n_layers, n_attn in (("encoder", self.layers, 1), ("decoder", self.decoder_layers, 2)):
                for i in range(n_layers):
                    p = f"{stack}.{i}."
                    for a in range(n_attn):
                        out += [(f"{p}attn{a}.{m}", d * inner, True) for m in ("q", "k", "v", "o")]
                        out.append((f"{p}attn{a}.norm", d, False))
                    if i == 0:
                        out.append((p + "relative_attention_bias", self.buckets * self.heads, False))
                    out += [(p + name, n, True) for name, n in wi]
                    out += [(p + "wo", ff * d, False), (p + "ff.norm", d, False)]
                out.append((stack + ".final_norm", d, False))
        if not self.tied:
            out.append(("lm_head", self.vocab * d, False))
        return out

    def parameters(self) -> int:
        return sum(n for _, n, _ in self.tensors())

    def int8_rows(self) -> int:
        """Output rows of the 8-bit linears: one fp32 scale (SCB) each."""
        rows = 0
        if self.family == "causal":
            q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
            rows = self.layers * (q + 2 * kv + self.hidden + 2 * self.intermediate + self.hidden)
        else:
            inner = self.heads * self.head_dim
            n_wi = 2 if self.gated else 1
            rows = (self.layers + 2 * self.decoder_layers) * (3 * inner + self.hidden)
            rows += (self.layers + self.decoder_layers) * n_wi * self.intermediate
        return rows


# ----------------------------------------------------------------- weights
def weight_bytes(shape: ModelShape, dtype_bytes: int, load_in_8bit: bool = False) -> int:
    """Bytes of one whole copy of the backbone. 8-bit (bitsandbytes LLM.int8):
    int8 linears plus one fp32 scale per output row, the rest in the dtype."""
    if not load_in_8bit:
        return shape.parameters() * dtype_bytes
    int8 = sum(n for _, n, q in shape.tensors() if q)
    rest = shape.parameters() - int8
    return int8 + 4 * shape.int8_rows() + rest * dtype_bytes


def zero3_elements_per_rank(shape: ModelShape, world: int, threshold: int) -> tuple[int, int]:
    """(partition, persistent) backbone elements one ZeRO-3 rank holds: its
    ceil(n / world) slice of every tensor (DeepSpeed pads each tensor to a
    multiple of the world size), plus, after the first forward, a whole copy
    of every tensor at or under ``stage3_param_persistence_threshold``."""
    part = sum(-(-n // world) for _, n, _ in shape.tensors())
    persist = sum(n for _, n, _ in shape.tensors() if n <= threshold)
    return part, persist


# -------------------------------------------------------------- activations
@dataclass(frozen=True)
class Step:
    """One micro-step on one GPU.

    ``source`` is the longest input the model sees including the r prompt
    rows (causal: prompt + source + answer; T5: prompt + source on the
    encoder), ``target`` the T5 decoder length (0 for causal), ``logit_rows``
    the positions whose logits are computed (all positions, or the answer
    tokens only), ``act_bytes`` the activation dtype's size."""

    batch: int
    source: int
    target: int
    logit_rows: int
    act_bytes: int
    checkpointing: bool = False


@dataclass(frozen=True)
class Activations:
    """Bytes of one training step's activations on one GPU.

    ``saved``: what autograd keeps from the forward (layers and loss) when
    the backward starts. ``head``: the logits and loss tensors alive at the
    loss's backward beyond ``saved_head`` (the kept log-softmax). ``layer``:
    the extra working memory of one layer's backward (with checkpointing:
    its recomputed forward too). ``peak = saved + max(head, layer)``."""

    saved_layers: int
    saved_head: int
    head: int
    layer: int

    @property
    def saved(self) -> int:
        return self.saved_layers + self.saved_head

    @property
    def peak(self) -> int:
        return self.saved + max(self.head, self.layer)


def _norm(rows: int, d: int, s: int, keeps_input_copy: bool) -> int:
    """RMSNorm with an fp32 upcast: the fp32 input (a copy unless fp32 already)
    and its rsqrt; T5's also keeps the half-precision input (its multiply)."""
    kept = rows * d * 4 + rows * 4
    if keeps_input_copy and s != 4:
        kept += rows * d * s
    return kept


def _ffn_saved(shape: ModelShape, rows: int, s: int) -> int:
    """MLP tensors kept: the activation's own (relu: its output; silu/gelu: its
    input; the tanh GELU formula 'gelu_new': four), and in a gated MLP also
    the two multiplied branches."""
    keeps = _ACT_KEEPS[shape.activation]
    own = 4 if keeps == "gelu_new" else 1
    # relu's own (its output) is also one of the two multiplied branches
    n = own + 2 - (keeps == "output") if shape.gated else own
    return n * rows * shape.intermediate * s


def _attention(b: int, h: int, tq: int, tk: int, hd: int, s: int) -> int:
    """SDPA (flash / memory-efficient kernels): q, k, v (k and v expanded to
    every head when a padding mask is given), the output and the fp32
    log-sum-exp; the float mask or bias is counted by the caller."""
    return (2 * b * h * tq * hd + 2 * b * h * tk * hd) * s + b * h * tq * 4


def llama_activations(shape: ModelShape, step: Step) -> Activations:
    b, t, s, d = step.batch, step.source, step.act_bytes, shape.hidden
    rows = b * t
    norm = _norm(rows, d, s, keeps_input_copy=False)
    attn = _attention(b, shape.heads, t, t, shape.head_dim, s) + b * t * t * s  # + float mask
    layer = 2 * norm + attn + _ffn_saved(shape, rows, s)
    if step.checkpointing:
        saved = shape.layers * rows * d * s + norm  # each layer's input; the final norm
        working = 2 * layer  # one layer recomputed, then its backward
    else:
        saved = shape.layers * layer + 2 * b * t * shape.head_dim * s + norm  # + RoPE cos, sin
        working = layer
    # transformers' causal loss upcasts the logits to fp32: log-softmax kept
    # (fp32), then at its backward the logits, two fp32 gradients.
    n, v = step.logit_rows, shape.vocab
    saved_head = n * v * 4 + n * 8 + 4
    head = n * v * (s + 8)
    return Activations(saved, saved_head, head, working)


def t5_activations(shape: ModelShape, step: Step) -> Activations:
    b, te, td, s, d = step.batch, step.source, step.target, step.act_bytes, shape.hidden
    h, hd = shape.heads, shape.head_dim
    drop = shape.dropout > 0  # CUDA keeps one bool mask per element of each dropout
    ffn_te, ffn_td = _ffn_saved(shape, b * te, s), _ffn_saved(shape, b * td, s)
    norm_te, norm_td = _norm(b * te, d, s, True), _norm(b * td, d, s, True)
    enc_layer = 2 * norm_te + _attention(b, h, te, te, hd, s) + b * h * te * te * s + ffn_te
    cross = _attention(b, h, td, te, hd, s) + b * h * td * te * s
    self_attn = _attention(b, h, td, td, hd, s) + h * td * td * s  # causal: bias only
    # Decoder block 0: its self-attention sees only the shifted labels (no
    # gradient), so it and the cross-attention's norm keep nothing.
    dec0 = cross + norm_td + ffn_td
    dec = 2 * norm_td + self_attn + cross + norm_td + ffn_td
    if drop:
        enc_layer += b * te * (2 * d + shape.intermediate)
        dec0 += b * td * (2 * d + shape.intermediate)
        dec += b * td * (2 * d + shape.intermediate)
    finals = norm_te + norm_td + (b * te * d + b * td * d + b * te * d if drop else 0)
    if step.checkpointing:
        saved = (shape.layers + 1) * b * te * d * s + shape.decoder_layers * b * td * d * s
        saved += b * te * te + h * te * te * s + b * td * te + h * td * td * s + h * td * te * s
        saved += finals
        working = 2 * max(enc_layer, dec)
    else:
        saved = shape.layers * enc_layer + finals
        if shape.decoder_layers:
            saved += dec0 + (shape.decoder_layers - 1) * dec
        working = max(enc_layer, dec)
    # T5's loss takes the logits as they are (no upcast): log-softmax kept,
    # then at its backward the logits and two gradients, all in the dtype.
    n, v = step.logit_rows, shape.vocab
    saved_head = n * v * s + n * 8 + s
    head = n * v * 3 * s
    return Activations(saved, saved_head, head, working)


def activations(shape: ModelShape, step: Step) -> Activations:
    return llama_activations(shape, step) if shape.family == "causal" else t5_activations(shape, step)


def eval_bytes(shape: ModelShape, batch: int, prompt: int, new_tokens: int, s: int) -> int:
    """Generation without gradients on one GPU: the key/value cache at full
    length, one layer's prefill working set and the last position's logits
    (transformers computes only those while generating)."""
    h, hd, d, ff = shape.heads, shape.head_dim, shape.hidden, shape.intermediate
    if shape.family == "causal":
        t = prompt + new_tokens
        cache = 2 * shape.layers * batch * t * shape.kv_heads * hd * s
        n = batch * prompt
        prefill = n * d * (3 * s + 4) + 4 * batch * h * prompt * hd * s + batch * prompt * prompt * s
        prefill += 3 * n * ff * s
    else:
        te = prompt
        inner = h * hd
        cache = 2 * shape.decoder_layers * batch * (te + new_tokens) * inner * s + batch * te * d * s
        n = batch * te
        prefill = n * d * (3 * s + 4) + 4 * batch * h * te * hd * s + 2 * batch * h * te * te * s
        prefill += (3 if shape.gated else 1) * n * ff * s
    return cache + prefill + 2 * batch * shape.vocab * 4


# -------------------------------------------------------------- the prompt
@dataclass(frozen=True)
class PromptState:
    """The soft prompt's tensors: trainable elements (fp32 in the module) and
    frozen buffer elements (DTVG's P_init and source TPVs)."""

    trainable: int
    buffers: int
    largest: int  # largest trainable tensor (ZeRO-3 keeps it whole)

    @classmethod
    def of(cls, method: str, r: int, d: int, n_sources: int) -> PromptState:
        if method == "dtvg":
            return cls(r * d + r + n_sources * r, (1 + n_sources) * r * d, r * d)
        return cls(r * d, 0, r * d)  # PT, SPoT, and every stage-1 run


def prompt_bytes(p: PromptState, mode: str, world: int) -> int:
    """Per GPU: the prompt, its gradients and AdamW's two states. DDP: fp32
    copies plus DDP's gradient bucket. ZeRO-3 (bf16 config): a bf16 working
    copy and gradient whole, the fp32 master, gradient and Adam states
    partitioned; buffers cast to bf16 with the module."""
    t = p.trainable
    if mode == "zero3":
        return t * 2 + t * 2 + math.ceil(t / world) * (4 + 4 + 8) + p.buffers * 2
    bucket = t * 4 if world > 1 else 0
    return t * 4 + t * 4 + t * 8 + bucket + p.buffers * 4




# -------------------------------------------------------------------- FLOPs
def forward_flops(shape: ModelShape, source: int, target: int) -> float:
    """Matmul FLOPs of one example's forward pass: 2 per weight per token
    through every linear layer and the output head, plus attention's scores
    and weighted sums (4 x query positions x key positions x heads x head_dim
    per layer). `source`: the causal sequence or the T5 encoder input, soft
    prompt included; `target`: the T5 decoder positions (0 for causal)."""
    d, hd = shape.hidden, shape.head_dim
    inner = shape.heads * hd
    n_ff = (3 if shape.gated else 2) * d * shape.intermediate
    head = shape.vocab * d
    if shape.family == "causal":
        kv = shape.kv_heads * hd
        per_layer = d * (inner + 2 * kv) + inner * d + n_ff
        linear = source * (shape.layers * per_layer + head)
        attention = shape.layers * 4 * source * source * inner
        return 2.0 * linear + attention
    encoder = source * shape.layers * (4 * d * inner + n_ff)
    # decoder: self-attention and the cross-attention's q, o on the target;
    # the cross-attention's k, v on the encoder output
    decoder = shape.decoder_layers * (target * (6 * d * inner + n_ff) + source * 2 * d * inner)
    attention = 4 * inner * (shape.layers * source * source
                             + shape.decoder_layers * (target * target + target * source))
    return 2.0 * (encoder + decoder + target * head) + attention


def train_step_flops(shape: ModelShape, examples: int, source: int, target: int,
                     checkpointing: bool = False) -> float:
    """FLOPs of one optimizer step over `examples` (the global batch) with a
    frozen backbone: the forward, and a backward of about the same size (the
    gradients of the activations back to the soft prompt; no weight gradients,
    so not the 2x of full fine-tuning); gradient checkpointing adds a second
    forward. An estimate: elementwise work, norms and softmax are left out."""
    passes = 3 if checkpointing else 2
    return float(examples) * passes * forward_flops(shape, source, target)


# Peak dense BF16 tensor FLOP/s (no 2:4 sparsity) of the cards `--gpu` names,
# from the vendors' data sheets; MFU is the fraction of it a run achieves.
GPU_PEAK_BF16: dict[str, tuple[float, str]] = {
    # NVIDIA A100 datasheet (nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf):
    # BFLOAT16 Tensor Core 312 TFLOPS (624 with sparsity), 40 GB and 80 GB alike
    "a100-40gb": (312e12, "NVIDIA A100 Tensor Core GPU datasheet: BF16 312 TFLOPS dense"),
    "a100-80gb": (312e12, "NVIDIA A100 Tensor Core GPU datasheet: BF16 312 TFLOPS dense"),
    # NVIDIA H100 datasheet: BF16 Tensor Core 1,979 TFLOPS (SXM) and 1,513 (PCIe)
    # "shown with sparsity; specifications 1/2 lower without sparsity"
    "h100-80gb": (989.5e12, "NVIDIA H100 Tensor Core GPU datasheet, SXM: BF16 1,979 TFLOPS with sparsity / 2"),
    "h100-pcie": (756.5e12, "NVIDIA H100 Tensor Core GPU datasheet, PCIe: BF16 1,513 TFLOPS with sparsity / 2"),
    # NVIDIA H200 datasheet lists the H100 SXM's BF16 1,979 TFLOPS with sparsity (unverified here)
    "h200-141gb": (989.5e12, "NVIDIA H200 datasheet: BF16 1,979 TFLOPS with sparsity / 2 (unverified)"),
}
DEFAULT_MFU = 0.4


def gpu_hours(flops: float, gpu: str, mfu: float = DEFAULT_MFU) -> float:
    """GPU-hours `flops` take on `gpu` at model FLOP utilisation `mfu`."""
    if gpu not in GPU_PEAK_BF16:
        raise PlanError(f"--gpu {gpu!r} is not one of {', '.join(GPU_PEAK_BF16)}")
    if not 0 < mfu <= 1:
        raise PlanError(f"--mfu {mfu} must be in (0, 1]")
    return flops / (GPU_PEAK_BF16[gpu][0] * mfu) / 3600.0
