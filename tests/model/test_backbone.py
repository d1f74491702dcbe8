"""Backbone loading: config / local folder, both families, frozen, errors; toy tokenizer."""

from __future__ import annotations

import logging

import pytest
import torch
from omegaconf import OmegaConf
from transformers import AutoTokenizer

from dtvg_dist.model import backbone as backbone_mod
from dtvg_dist.model.backbone import (
    BackboneSettings,
    choose_attn_implementation,
    config_name,
    cpu_has_native_bf16,
    load_backbone,
)
from dtvg_dist.model.toy_tokenizer import build_toy_tokenizer

FAMILIES = [("t5", "seq2seq"), ("llama", "causal")]


def _config(key: str, tiny_t5_config: dict, tiny_llama_config: dict) -> dict:
    return dict(tiny_t5_config if key == "t5" else tiny_llama_config)


@pytest.mark.parametrize(("key", "family"), FAMILIES)
def test_load_from_config(key, family, tiny_t5_config, tiny_llama_config, tiny_checkpoints, caplog):
    cfg = _config(key, tiny_t5_config, tiny_llama_config)
    with caplog.at_level(logging.INFO, logger="dtvg_dist.model.backbone"):
        bb = load_backbone(
            BackboneSettings(config=cfg, tokenizer=str(tiny_checkpoints.tokenizer)), device="cpu"
        )
    assert bb.family == family
    assert bb.attn_implementation == "sdpa"
    assert bb.dtype == torch.float32
    assert bb.hidden_size == 32
    assert bb.name == config_name(cfg, 0) and bb.name.startswith(f"config:{key}-")
    assert all(not p.requires_grad for p in bb.model.parameters())
    assert bb.tokenizer.pad_token_id == 0 and bb.tokenizer.eos_token_id == 1
    assert "attn_implementation=sdpa" in caplog.text and "dtype=torch.float32" in caplog.text


@pytest.mark.parametrize(("key", "family"), FAMILIES)
def test_load_from_local_folder(key, family, tiny_t5_config, tiny_llama_config, tiny_checkpoints):
    folder = tiny_checkpoints.path(key)
    bb = load_backbone(BackboneSettings(name_or_path=str(folder), family=family), device="cpu")
    assert bb.family == family
    assert bb.name == f"tiny-{key}"
    assert all(not p.requires_grad for p in bb.model.parameters())
    # Same seed, same weights: the saved checkpoint equals a fresh config build.
    fresh = load_backbone(BackboneSettings(config=_config(key, tiny_t5_config, tiny_llama_config)))
    for (n, a), b in zip(
        bb.model.state_dict().items(), fresh.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), n
    ids = bb.tokenizer("good movie", return_tensors="pt").input_ids
    assert ids[0, -1].item() == bb.tokenizer.eos_token_id


def test_init_seed_changes_weights_and_name(tiny_llama_config):
    a = load_backbone(BackboneSettings(config=tiny_llama_config, init_seed=0))
    b = load_backbone(BackboneSettings(config=tiny_llama_config, init_seed=1))
    assert a.name != b.name
    wa, wb = a.model.get_input_embeddings().weight, b.model.get_input_embeddings().weight
    assert not torch.equal(wa, wb)
    assert a.tokenizer is None  # config build without a tokenizer is allowed


def test_bf16_and_options(tiny_llama_config):
    bb = load_backbone(
        BackboneSettings(
            config=tiny_llama_config,
            dtype="bf16",
            attn_implementation="eager",
            gradient_checkpointing=True,
        )
    )
    assert bb.dtype == torch.bfloat16
    assert bb.model.get_input_embeddings().weight.dtype == torch.bfloat16
    assert bb.attn_implementation == "eager"
    assert any(getattr(m, "gradient_checkpointing", False) for m in bb.model.modules())


@pytest.mark.parametrize("native", [False, True])
@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
def test_bf16_on_cpu_that_emulates_it_warns(tiny_llama_config, monkeypatch, caplog, native, dtype):
    monkeypatch.setattr(backbone_mod, "cpu_has_native_bf16", lambda: native)
    with caplog.at_level(logging.WARNING, logger="dtvg_dist.model.backbone"):
        load_backbone(BackboneSettings(config=tiny_llama_config, dtype=dtype), device="cpu")
    warned = "bf16 matmuls are emulated" in caplog.text
    assert warned == (dtype == "bf16" and not native)
    if warned:
        assert "emulated" in caplog.text and "Set backbone.dtype=fp32" in caplog.text


@pytest.mark.parametrize(
    ("probes", "flags", "expected"),
    [
        ((False, False), {"avx2", "fma"}, False),  # AVX2-only EPYC: emulated
        ((False, False), {"avx512f", "avx512_bf16"}, True),
        ((False, False), {"amx_bf16", "amx_tile"}, True),
        ((False, False), {"asimd", "bf16"}, True),  # Arm with BF16
        ((True, False), set(), True),  # torch's cpuinfo probe: AVX512-BF16
        ((False, True), set(), True),  # torch's cpuinfo probe: AMX
    ],
)
def test_cpu_has_native_bf16(monkeypatch, probes, flags, expected):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: probes[0], raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: probes[1], raising=False)
    monkeypatch.setattr(backbone_mod, "_cpu_flags", lambda: set(flags))
    assert cpu_has_native_bf16() is expected


def test_structured_config_node(tiny_llama_config):
    node = OmegaConf.merge(
        OmegaConf.structured(BackboneSettings), {"config": tiny_llama_config, "dtype": "bf16"}
    )
    settings = OmegaConf.to_object(node)
    assert isinstance(settings, BackboneSettings) and settings.config["hidden_size"] == 32
    # A DictConfig in the config field is accepted too and names identically.
    assert load_backbone(node).name == config_name(tiny_llama_config, 0)


def test_flash_attention_request_is_a_clear_error(tiny_llama_config):
    with pytest.raises(ValueError, match=r"attn_implementation='flash_attention_2'.*'auto'"):
        load_backbone(
            BackboneSettings(
                config=tiny_llama_config, dtype="bf16", attn_implementation="flash_attention_2"
            )
        )


def test_auto_attention_choice():
    class NoSdpa:
        _supports_sdpa = False

    class Both:
        _supports_sdpa = True
        _supports_flash_attn = True

    cpu = torch.device("cpu")
    assert choose_attn_implementation("auto", Both, torch.bfloat16, cpu) == "sdpa"
    assert choose_attn_implementation("auto", NoSdpa, torch.float32, cpu) == "eager"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, r"exactly one of backbone.name_or_path"),
        ({"name_or_path": "x/y", "config": {"model_type": "t5"}}, r"exactly one"),
        ({"config": {"model_type": "t5"}, "dtype": "fp8"}, r"backbone.dtype='fp8'"),
        ({"config": {"model_type": "t5"}, "family": "encoder"}, r"backbone.family='encoder'"),
        (
            {"config": {"model_type": "t5"}, "attn_implementation": "fast"},
            r"attn_implementation='fast'",
        ),
        ({"config": {"hidden_size": 8}}, r"'model_type'"),
        (
            {"name_or_path": "/no/such/folder"},
            r"backbone.name_or_path='/no/such/folder'.*not found",
        ),
        (
            {"config": {"model_type": "t5"}, "tokenizer": "./missing-tok"},
            r"backbone.tokenizer='./missing-tok'",
        ),
        ({"config": {"model_type": "t5"}, "load_in_8bit": True}, r"load_in_8bit"),
    ],
)
def test_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_backbone(BackboneSettings(**kwargs))


def test_family_mismatch(tiny_checkpoints):
    with pytest.raises(ValueError, match=r"backbone.family='causal'"):
        load_backbone(BackboneSettings(name_or_path=str(tiny_checkpoints.t5), family="causal"))


def test_tokenizer_larger_than_vocab(tiny_llama_config, tmp_path):
    build_toy_tokenizer([f"w{i}" for i in range(80)], str(tmp_path))
    with pytest.raises(ValueError, match=r"backbone.tokenizer=.*84 tokens.*64 rows"):
        load_backbone(BackboneSettings(config=tiny_llama_config, tokenizer=str(tmp_path)))


def test_toy_tokenizer_round_trip(tmp_path, toy_words):
    tok = build_toy_tokenizer(toy_words + ["it's"], str(tmp_path))
    assert [tok.pad_token_id, tok.eos_token_id, tok.unk_token_id, tok.bos_token_id] == [0, 1, 2, 3]
    again = AutoTokenizer.from_pretrained(str(tmp_path))
    assert again.get_vocab() == tok.get_vocab()
    assert (again.pad_token, again.eos_token, again.unk_token, again.bos_token) == (
        "<pad>",
        "</s>",
        "<unk>",
        "<s>",
    )
    text = "the movie was not good"
    ids = again(text).input_ids
    assert ids[-1] == 1 and 2 not in ids
    assert again.decode(ids, skip_special_tokens=True) == text
    assert again.decode(again("it's zork").input_ids) == "it ' s <unk> </s>"
    again.padding_side = "left"
    batch = again(["good", "a good movie"], padding=True, return_tensors="pt")
    assert batch.input_ids[0].tolist() == [0, 0, again.convert_tokens_to_ids("good"), 1]
    assert batch.attention_mask[0].tolist() == [0, 0, 1, 1]


def test_load_in_8bit_cpu(tiny_checkpoints):
    pytest.importorskip("bitsandbytes")
    from dtvg_dist.model.prompt import PromptedModel, SoftPrompt, sample_p_init

    bb = load_backbone(
        BackboneSettings(name_or_path=str(tiny_checkpoints.llama), load_in_8bit=True), device="cpu"
    )
    assert any(type(m).__name__ == "Linear8bitLt" for m in bb.model.modules())
    assert all(not p.requires_grad for p in bb.model.parameters())
    prompt = SoftPrompt(sample_p_init(bb.model.get_input_embeddings().weight, 4, seed=0)[0])
    enc = bb.tokenizer(["good movie", "the plot"], padding=True, return_tensors="pt")
    PromptedModel(bb, prompt)(enc.input_ids, enc.attention_mask, enc.input_ids).loss.backward()
    assert prompt.prompt.dtype == torch.float32 and torch.isfinite(prompt.prompt.grad).all()
    assert prompt.prompt.grad.abs().sum() > 0


# ---- a hub id this machine cannot get ----------------------------------------------------------
def test_uncached_hub_id_offline_is_one_clear_error(monkeypatch, tmp_path):
    """Before transformers builds anything: the key, the id and how to fetch the files."""
    from dtvg_dist.model.backbone import BackboneUnavailable

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(BackboneUnavailable) as err:
        load_backbone(BackboneSettings(name_or_path="google-t5/t5-small"), device="cpu")
    message = str(err.value)
    assert "\n" not in message
    for needle in ("backbone.name_or_path='google-t5/t5-small'", "not in the local hub cache", "offline",
                   "huggingface-cli download google-t5/t5-small --local-dir DIR", "backbone.name_or_path=DIR"):
        assert needle in message


def test_resolve_pretrained_says_where_config_and_tokenizer_come_from(tiny_checkpoints, tmp_path):
    from dtvg_dist.model.backbone import BackboneUnavailable, resolve_pretrained

    where = resolve_pretrained(BackboneSettings(name_or_path=str(tiny_checkpoints.t5)))
    assert where == {"config": f"local folder {tiny_checkpoints.t5}", "tokenizer": f"local folder {tiny_checkpoints.t5}"}
    with pytest.raises(BackboneUnavailable, match=r"backbone\.tokenizer='someone/tok'.*--local-dir DIR"):
        resolve_pretrained(BackboneSettings(name_or_path=str(tiny_checkpoints.t5), tokenizer="someone/tok"))
