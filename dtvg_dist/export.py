"""Command line: python -m dtvg_dist.export RUN_DIR --peft OUT_DIR [--base-model ID_OR_PATH]

Writes a finished run's soft prompt (for DTVG the merged P_mix of the best
checkpoint) as a PEFT prompt-tuning adapter, so the Hugging Face ecosystem
loads it with ``PeftModel.from_pretrained(base_model, OUT_DIR)``.

PEFT itself builds and saves the adapter (config and weights): a PEFT model
is set up around the base architecture built on the meta device (its config
only, no weights read), its prompt embedding takes our prompt, and
``save_pretrained`` writes ``adapter_config.json`` and
``adapter_model.safetensors``. The base model is named by the run's
``backbone.name_or_path`` (a hub id as given, a local folder as an absolute
path) unless ``--base-model`` says otherwise.

Where PEFT puts the prompt (peft 0.21, ``PeftModelForCausalLM.forward`` and
``prepare_inputs_for_generation``): for decoder-only models the virtual
tokens go at position 0 of the padded row, before any left padding, and
PEFT drops ``position_ids`` so the model numbers every slot 0..r+L-1, pads
included. ``PromptedModel`` puts the prompt right before the first real
token and takes positions from the mask. The two agree on unpadded and
right-padded rows (the real tokens' outputs); on left-padded rows PEFT's
outputs differ from its own unpadded ones. For T5 both prepend the prompt
to the encoder input and agree on any padding.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import torch

from dtvg_dist import cli
from dtvg_dist.model.backbone import family_of
from dtvg_dist.orchestration.config import RecipeError
from dtvg_dist.orchestration.trained_run import RunDirError, TrainedRun, open_run

log = logging.getLogger("dtvg_dist.export")

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
EXPORT_INFO = "dtvg_export.json"


def base_model_of(run: TrainedRun, override: str | None = None) -> tuple[str, str | None]:
    """(base model id or absolute folder, tokenizer source) for the adapter."""
    from dtvg_dist.orchestration.pipeline import backbone_settings

    node = run.cfg.backbone
    if override is None and node.config is not None and node.name_or_path is None:
        raise RunDirError(
            f"{run.run_dir} was trained on a backbone built from backbone.config with random "
            f"weights ({run.results.get('backbone', 'config-built')}), which no PEFT user can load "
            "by name. Save that model with save_pretrained (dtvg_dist.model.backbone.load_backbone "
            "builds it from the run's config.yaml) and pass its folder as --base-model DIR"
        )
    settings = backbone_settings(run.cfg, run.root)
    base = override or settings.name_or_path
    assert base is not None
    local = Path(base).expanduser()
    if local.is_dir():
        base = str(local.resolve())
    tokenizer = settings.tokenizer or base
    return base, tokenizer


def _trained_model_type(run: TrainedRun) -> str | None:
    """The model type the run trained on, where its config still says (None: unknown)."""
    from transformers import AutoConfig

    node = run.cfg.backbone
    if node.config is not None:
        return str(node.config.get("model_type"))
    try:
        return str(AutoConfig.from_pretrained(str(Path(node.name_or_path).expanduser())).model_type)
    except (OSError, ValueError):
        return None


def _meta_model(base: str) -> tuple[Any, bool]:
    """The base architecture on the meta device (config only), and whether it is seq2seq."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    try:
        hf_config = AutoConfig.from_pretrained(base)
    except (OSError, ValueError) as err:
        raise RunDirError(
            f"base model {base!r}: cannot read its config ({err}). Pass --base-model with a hub id "
            "in the local cache or a folder holding the model"
        ) from None
    seq2seq = family_of(hf_config) == "seq2seq"
    auto_cls = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    with init_empty_weights():
        model = auto_cls.from_config(hf_config)
    model.name_or_path = base
    return model, seq2seq


def export_peft(run: TrainedRun, out_dir: Path, base_model: str | None = None) -> Path:
    """Write the PEFT prompt-tuning adapter of `run` into `out_dir`; returns it."""
    method = run.method_spec()
    if method.peft_adapter is None:
        raise RecipeError(
            f"{run.run_dir}: method {method.name} cannot be exported to PEFT: {method.peft_refusal}. "
            "Use `python -m dtvg_dist.predict` with the run folder instead"
        )
    try:
        from peft import PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model
    except ImportError:
        raise RecipeError(
            "export --peft needs the package peft, which is not installed: pip install 'dtvg-dist[peft]'"
        ) from None

    base, tokenizer = base_model_of(run, base_model)
    model, seq2seq = _meta_model(base)
    r, d = run.soft_prompt.shape
    trained = _trained_model_type(run) if base_model is not None else None
    if trained is not None and trained != model.config.model_type:
        raise RunDirError(
            f"--base-model {base_model!r} is a {model.config.model_type} model but {run.run_dir} "
            f"was trained on a {trained} backbone"
        )
    width = model.get_input_embeddings().embedding_dim
    if width != d:
        raise RunDirError(
            f"base model {base!r} has embedding width {width} but the run's soft prompt is "
            f"[{r}, {d}]: it was trained on another backbone"
        )
    multitask = method.peft_adapter == "MULTITASK_PROMPT_TUNING"
    config_cls: Any = PromptTuningConfig
    extra: dict[str, Any] = {}
    if multitask:  # MPT: P* o (u v^T) as PEFT's one-task, rank-one multitask prompt
        from peft import MultitaskPromptTuningConfig

        config_cls, extra = MultitaskPromptTuningConfig, {"num_tasks": 1, "num_ranks": 1}
    peft_config = config_cls(
        **extra,
        task_type=TaskType.SEQ_2_SEQ_LM if seq2seq else TaskType.CAUSAL_LM,
        num_virtual_tokens=r,
        token_dim=d,
        # One prompt, on the encoder for T5 (PEFT's seq2seq default of 2 would
        # also store r decoder rows that prompt tuning never uses).
        num_transformer_submodules=1,
        prompt_tuning_init=PromptTuningInit.RANDOM,  # replaced by the trained prompt below
        inference_mode=True,
    )
    peft_model = get_peft_model(model, peft_config)
    encoder = peft_model.prompt_encoder["default"]
    encoder.to_empty(device="cpu")  # built on meta with the base model; give it storage
    with torch.no_grad():
        if multitask:
            # PEFT's MultitaskPromptEmbedding.forward: embedding.weight *
            # (prefix_task_cols[task] @ prefix_task_rows[task]), cols [1, r, 1], rows [1, 1, d].
            encoder.embedding.weight.copy_(run.tensors["shared"])
            encoder.prefix_task_cols.copy_(run.tensors["u"].reshape(1, r, 1))
            encoder.prefix_task_rows.copy_(run.tensors["v"].reshape(1, 1, d))
        else:
            encoder.embedding.weight.copy_(run.soft_prompt)
    peft_model.peft_config["default"].base_model_name_or_path = base
    out_dir.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(out_dir))
    info = {
        "run_dir": str(run.run_dir.resolve()),
        "task": run.task,
        "method": run.method,
        "best_step": run.results.get("best_step"),
        "base_model": base,
        "num_virtual_tokens": r,
        **({"peft_type": "MULTITASK_PROMPT_TUNING",
            "usage": "PEFT's multitask prompt needs task_ids: pass task_ids=torch.zeros(batch, dtype=long)"}
           if multitask else {}),
    }
    (out_dir / EXPORT_INFO).write_text(json.dumps(info, indent=2) + "\n")
    if tokenizer is not None:
        _save_tokenizer(tokenizer, out_dir)
    log.info(
        "exported %s (task %s, method %s, prompt %dx%d) as a PEFT prompt-tuning adapter for %s to %s",
        run.run_dir, run.task, run.method, r, d, base, out_dir,
    )
    return out_dir


def _save_tokenizer(source: str, out_dir: Path) -> None:
    """The run's tokenizer beside the adapter: the prompt was tuned on its ids."""
    from transformers import AutoTokenizer

    try:
        AutoTokenizer.from_pretrained(os.path.expanduser(source)).save_pretrained(str(out_dir))
    except (OSError, ValueError) as err:
        log.warning("tokenizer %s not copied beside the adapter: %s", source, err)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dtvg_dist.export",
        description="Write a finished run's soft prompt as a PEFT prompt-tuning adapter.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run's output_dir (or its stage1/<task>)")
    parser.add_argument("--peft", metavar="OUT_DIR", required=True, help="folder for the adapter")
    parser.add_argument(
        "--base-model", metavar="ID_OR_PATH",
        help="the base model the adapter names (default: the run's backbone.name_or_path)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an adapter in OUT_DIR")
    return parser


@cli.command
def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    out_dir = Path(args.peft).expanduser()
    existing = [name for name in ADAPTER_FILES if (out_dir / name).exists()]
    if existing and not args.overwrite:
        raise RecipeError(f"{out_dir} already holds an adapter ({existing[0]}); pass --overwrite")
    export_peft(open_run(args.run_dir), out_dir, args.base_model)
    print(f"wrote {out_dir / ADAPTER_FILES[0]} and {out_dir / ADAPTER_FILES[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
