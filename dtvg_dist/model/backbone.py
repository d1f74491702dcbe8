"""Load the frozen backbone (T5 or Llama) that the soft prompt is tuned against.

One entry point, :func:`load_backbone`, turns a :class:`BackboneSettings` node
into a frozen model + tokenizer and records what actually ran (attention
implementation, dtype) so results can report it. Models come from a hub id,
a local folder, or a config dict (random weights; tests and tiny recipes).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from dtvg_dist.errors import BackboneUnavailable, RecipeError
from dtvg_dist.utils import to_plain

logger = logging.getLogger("dtvg_dist.model.backbone")

DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}
FAMILIES = ("auto", "seq2seq", "causal")
ATTN_IMPLEMENTATIONS = ("auto", "sdpa", "eager", "flash_attention_2")


@dataclass
class BackboneSettings:
    """Which backbone to load and how; plain types so OmegaConf can type-check it.

    Exactly one of ``name_or_path`` (hub id or local folder) and ``config``
    (a config dict with ``model_type``, random weights seeded by ``init_seed``).
    """

    name_or_path: str | None = None
    config: dict[str, Any] | None = None
    tokenizer: str | None = None  # default: name_or_path
    family: str = "auto"  # auto | seq2seq | causal
    dtype: str = "fp32"  # fp32 | bf16 | fp16
    attn_implementation: str = "auto"  # auto | sdpa | eager | flash_attention_2
    gradient_checkpointing: bool = False
    load_in_8bit: bool = False
    trust_remote_code: bool = False
    init_seed: int = 0
    # Training loss and rank classification: apply the output head only at the
    # answer positions (same loss); false = logits over the whole sequence.
    answer_only_logits: bool = True


@dataclass
class Backbone:
    """A loaded, frozen backbone and the facts the rest of the package needs."""

    model: nn.Module
    tokenizer: Any  # PreTrainedTokenizerBase, or None for a config-built model without one
    family: str  # "seq2seq" | "causal"
    attn_implementation: str  # what actually ran
    name: str  # stable identity for the TPV bank
    hidden_size: int
    dtype: torch.dtype


def flash_attn_available() -> bool:
    """True when the ``flash_attn`` package can be imported."""
    return importlib.util.find_spec("flash_attn") is not None


def _looks_local(path: str) -> bool:
    """A string that can only be a filesystem path (hub ids are ``name`` or ``org/name``)."""
    return (
        os.path.isabs(path)
        or path.startswith((".", "~"))
        or path.endswith(("/", os.sep))
        or path.count("/") >= 2
        or os.sep != "/"
        and os.sep in path
    )



_CONFIG_FILES = ("config.json",)
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "spiece.model", "tokenizer.model")


def _fetch_from_hub(key: str, repo_id: str, filenames: tuple[str, ...]) -> str:
    """Where one of `filenames` of a model repo is: the hub cache, or the hub
    (the small file is downloaded); BackboneUnavailable otherwise."""
    import huggingface_hub

    for filename in filenames:
        cached = huggingface_hub.try_to_load_from_cache(repo_id, filename)
        if isinstance(cached, str):
            return f"hub cache ({os.path.dirname(cached)})"
    hint = (
        f"On a machine with hub access run `huggingface-cli download {repo_id} --local-dir DIR` "
        f"(or `hf download {repo_id} --local-dir DIR`), copy DIR to this machine and set "
        f"backbone.{key}=DIR"
    )
    from dtvg_dist.data.hub import offline

    if offline("TRANSFORMERS_OFFLINE"):
        raise BackboneUnavailable(
            f"backbone.{key}={repo_id!r} is a hub id that is not in the local hub cache and the hub "
            f"is offline (HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE). {hint}"
        )
    errors = []
    for filename in filenames:
        try:
            huggingface_hub.hf_hub_download(repo_id, filename)
            return f"the hub ({repo_id})"
        except huggingface_hub.errors.EntryNotFoundError:
            continue  # the repo lacks this file; try the next name
        except Exception as err:  # network, auth, unknown repo
            errors.append(f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
            break
    reason = errors[0] if errors else f"none of {', '.join(filenames)} is in the repository"
    raise BackboneUnavailable(
        f"backbone.{key}={repo_id!r}: not in the local hub cache and could not be fetched ({reason}). {hint}"
    )


def resolve_pretrained(settings: BackboneSettings) -> dict[str, str]:
    """Where the backbone's model config and tokenizer come from, checked
    without loading weights: {"config": ..., "tokenizer": ...}.

    A hub id that is neither a local folder nor cached, with the hub offline
    or unreachable, is one BackboneUnavailable naming the key, the id and how
    to fetch the files, instead of a long transformers traceback.
    """
    tok_key = "tokenizer" if settings.tokenizer else "name_or_path"
    checks = [
        ("config", "name_or_path", settings.name_or_path, _CONFIG_FILES),
        ("tokenizer", tok_key, settings.tokenizer or settings.name_or_path, _TOKENIZER_FILES),
    ]
    out: dict[str, str] = {}
    for what, key, value, filenames in checks:
        if value is None:
            continue
        path = os.path.expanduser(value)
        if os.path.isdir(path):
            out[what] = f"local folder {path}"
        elif _looks_local(value):
            raise RecipeError(f"backbone.{key}={value!r}: local folder not found")
        else:
            out[what] = _fetch_from_hub(key, value, filenames)
    return out


def resolve_dtype(name: str) -> torch.dtype:
    """Map a ``dtype`` setting to a torch dtype, or say which values are valid
    (the one dtype table: the planner takes its byte sizes from here too)."""
    if name not in DTYPES:
        raise RecipeError(f"backbone.dtype={name!r} is not one of fp32, bf16, fp16")
    return DTYPES[name]


def family_of(hf_config: Any) -> str:
    """The model family of a transformers config: "seq2seq" (encoder-decoder,
    T5) or "causal" (decoder-only, Llama)."""
    return "seq2seq" if getattr(hf_config, "is_encoder_decoder", False) else "causal"


def config_name(config: Mapping[str, Any], init_seed: int) -> str:
    """Identity of a config-built model: ``config:<model_type>-<sha12>``.

    The hash covers the sorted config JSON and the init seed, because random
    weights differ per seed and TPVs are only valid for the weights they were
    trained against.
    """
    payload = json.dumps({"config": to_plain(config), "init_seed": init_seed}, sort_keys=True)
    sha = hashlib.sha256(payload.encode()).hexdigest()[:12]
    return f"config:{config.get('model_type', 'unknown')}-{sha}"


def validate_settings(s: BackboneSettings) -> None:
    """Raise RecipeError naming the key and value of the first bad setting."""
    if (s.name_or_path is None) == (s.config is None):
        raise RecipeError(
            "backbone: set exactly one of backbone.name_or_path (hub id or local folder) and "
            f"backbone.config (dict for random weights); got name_or_path={s.name_or_path!r}, "
            f"config={'set' if s.config is not None else None}"
        )
    resolve_dtype(s.dtype)
    if s.family not in FAMILIES:
        raise RecipeError(f"backbone.family={s.family!r} is not one of {', '.join(FAMILIES)}")
    if s.attn_implementation not in ATTN_IMPLEMENTATIONS:
        raise RecipeError(
            f"backbone.attn_implementation={s.attn_implementation!r} is not one of "
            f"{', '.join(ATTN_IMPLEMENTATIONS)}"
        )
    if s.config is not None and "model_type" not in s.config:
        raise RecipeError("backbone.config needs a 'model_type' key (e.g. 't5' or 'llama')")
    for key in ("name_or_path", "tokenizer"):
        value = getattr(s, key)
        if (
            value is not None
            and _looks_local(value)
            and not os.path.isdir(os.path.expanduser(value))
        ):
            raise RecipeError(f"backbone.{key}={value!r}: local folder not found")
    if s.load_in_8bit and s.config is not None:
        raise RecipeError(
            "backbone.load_in_8bit=True needs backbone.name_or_path (a saved checkpoint); "
            "save the config-built model with save_pretrained and load that folder"
        )


def choose_attn_implementation(
    requested: str, model_cls: type, dtype: torch.dtype, device: torch.device
) -> str:
    """Resolve ``auto`` and reject a flash-attention request that cannot run.

    auto = flash_attention_2 when flash_attn imports, the device is CUDA, the
    dtype is half precision and the model class supports it; else sdpa (eager
    for a class without sdpa).
    """
    fa2_ok = flash_attn_available() and device.type == "cuda"
    supports_fa2 = bool(getattr(model_cls, "_supports_flash_attn", False))
    supports_sdpa = bool(getattr(model_cls, "_supports_sdpa", False))
    if requested == "flash_attention_2":
        why = None
        if not flash_attn_available():
            why = "the flash_attn package is not installed"
        elif device.type != "cuda":
            why = f"the device is {device.type}, not cuda"
        elif dtype not in (torch.float16, torch.bfloat16):
            why = f"dtype {dtype} is not fp16/bf16"
        elif not supports_fa2:
            why = f"{model_cls.__name__} does not support it"
        if why:
            raise RecipeError(
                f"backbone.attn_implementation='flash_attention_2' cannot run: {why}. "
                "Use attn_implementation='auto' (falls back to sdpa) or 'sdpa'."
            )
        return requested
    if requested == "auto":
        if fa2_ok and supports_fa2 and dtype in (torch.float16, torch.bfloat16):
            return "flash_attention_2"
        return "sdpa" if supports_sdpa else "eager"
    return requested


def _cpu_flags() -> set[str]:
    """The flags of /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_native_bf16() -> bool:
    """True when this CPU has bf16 matrix instructions that torch uses:
    AVX512-BF16 or AMX on x86 (torch.cpu's cpuinfo probes, else the
    /proc/cpuinfo flags avx512_bf16 / amx_bf16), BF16 on Arm (flag bf16)."""
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        fn = getattr(torch.cpu, probe, None)
        if fn is not None and fn():
            return True
    return bool(_cpu_flags() & {"avx512_bf16", "amx_bf16", "bf16"})


def warn_if_bf16_emulated(dtype: torch.dtype, device: torch.device) -> bool:
    """Log a warning when bf16 will run on a CPU that emulates it; True if warned.

    Why: on an AMD EPYC with AVX2 only, one SmolLM2-135M training step took
    251 s in bf16 and 8.4 s in fp32 (docs/many-gpus.md).
    """
    if dtype != torch.bfloat16 or device.type != "cpu" or cpu_has_native_bf16():
        return False
    logger.warning(
        "backbone.dtype=bf16 on a CPU without native bf16 matrix instructions "
        "(no AVX512-BF16 / AMX; torch CPU capability %s): bf16 matmuls are emulated here "
        "and can run many times slower than fp32. Set backbone.dtype=fp32 on this machine.",
        torch.backends.cpu.get_cpu_capability(),
    )
    return True


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _zero3_enabled() -> bool:
    try:
        from transformers.integrations import is_deepspeed_zero3_enabled
    except ImportError:  # pragma: no cover - transformers always has it
        return False
    return bool(is_deepspeed_zero3_enabled())


def load_config(settings: BackboneSettings) -> tuple[Any, str]:
    """The backbone's transformers config (no weights) and its name: from
    backbone.config (random weights) or the checkpoint's config file. Also
    what the data command reads to know the model family."""
    from transformers import AutoConfig

    if settings.config is not None:
        cfg_dict = to_plain(settings.config)
        model_type = cfg_dict.pop("model_type")
        return AutoConfig.for_model(model_type, **cfg_dict), config_name(settings.config, settings.init_seed)
    path = os.path.expanduser(settings.name_or_path)
    hf_config = AutoConfig.from_pretrained(path, trust_remote_code=settings.trust_remote_code)
    return hf_config, os.path.basename(os.path.normpath(path))


def load_tokenizer(settings: BackboneSettings) -> Any:
    """backbone.tokenizer (else the checkpoint's), with EOS as the pad token
    when it has none (Llama-3); None for a config-built model without one."""
    tok_src = settings.tokenizer or settings.name_or_path
    if tok_src is None:
        return None
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(
        os.path.expanduser(tok_src), trust_remote_code=settings.trust_remote_code
    )
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token  # Llama-3 ships no pad token
        logger.info("tokenizer has no pad token; using eos %r", tokenizer.eos_token)
    return tokenizer


def load_backbone(settings: BackboneSettings, device: str | torch.device | None = None) -> Backbone:
    """Load the frozen backbone described by ``settings`` onto ``device``.

    ``device`` defaults to CUDA when available. Under an active DeepSpeed
    ZeRO-3 plugin transformers builds the model inside ``zero.Init`` and the
    model is not moved (``accelerator.prepare`` places it).
    """
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    validate_settings(settings)
    if settings.config is None or settings.tokenizer is not None:
        # Before anything is built: one clear error for a hub id this machine cannot get.
        resolve_pretrained(settings)
    dev = torch.device(device) if device is not None else _default_device()
    dtype = resolve_dtype(settings.dtype)
    trc = settings.trust_remote_code

    hf_config, name = load_config(settings)
    cfg_dict = to_plain(settings.config) if settings.config is not None else {}
    family = family_of(hf_config)
    is_enc_dec = family == "seq2seq"
    if settings.family != "auto" and settings.family != family:
        raise RecipeError(
            f"backbone.family={settings.family!r} but the model config says {family!r} "
            f"(is_encoder_decoder={is_enc_dec})"
        )
    auto_cls = AutoModelForSeq2SeqLM if is_enc_dec else AutoModelForCausalLM
    model_cls = auto_cls._model_mapping.get(type(hf_config), nn.Module)
    attn = choose_attn_implementation(settings.attn_implementation, model_cls, dtype, dev)

    tokenizer = load_tokenizer(settings)

    zero3 = _zero3_enabled()
    if settings.config is not None:
        # Init in fp32 under a private RNG, then cast: the same seed gives the
        # same weights whatever the dtype, and the caller's RNG is untouched.
        # Under ZeRO-3 the parameters are partitioned at construction, so the
        # dtype is given to the constructor instead of cast afterwards.
        init_kwargs: dict[str, Any] = {"attn_implementation": attn, "trust_remote_code": trc}
        if zero3:
            init_kwargs["dtype"] = dtype
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings.init_seed)
            model = auto_cls.from_config(hf_config, **init_kwargs)
        if not zero3:
            model = model.to(device=dev, dtype=dtype)
        if tokenizer is not None:
            # Special-token ids the config left unset come from the tokenizer.
            # Set after init: Llama zeroes the padding_idx row at init, and the
            # weights must not depend on the tokenizer (the name does not).
            for key in ("pad_token_id", "eos_token_id", "bos_token_id"):
                value = getattr(tokenizer, key, None)
                if key not in cfg_dict and value is not None:
                    setattr(model.config, key, value)
                    if getattr(model, "generation_config", None) is not None:
                        setattr(model.generation_config, key, value)
    else:
        kwargs: dict[str, Any] = {
            "dtype": dtype,
            "attn_implementation": attn,
            "trust_remote_code": trc,
        }
        if settings.load_in_8bit:
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
            target: int | str = str(dev)
            if dev.type == "cuda":
                target = dev.index if dev.index is not None else torch.cuda.current_device()
            kwargs["device_map"] = {"": target}
        model = auto_cls.from_pretrained(os.path.expanduser(settings.name_or_path), **kwargs)
        if not settings.load_in_8bit and not zero3:
            model = model.to(dev)

    model.requires_grad_(False)
    if tokenizer is not None and model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id
    if tokenizer is not None and len(tokenizer) > model.get_input_embeddings().num_embeddings:
        raise RecipeError(
            f"backbone.tokenizer={settings.tokenizer or settings.name_or_path!r} has {len(tokenizer)} tokens but the model's "
            f"embedding table has {model.get_input_embeddings().num_embeddings} rows"
        )
    if settings.gradient_checkpointing:
        # Non-reentrant: gradients reach inputs_embeds even though no backbone
        # parameter requires grad.
        ckpt_kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=ckpt_kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=ckpt_kwargs)
        model.config.use_cache = False

    ran_attn = getattr(model.config, "_attn_implementation", None) or attn
    emb = model.get_input_embeddings()
    act_dtype = emb.weight.dtype if emb.weight.dtype.is_floating_point else dtype
    hidden = int(getattr(model.config, "hidden_size", emb.embedding_dim))
    if act_dtype != dtype and not settings.load_in_8bit:
        logger.warning(
            "backbone.dtype=%s was asked for but the model runs in %s "
            "(under ZeRO-3 the DeepSpeed config's bf16/fp16 section decides)",
            settings.dtype,
            act_dtype,
        )
    warn_if_bf16_emulated(act_dtype, dev)
    logger.info(
        "backbone %s: family=%s attn_implementation=%s dtype=%s 8bit=%s grad_ckpt=%s device=%s",
        name,
        family,
        ran_attn,
        act_dtype,
        settings.load_in_8bit,
        settings.gradient_checkpointing,
        dev,
    )
    return Backbone(
        model=model,
        tokenizer=tokenizer,
        family=family,
        attn_implementation=ran_attn,
        name=name,
        hidden_size=hidden,
        dtype=act_dtype,
    )
