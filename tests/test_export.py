"""PEFT export: the adapter PEFT loads gives the logits and greedy tokens of
our PromptedModel with the same prompt; the DTVG export is P_mix of the best
checkpoint; an MPT target run exports as a one-task, rank-one
MULTITASK_PROMPT_TUNING adapter whose logits (task_ids=0) equal ours with the
same P*, u, v; bad run folders are clear errors.

Tolerance: PEFT and PromptedModel run the same fp32 backbone on the same
embeddings, so logits must agree to 1e-5 (absolute; measured: exactly equal).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from trained_prompts import rebuilt_prompt, run_backbone, run_data
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

from dtvg_dist.export import main
from dtvg_dist.model.backbone import BackboneSettings, load_backbone
from dtvg_dist.model.methods.mpt import MPTPrompt
from dtvg_dist.model.prompt import PromptedModel, SoftPrompt
from dtvg_dist.orchestration.config import load_recipe, resolved_yaml
from dtvg_dist.store.run_files import RunFiles

ATOL = 1e-5
R = 5


def _run_files(tmp_path: Path, family: str, checkpoint: Path, method: str) -> RunFiles:
    """The folder of a `method` run on a saved checkpoint: its resolved config
    and results (best step 3); the caller writes the prompt."""
    recipe = "tiny-t5" if family == "seq2seq" else "tiny-llama"
    run = tmp_path / f"run-{family}"
    cfg = load_recipe(recipe, [
        f"backbone.name_or_path={checkpoint}", "backbone.config=null", "backbone.tokenizer=null",
        f"output_dir={run}", f"method={method}",
    ])
    files = RunFiles(run)
    files.write_config(resolved_yaml(cfg))
    files.write_results({"task": "syn_target", "method": method, "best_step": 3})
    return files


def _fake_run(tmp_path: Path, family: str, checkpoint: Path, seed: int = 1) -> tuple[Path, torch.Tensor]:
    """A finished PT run folder on a saved checkpoint, with a random soft prompt."""
    files = _run_files(tmp_path, family, checkpoint, "pt")
    soft = torch.randn(R, 32, generator=torch.Generator().manual_seed(seed))
    files.write_prompt({"prompt": soft.clone(), "soft_prompt": soft}, {"task": "syn_target"})
    return files.dir, soft


def _export(run: Path, out: Path, *extra: str) -> None:
    assert main([str(run), "--peft", str(out), *extra]) == 0


def _peft(checkpoint: Path, adapter: Path, family: str) -> PeftModel:
    cls = AutoModelForSeq2SeqLM if family == "seq2seq" else AutoModelForCausalLM
    return PeftModel.from_pretrained(cls.from_pretrained(str(checkpoint)), str(adapter)).eval()


def _ours(checkpoint: Path, prompt: torch.nn.Module) -> PromptedModel:
    backbone = load_backbone(BackboneSettings(name_or_path=str(checkpoint)), device="cpu")
    return PromptedModel(backbone, prompt).eval()


def _exported_pair(tmp_path: Path, family: str, checkpoint: Path) -> tuple[PeftModel, PromptedModel]:
    """A run's prompt exported and loaded by PEFT, and our model with the same prompt."""
    run, soft = _fake_run(tmp_path, family, checkpoint)
    _export(run, tmp_path / "adapter")
    return _peft(checkpoint, tmp_path / "adapter", family), _ours(checkpoint, SoftPrompt(soft))


def _batch(pad: int, lengths: list[int], seed: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded random ids (no special tokens) of the given lengths."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 64, (len(lengths), max(lengths)), generator=gen)
    mask = (torch.arange(max(lengths)).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)).long()
    return ids.masked_fill(mask == 0, pad), mask


def _left(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    order = torch.sort(mask, dim=1, stable=True).indices  # pads to the front, order kept
    return torch.gather(ids, 1, order), torch.gather(mask, 1, order)


def test_adapter_files_name_the_base_and_hold_the_prompt(tiny_checkpoints, tmp_path):
    run, soft = _fake_run(tmp_path, "seq2seq", tiny_checkpoints.t5)
    out = tmp_path / "adapter"
    _export(run, out)
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "PROMPT_TUNING" and config["task_type"] == "SEQ_2_SEQ_LM"
    assert config["base_model_name_or_path"] == str(tiny_checkpoints.t5.resolve())
    assert config["num_virtual_tokens"] == R and config["token_dim"] == 32
    assert config["num_transformer_submodules"] == 1  # only the encoder prompt is stored
    weights = load_file(str(out / "adapter_model.safetensors"))
    assert torch.equal(next(iter(weights.values())), soft)
    assert json.loads((out / "dtvg_export.json").read_text())["task"] == "syn_target"
    # Refuses to overwrite an adapter unless asked.
    assert main([str(run), "--peft", str(out)]) == 2
    _export(run, out, "--overwrite")


@pytest.fixture(scope="module")
def lively(tiny_checkpoints, tmp_path_factory) -> dict[str, Path]:
    """The tiny checkpoints with weights drawn at std 0.3. At their own init scale
    the logits barely depend on the input (T5 greedily repeats one token whatever
    it reads), which would make the comparisons below moot."""
    out = {}
    for family, cls in (("seq2seq", AutoModelForSeq2SeqLM), ("causal", AutoModelForCausalLM)):
        source = tiny_checkpoints.path(family)
        model = cls.from_pretrained(str(source))
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
        folder = tmp_path_factory.mktemp(f"lively-{family}")
        model.save_pretrained(str(folder))
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(source / name, folder)
        out[family] = folder
    return out


def test_t5_logits_and_generation_match(lively, tmp_path):
    ckpt = lively["seq2seq"]
    peft_model, ours = _exported_pair(tmp_path, "seq2seq", ckpt)
    ids, mask = _batch(ours.model.config.pad_token_id, [7, 5, 3])  # right padding, as T5 batches
    decoder = torch.randint(5, 64, (3, 4), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = ours(ids, mask, decoder_input_ids=decoder).logits
        got = peft_model(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder).logits
        torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)
        tokens = ours.generate(ids, mask, max_new_tokens=6)
        peft_tokens = peft_model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6,
                                          do_sample=False)
    assert peft_tokens[:, 1:].tolist() == tokens.tolist()  # PEFT keeps the decoder start token
    assert len({tuple(t) for t in tokens.tolist()}) == 3  # the rows' outputs differ


def test_llama_logits_match_on_right_padding(lively, tmp_path):
    """No padding or right padding: the same logits at every real token."""
    ckpt = lively["causal"]
    peft_model, ours = _exported_pair(tmp_path, "causal", ckpt)
    ids, mask = _batch(ours.model.config.pad_token_id, [7, 5, 3])
    with torch.no_grad():
        expected = ours(ids, mask).logits
        got = peft_model(input_ids=ids, attention_mask=mask).logits
    real = torch.cat([torch.ones(3, R, dtype=torch.long), mask], 1).bool()  # prompt first in both
    torch.testing.assert_close(got[real], expected[real], atol=ATOL, rtol=0)


def test_llama_greedy_tokens_match_row_by_row(lively, tmp_path):
    """Our batched generation (left-padded internally) gives each row the tokens
    PEFT gives it unpadded. PEFT decodes here without the KV cache: see the
    xfail below for its cached path."""
    ckpt = lively["causal"]
    peft_model, ours = _exported_pair(tmp_path, "causal", ckpt)
    ids, mask = _batch(ours.model.config.pad_token_id, [7, 5, 3])
    with torch.no_grad():
        tokens = ours.generate(ids, mask, max_new_tokens=5, eos_token_id=None)
        for row, length in enumerate([7, 5, 3]):
            one = ids[row : row + 1, :length]
            out = peft_model.generate(
                input_ids=one, attention_mask=torch.ones_like(one), max_new_tokens=5,
                do_sample=False, use_cache=False, eos_token_id=None,
            )
            assert out[0, length:].tolist() == tokens[row].tolist(), row


@pytest.mark.xfail(
    reason="peft 0.21 looks for `past_key_values` in generate's model inputs, which transformers 5 "
    "passes as `cache`, so with the KV cache PEFT re-inserts the prompt at every decoding step",
    raises=AssertionError,
    strict=False,
)
def test_llama_peft_cached_generation_matches(lively, tmp_path):
    ckpt = lively["causal"]
    peft_model, ours = _exported_pair(tmp_path, "causal", ckpt)
    ids, mask = _batch(ours.model.config.pad_token_id, [7])
    with torch.no_grad():
        tokens = ours.generate(ids, mask, max_new_tokens=5, eos_token_id=None)
        out = peft_model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=5,
                                  do_sample=False, eos_token_id=None)
    assert out[0, 7:].tolist() == tokens[0].tolist()


def test_llama_left_padding_is_where_peft_differs(lively, tmp_path):
    """PEFT puts the virtual tokens before left padding and numbers positions
    0..r+L-1, pads included; PromptedModel puts the prompt before the first real
    token with positions from the mask. Left-padded, PEFT's last-token logits move
    away from its own unpadded ones; ours do not."""
    ckpt = lively["causal"]
    peft_model, ours = _exported_pair(tmp_path, "causal", ckpt)
    ids, mask = _batch(ours.model.config.pad_token_id, [7, 4])
    left_ids, left_mask = _left(ids, mask)
    with torch.no_grad():
        alone = ids[1:, :4]
        ours_alone = ours(alone, torch.ones_like(alone)).logits[0, -1]
        peft_alone = peft_model(input_ids=alone, attention_mask=torch.ones_like(alone)).logits[0, -1]
        ours_left = ours(left_ids, left_mask).logits[1, -1]
        peft_left = peft_model(input_ids=left_ids, attention_mask=left_mask).logits[1, -1]
    torch.testing.assert_close(ours_alone, peft_alone, atol=ATOL, rtol=0)
    torch.testing.assert_close(ours_left, ours_alone, atol=ATOL, rtol=0)
    assert (peft_left - peft_alone).abs().max() > 100 * ATOL


def test_dtvg_export_is_p_mix_of_the_best_checkpoint(tiny_runs, tmp_path):
    """A trained DTVG run on a config-built backbone, exported against a saved
    copy of that backbone: the adapter holds P_mix rebuilt from the bank and the
    best checkpoint's target TPV and alphas, and PEFT's logits match ours."""
    run = tiny_runs["tiny-t5"]
    backbone = run_backbone(run)
    base = tmp_path / "base"
    backbone.model.save_pretrained(str(base))
    backbone.tokenizer.save_pretrained(str(base))

    # Without a saved checkpoint there is nothing PEFT could load: a clear error.
    assert main([str(run), "--peft", str(tmp_path / "none")]) == 2

    out = tmp_path / "adapter"
    _export(run, out, "--base-model", str(base))
    module = rebuilt_prompt(run)
    with torch.no_grad():
        p_mix = module().float()
    weights = next(iter(load_file(str(out / "adapter_model.safetensors")).values()))
    torch.testing.assert_close(weights, p_mix, atol=1e-6, rtol=0)
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(base)

    peft_model = _peft(base, out, "seq2seq")
    ours = PromptedModel(backbone, module).eval()
    ids = torch.tensor([backbone.tokenizer("syn_target sentence: a good day")["input_ids"]])
    decoder = torch.zeros(1, 1, dtype=torch.long)
    with torch.no_grad():
        expected = ours(ids, torch.ones_like(ids), decoder_input_ids=decoder).logits
        got = peft_model(input_ids=ids, attention_mask=torch.ones_like(ids), decoder_input_ids=decoder).logits
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


def test_bad_run_folders_are_named(tiny_checkpoints, tmp_path, capsys):
    assert main([str(tmp_path / "nowhere"), "--peft", str(tmp_path / "a")]) == 2
    assert "nowhere: no such run folder" in capsys.readouterr().err

    run, _ = _fake_run(tmp_path, "causal", tiny_checkpoints.llama)
    unfinished = tmp_path / "unfinished"
    shutil.copytree(run, unfinished)
    (unfinished / "prompt.safetensors").unlink()
    assert main([str(unfinished), "--peft", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "no prompt.safetensors" in err and "resume=true" in err

    # A base model of another architecture, or of another width than the prompt.
    assert main([str(run), "--peft", str(tmp_path / "c"), "--base-model", str(tiny_checkpoints.t5)]) == 2
    assert "is a t5 model but" in capsys.readouterr().err
    RunFiles(run).write_prompt({"soft_prompt": torch.zeros(R, 16)}, {})
    assert main([str(run), "--peft", str(tmp_path / "d")]) == 2
    assert "embedding width 32" in capsys.readouterr().err


# ---- MPT (formerly tests/test_export_mpt.py) ----
def _mpt_run(tmp_path: Path, family: str, checkpoint: Path) -> tuple[Path, MPTPrompt]:
    files = _run_files(tmp_path, family, checkpoint, "mpt")
    g = torch.Generator().manual_seed(1)
    module = MPTPrompt(torch.randn(R, 32, generator=g), 1 + 0.5 * torch.randn(R, generator=g),
                       1 + 0.5 * torch.randn(32, generator=g))
    files.write_prompt({**module.trainable_state(), "soft_prompt": module().detach()},
                       {"task": "syn_target"})
    return files.dir, module


@pytest.mark.parametrize("family", ["seq2seq", "causal"])
def test_mpt_export_logits_match(lively, tmp_path, family):
    ckpt = lively[family]
    run, module = _mpt_run(tmp_path, family, ckpt)
    out = tmp_path / "adapter"
    assert main([str(run), "--peft", str(out)]) == 0
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "MULTITASK_PROMPT_TUNING"
    assert config["num_tasks"] == 1 and config["num_ranks"] == 1 and config["num_virtual_tokens"] == R
    peft_model = _peft(ckpt, out, family)
    ours = _ours(ckpt, module)
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


@pytest.mark.slow
def test_real_model_export_gives_our_logits(smollm2_run, smollm2, tmp_path):
    """A DTVG run on SmolLM2-135M (tests/real_model.py): the exported adapter,
    loaded by PEFT on the same base, gives our logits within 1e-4 (30 real
    layers in fp32; measured below 1e-5) on right-padded real examples."""
    from dtvg_dist.data.encoding import collate_train, padding_id

    out = tmp_path / "adapter"
    _export(smollm2_run, out)
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(smollm2)
    backbone = run_backbone(smollm2_run)
    ours = PromptedModel(backbone, rebuilt_prompt(smollm2_run)).eval()
    peft_model = _peft(smollm2, out, "causal")
    data = run_data(smollm2_run, backbone)
    batch = collate_train(list(data.splits()["validation"])[:6], padding_id(backbone.tokenizer))
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert mask.sum(1).min() < mask.shape[1]  # right padding present
    with torch.no_grad():
        expected = ours(ids, mask).logits
        got = peft_model(input_ids=ids, attention_mask=mask).logits
    r = expected.shape[1] - ids.shape[1]
    real = torch.cat([torch.ones(len(ids), r, dtype=torch.long), mask], 1).bool()  # prompt first in both
    torch.testing.assert_close(got[real], expected[real], atol=1e-4, rtol=0)
