"""PEFT export of an MPT target run: a one-task, rank-one MULTITASK_PROMPT_TUNING
adapter whose logits (with task_ids=0) equal ours with the same P*, u, v.

Tolerance: 1e-5 absolute, as tests/test_export.py (same fp32 backbone, same
embeddings; PEFT and ours only order the products differently).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

from dtvg_dist.export import main
from dtvg_dist.model.backbone import BackboneSettings, load_backbone
from dtvg_dist.model.methods.mpt import MPTPrompt
from dtvg_dist.model.prompt import PromptedModel
from dtvg_dist.orchestration.config import load_recipe, resolved_yaml
from dtvg_dist.store.run_files import RunFiles

ATOL = 1e-5
R = 5


@pytest.fixture(scope="module")
def lively(tiny_checkpoints, tmp_path_factory) -> dict[str, Path]:
    """The tiny checkpoints at weight std 0.3 (logits that depend on the input)."""
    out = {}
    for family, cls in (("seq2seq", AutoModelForSeq2SeqLM), ("causal", AutoModelForCausalLM)):
        source = tiny_checkpoints.path(family)
        model = cls.from_pretrained(str(source))
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
        folder = tmp_path_factory.mktemp(f"lively-mpt-{family}")
        model.save_pretrained(str(folder))
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(source / name, folder)
        out[family] = folder
    return out


def _mpt_run(tmp_path: Path, family: str, checkpoint: Path) -> tuple[Path, MPTPrompt]:
    recipe = "tiny-t5" if family == "seq2seq" else "tiny-llama"
    run = tmp_path / f"run-{family}"
    cfg = load_recipe(recipe, [
        f"backbone.name_or_path={checkpoint}", "backbone.config=null", "backbone.tokenizer=null",
        f"output_dir={run}", "method=mpt",
    ])
    files = RunFiles(run)
    files.write_config(resolved_yaml(cfg))
    g = torch.Generator().manual_seed(1)
    module = MPTPrompt(torch.randn(R, 32, generator=g), 1 + 0.5 * torch.randn(R, generator=g),
                       1 + 0.5 * torch.randn(32, generator=g))
    files.write_prompt({**module.trainable_state(), "soft_prompt": module().detach()},
                       {"task": "syn_target"})
    files.write_results({"task": "syn_target", "method": "mpt", "best_step": 3})
    return run, module


@pytest.mark.parametrize("family", ["seq2seq", "causal"])
def test_mpt_export_logits_match(lively, tmp_path, family):
    ckpt = lively[family]
    run, module = _mpt_run(tmp_path, family, ckpt)
    out = tmp_path / "adapter"
    assert main([str(run), "--peft", str(out)]) == 0
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "MULTITASK_PROMPT_TUNING"
    assert config["num_tasks"] == 1 and config["num_ranks"] == 1 and config["num_virtual_tokens"] == R
    cls = AutoModelForSeq2SeqLM if family == "seq2seq" else AutoModelForCausalLM
    peft_model = PeftModel.from_pretrained(cls.from_pretrained(str(ckpt)), str(out)).eval()
    ours = PromptedModel(load_backbone(BackboneSettings(name_or_path=str(ckpt))), module).eval()
    gen = torch.Generator().manual_seed(2)
    ids = torch.randint(5, 64, (3, 6), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 4:], mask[2, 3:] = 0, 0  # right padding: where PEFT and ours place prompts alike
    task_ids = torch.zeros(3, dtype=torch.long)
    with torch.no_grad():
        if family == "seq2seq":
            # Labels, not decoder_input_ids: PEFT 0.21's seq2seq forward drops
            # decoder_input_ids for a multitask prompt on the encoder only
            # (peft_model.py, PeftModelForSeq2SeqLM.forward, the non-PROMPT_TUNING
            # branch); with labels T5 builds the decoder input itself.
            labels = torch.randint(5, 64, (3, 4), generator=gen)
            ours.answer_only_logits = False  # the backbone's own output: full logits
            want = ours(ids, mask, labels).logits
            got = peft_model(input_ids=ids, attention_mask=mask, labels=labels,
                             task_ids=task_ids).logits
            torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
        else:
            want = ours(ids, mask).logits[:, R:]
            got = peft_model(input_ids=ids, attention_mask=mask, task_ids=task_ids).logits[:, R:]
            real = mask.bool()
            torch.testing.assert_close(got[real], want[real], atol=ATOL, rtol=0)
