"""dtvg_dist.costs: the byte arithmetic against independent counts
(instantiated models, the tensors autograd saves, bitsandbytes' 8-bit
layout, ZeRO-3's per-rank slices) and the config lookup."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from dtvg_dist import costs as memory
from dtvg_dist.costs import (
    KNOWN_CONFIGS,
    ModelShape,
    PlanError,
    Step,
    activations,
    weight_bytes,
    zero3_elements_per_rank,
)

LLAMA = {
    "model_type": "llama", "vocab_size": 1000, "hidden_size": 64, "intermediate_size": 176,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "tie_word_embeddings": False,
}
T5 = {
    "model_type": "t5", "vocab_size": 1000, "d_model": 64, "d_ff": 176, "d_kv": 16,
    "num_layers": 2, "num_decoder_layers": 3, "num_heads": 4, "decoder_start_token_id": 0,
    "dropout_rate": 0.0,
}
SHAPES = {
    "llama": LLAMA,
    "llama-tied-mha-bias": {**LLAMA, "tie_word_embeddings": True, "num_key_value_heads": 4,
                            "attention_bias": True, "mlp_bias": True, "head_dim": 8},
    "t5": T5,
    "t5-gated-gelu-untied": {**T5, "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False},
    "t5-gated-silu": {**T5, "feed_forward_proj": "gated-silu"},
}


def build(config: dict, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    values = dict(config)
    model_type = values.pop("model_type")
    hf = AutoConfig.for_model(model_type, **values)
    cls = AutoModelForSeq2SeqLM if model_type == "t5" else AutoModelForCausalLM
    torch.manual_seed(0)
    return cls.from_config(hf, attn_implementation="sdpa").to(dtype)


# ------------------------------------------------------------------ weights
@pytest.mark.parametrize("name", sorted(SHAPES))
def test_parameter_bytes_equal_an_instantiated_model(name: str) -> None:
    model = build(SHAPES[name], torch.bfloat16)
    shape = ModelShape.from_config(SHAPES[name])
    assert shape.parameters() == sum(p.numel() for p in model.parameters())
    assert weight_bytes(shape, 2) == sum(p.numel() * p.element_size() for p in model.parameters())


@pytest.mark.parametrize("name", ["HuggingFaceTB/SmolLM2-135M", "meta-llama/Llama-3.2-1B", "t5-base"])
def test_known_shapes_count_like_transformers(name: str) -> None:
    """The known configs' parameter counts equal transformers' (meta device, no memory)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    config = dict(KNOWN_CONFIGS[name][0])
    model_type = config.pop("model_type")
    cls = AutoModelForSeq2SeqLM if model_type == "t5" else AutoModelForCausalLM
    with torch.device("meta"):
        model = cls.from_config(AutoConfig.for_model(model_type, **config))
    expected = sum(p.numel() for p in model.parameters())
    assert ModelShape.from_config(KNOWN_CONFIGS[name][0]).parameters() == expected
    if name == "HuggingFaceTB/SmolLM2-135M":
        assert expected == 134_515_008  # the total its model card tooling prints


@pytest.mark.parametrize("name", ["llama", "t5-gated-gelu-untied"])
def test_8bit_weight_bytes_match_bitsandbytes_layout(name: str, tmp_path: Path) -> None:
    """LLM.int8 as transformers loads it: int8 linears with one fp32 scale
    (SCB) per output row; embeddings, norms, the head and T5's wo in the dtype."""
    pytest.importorskip("bitsandbytes")
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, BitsAndBytesConfig

    config = SHAPES[name]
    build(config).save_pretrained(tmp_path / "m")
    cls = AutoModelForSeq2SeqLM if config["model_type"] == "t5" else AutoModelForCausalLM
    model = cls.from_pretrained(
        tmp_path / "m", quantization_config=BitsAndBytesConfig(load_in_8bit=True),
        device_map={"": "cpu"}, dtype=torch.bfloat16,
    )
    measured = 0
    for p in model.parameters():
        measured += p.numel() * p.element_size()
        scb = getattr(p, "SCB", None)
        if scb is not None:
            measured += scb.numel() * scb.element_size()
    assert weight_bytes(ModelShape.from_config(config), 2, load_in_8bit=True) == measured


def test_zero3_rank_share_against_a_hand_count() -> None:
    """A ceil(n / world) slice of every tensor, plus whole copies of the small ones."""
    model = build(LLAMA)
    shape = ModelShape.from_config(LLAMA)
    for world, threshold in ((1, 0), (3, 64), (4, 5000)):
        part = sum(math.ceil(p.numel() / world) for p in model.parameters())
        whole = sum(p.numel() for p in model.parameters() if p.numel() <= threshold)
        assert zero3_elements_per_rank(shape, world, threshold) == (part, whole)


# -------------------------------------------------------------- activations
def saved_by_autograd(config: dict, dtype: torch.dtype, checkpointing: bool, batch: int,
                      length: int, target: int) -> int:
    """Bytes of the distinct storages autograd keeps from one forward with
    frozen weights and an input that needs a gradient (as the prompt does),
    right-padded like a training batch."""
    model = build(config, dtype)
    model.requires_grad_(False)
    model.train()
    if checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    d = model.get_input_embeddings().embedding_dim
    gen = torch.Generator().manual_seed(0)
    embeds = torch.randn(batch, length, d, generator=gen).to(dtype).requires_grad_()
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[0, length - 5:] = 0
    kwargs: dict = {}
    if config["model_type"] == "t5":
        labels = torch.randint(0, config["vocab_size"], (batch, target), generator=gen)
    else:
        labels = torch.randint(0, config["vocab_size"], (batch, length), generator=gen)
        labels[:, : length // 2] = -100
        kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
    weights = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in weights:
            seen.setdefault(ptr, t.untyped_storage().nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(inputs_embeds=embeds, attention_mask=mask, labels=labels, **kwargs)
    return sum(seen.values())


@pytest.mark.parametrize("name", ["llama", "t5", "t5-gated-gelu-untied", "t5-gated-silu"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("checkpointing", [False, True], ids=["full", "ckpt"])
def test_saved_activations_equal_what_autograd_keeps(name, dtype, checkpointing) -> None:
    config = SHAPES[name]
    batch, length, target = 3, 40, 6
    measured = saved_by_autograd(config, dtype, checkpointing, batch, length, target)
    shape = ModelShape.from_config(config)
    size = 4 if dtype == torch.float32 else 2
    if shape.family == "causal":
        step = Step(batch, length, 0, batch * length, size, checkpointing)
    else:
        step = Step(batch, length, target, batch * target, size, checkpointing)
    assert activations(shape, step).saved == measured


def test_llama_activation_formula_by_hand() -> None:
    """One case written out term by term (fp32, no checkpointing)."""
    b, t, d, h, hd, inter, layers, v = 2, 10, 64, 4, 16, 176, 2, 1000
    norm = b * t * d * 4 + b * t * 4
    attention = 4 * b * h * t * hd * 4 + b * h * t * 4 + b * t * t * 4
    mlp = 3 * b * t * inter * 4
    layer = 2 * norm + attention + mlp
    saved = layers * layer + 2 * b * t * hd * 4 + norm + b * t * v * 4 + b * t * 8 + 4
    est = activations(ModelShape.from_config(LLAMA), Step(b, t, 0, b * t, 4))
    assert est.saved == saved
    assert est.peak == saved + max(b * t * v * (4 + 8), layer)


# -------------------------------------------------------------- configs
def test_config_from_a_local_folder(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(LLAMA))
    config, source = memory.find_model_config({"name_or_path": str(tmp_path), "config": None})
    assert config == LLAMA and source.endswith("config.json")


def test_config_from_the_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    repo = tmp_path / "models--someone--tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "config.json").write_text(json.dumps(T5))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    config, source = memory.find_model_config({"name_or_path": "someone/tiny", "config": None})
    assert config == T5 and "cache" in source


def test_missing_config_names_the_key_and_the_download(tmp_path: Path, monkeypatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(PlanError) as err:
        memory.find_model_config({"name_or_path": "t5-small", "config": None})
    message = str(err.value)
    assert "backbone.name_or_path='t5-small'" in message
    assert "hf download t5-small config.json" in message


def test_unknown_architecture_is_refused() -> None:
    with pytest.raises(PlanError, match="model_type='gpt2'"):
        ModelShape.from_config({"model_type": "gpt2"})


# ------------------------------------------------------------------- FLOPs
@pytest.mark.parametrize("family", ["llama", "t5"])
def test_forward_flops_equal_torch_flop_counter(family) -> None:
    """costs.forward_flops against torch's own count of the matmuls of a
    forward pass (eager attention, so the score and value products count)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    from dtvg_dist.costs import ModelShape, forward_flops

    if family == "llama":
        config = dict(model_type="llama", vocab_size=96, hidden_size=32, intermediate_size=64,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=128, tie_word_embeddings=False)
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config), attn_implementation="eager")
        inputs = {"input_ids": torch.zeros(1, 20, dtype=torch.long)}
        source, target = 20, 0
    else:
        config = dict(model_type="t5", vocab_size=96, d_model=32, d_kv=8, d_ff=64, num_layers=2,
                      num_decoder_layers=3, num_heads=4, feed_forward_proj="gated-gelu",
                      tie_word_embeddings=False)
        model = AutoModelForSeq2SeqLM.from_config(AutoConfig.for_model(**config))
        inputs = {"input_ids": torch.zeros(1, 20, dtype=torch.long),
                  "decoder_input_ids": torch.zeros(1, 5, dtype=torch.long)}
        source, target = 20, 5
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(**inputs)
    assert forward_flops(ModelShape.from_config(config), source, target) == counter.get_total_flops()


def test_gpu_hours_and_the_cards() -> None:
    from dtvg_dist.costs import GPU_PEAK_BF16, PlanError, gpu_hours, train_step_flops  # noqa: F401

    assert GPU_PEAK_BF16["a100-80gb"][0] == 312e12  # dense: half the sparsity figure, 624
    assert GPU_PEAK_BF16["h100-80gb"][0] == 1979e12 / 2
    assert gpu_hours(312e12 * 0.5 * 3600, "a100-80gb", 0.5) == pytest.approx(1.0)
    with pytest.raises(PlanError, match="--gpu 'v100'"):
        gpu_hours(1.0, "v100")
    with pytest.raises(PlanError, match="--mfu"):
        gpu_hours(1.0, "a100-80gb", 0.0)
