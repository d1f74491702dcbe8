"""bench/gpu_check.py on a machine without a GPU: it says what it skipped and
exits 0; its CUDA code paths run on CPU (--cpu-dry-run); its FLOP count and
MFU arithmetic against independent references."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_without_cuda_every_gpu_section_is_skipped_with_a_reason(tmp_path: Path) -> None:
    out = tmp_path / "check.json"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["cuda"]["available"] is False
    assert set(report["checks"]) == {"sync_free_dtvg", "core_bench", "llama_step", "zero3_one_gpu"}
    for name, section in report["checks"].items():
        assert section["status"] == "skipped", name
        assert "CUDA is not available" in section["reason"]
    assert "skipped (CUDA is not available" in proc.stdout


def test_cpu_dry_run_runs_the_gpu_code_paths(gpu_check, tmp_path: Path) -> None:
    report = gpu_check.run(tmp_path / "dry.json", budget_s=600, cpu_dry_run=True)
    assert json.loads((tmp_path / "dry.json").read_text())["checks"].keys() == report["checks"].keys()
    checks = report["checks"]
    assert set(checks["sync_free_dtvg"]["rules"].values()) == {"ok"}
    assert checks["core_bench"]["fused_ms"] > 0 and checks["core_bench"]["naive_ms"] > 0
    full = checks["llama_step"]["runs"]["sdpa/full_logits"]
    assert full["status"] == "ok", full
    shape = SimpleNamespace(hidden=64, head_dim=16, layers=2, heads=4, kv_heads=2,
                            intermediate=128, vocab=512)
    b, t = 4, 4 + 24
    assert full["hardware_flops_per_step"] == gpu_check.llama_step_flops(shape, b, t, b * t)["hardware"]
    assert full["model_flops_per_step"] == gpu_check.llama_step_flops(shape, b, t, b * 2)["hardware"]
    assert full["positions_per_s"] == pytest.approx(b * t / full["step_s_median"])
    assert full["mfu"] is None and "mfu_note" in full  # no peak figure for a CPU
    answer_only = checks["llama_step"]["runs"]["sdpa/answer_only_logits"]
    assert full["answer_only_logits"] is False
    assert answer_only["status"] == "ok" and answer_only["answer_only_logits"] is True
    assert answer_only["hardware_flops_per_step"] == full["model_flops_per_step"]
    # the same prompt and batch: the two heads give the same loss
    assert answer_only["loss_first_last"][0] == pytest.approx(full["loss_first_last"][0], rel=1e-5)
    assert checks["zero3_one_gpu"]["status"] == "skipped"


@pytest.mark.parametrize("checkpointing", [False, True])
def test_step_flops_equal_torch_flop_counter(gpu_check, checkpointing: bool) -> None:
    """Eager attention, so every matmul is an aten op the counter sees; frozen
    weights, an input that needs a gradient, logits at every position."""
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoConfig, AutoModelForCausalLM

    from dtvg_dist.costs import ModelShape

    config = dict(gpu_check.TINY_LLAMA)
    hf = AutoConfig.for_model(config.pop("model_type"), **config)
    model = AutoModelForCausalLM.from_config(hf, attn_implementation="eager").requires_grad_(False)
    if checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    b, t = 2, 12
    embeds = torch.randn(b, t, hf.hidden_size, requires_grad=True)
    with FlopCounterMode(display=False) as counter:
        model(inputs_embeds=embeds, labels=torch.randint(0, hf.vocab_size, (b, t))).loss.backward()
    shape = ModelShape.from_config(gpu_check.TINY_LLAMA)
    expected = gpu_check.llama_step_flops(shape, b, t, b * t, checkpointing)["hardware"]
    assert counter.get_total_flops() == expected


def test_mfu_arithmetic(gpu_check) -> None:
    assert gpu_check.mfu(4.0e14, 2.0, 400.0) == pytest.approx(0.5)
    assert gpu_check.mfu(1e12, 1.0, None) is None
    assert gpu_check.mfu(1e12, 0.0, 100.0) is None


@pytest.mark.parametrize(
    ("card", "peak"),
    [
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA A100 80GB PCIe", 312.0),
        ("NVIDIA H100 80GB HBM3", 989.4),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H100 NVL", None),
        ("NVIDIA H200", 989.0),
        ("NVIDIA GH200 480GB", None),
        ("NVIDIA RTX A1000", None),  # not an A100
        ("Tesla T4", None),
        ("AMD Instinct MI300X", 1307.0),
    ],
)
def test_peak_table(gpu_check, card: str, peak: float | None) -> None:
    value, note = gpu_check.peak_bf16_tflops(card)
    assert value == peak
    assert note
