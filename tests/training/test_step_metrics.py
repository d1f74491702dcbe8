"""Step metrics: the host-side counts and summaries, the gradient norm against
an independent float64 reference, and no host sync on a step that does not log."""

from __future__ import annotations

import os
import resource
import statistics
import traceback

import pytest
import torch

from dtvg_dist.model.prompt import DTVGPrompt, SoftPrompt
from dtvg_dist.orchestration.config import load_recipe
from dtvg_dist.orchestration.pipeline import Pipeline
from dtvg_dist.tasks import get_task
from dtvg_dist.training.step_metrics import (
    ThroughputWindow,
    backbone_tokens,
    grad_norm,
    local_peak_memory_mb,
    run_summary,
)
from dtvg_dist.training.trainer import RunSpec, Trainer


def test_backbone_tokens_count_the_prompt_and_the_decoder_input():
    feature = {"input_ids": [5, 6, 7, 1], "labels": [-100, -100, 7, 1]}
    assert backbone_tokens(feature, prompt_length=8, seq2seq=False) == 12
    t5 = {"input_ids": [5, 6, 1], "labels": [9, 1]}
    assert backbone_tokens(t5, prompt_length=8, seq2seq=True) == 13


def test_run_summary_is_the_median_speed_and_the_largest_peak():
    rows = [
        {"step": 1, "loss": 1.0, "samples_per_s": 10.0, "tokens_per_s": 100.0, "peak_memory_mb": 5.0},
        {"step": 2, "loss": 1.0},  # a step that did not log
        {"step": 2, "split": "validation", "accuracy": 1.0},
        {"step": 3, "loss": 1.0, "samples_per_s": 30.0, "tokens_per_s": 50.0, "peak_memory_mb": 7.5},
        {"step": 4, "loss": 1.0, "samples_per_s": 20.0, "tokens_per_s": 70.0, "peak_memory_mb": 6.0},
    ]
    assert run_summary(rows) == {"samples_per_s": 20.0, "tokens_per_s": 70.0, "peak_memory_mb": 7.5}
    assert run_summary([]) == {"samples_per_s": None, "tokens_per_s": None, "peak_memory_mb": None}
    assert statistics.median([10.0, 30.0, 20.0]) == 20.0


def test_throughput_window_divides_counts_by_its_time(monkeypatch):
    clock = iter([100.0, 104.0, 104.0])
    monkeypatch.setattr("dtvg_dist.training.step_metrics.time.perf_counter", lambda: next(clock))
    window = ThroughputWindow()
    window.add(8, 80)
    window.add(8, 120)
    assert window.close() == {"step_time_s": 2.0, "samples_per_s": 4.0, "tokens_per_s": 50.0}
    assert (window.steps, window.samples, window.tokens, window.start) == (0, 0, 0, 104.0)


def test_cpu_peak_memory_is_the_process_peak_rss():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peak = local_peak_memory_mb(torch.device("cpu"))
    assert peak >= before > 0


def test_grad_norm_equals_a_float64_reference():
    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(3, 4, generator=gen)) for _ in range(3)]
    for p in params[:2]:
        p.grad = torch.randn(p.shape, generator=gen)
    ref = torch.cat([p.grad.double().flatten() for p in params[:2]]).pow(2).sum().sqrt()
    assert float(grad_norm(params)) == pytest.approx(float(ref), rel=1e-6)  # fp32 sums
    assert grad_norm(params[2:]) is None


# ------------------------------------------------------------ no host sync
SYNCS = ("item", "tolist", "__float__", "__int__", "__bool__", "cpu", "numpy")


@pytest.fixture(scope="module")
def trainers(tmp_path_factory):
    """A built PT and DTVG trainer on tiny-llama, in this process."""
    tmp = tmp_path_factory.mktemp("sync")
    cfg = load_recipe("tiny-llama", [f"output_dir={tmp / 'run'}", f"bank_dir={tmp / 'bank'}",
                                     "logging.progress_bar=false"])
    pipe = Pipeline(cfg)
    train = pipe.splits(cfg.target_task)["train"]
    r, d = cfg.prompt.length, pipe.backbone.hidden_size
    gen = torch.Generator().manual_seed(0)
    prompts = {
        "pt": SoftPrompt(torch.randn(r, d, generator=gen)),
        "dtvg": DTVGPrompt(torch.randn(r, d, generator=gen), torch.randn(r, d, generator=gen) * 0.01,
                           torch.randn(2, r, d, generator=gen) * 0.01, ["a", "b"]),
    }
    built = {}
    for method, prompt in prompts.items():
        spec = RunSpec(name=method, task=get_task(cfg.target_task), method=method, prompt=prompt,
                       run_dir=tmp / method, max_steps=50, lr=0.3, source_lr=0.4, train=train,
                       validation=[], test=[])
        trainer = Trainer(cfg, spec, pipe.backbone, pipe.acc)
        trainer.build()
        built[method] = trainer
    return built


def _count_syncs(monkeypatch, run) -> int:
    """Host reads of tensors made by this package's code (transformers' mask
    checks and torch's AdamW read their own; the same with or without logging)."""
    calls = []
    for name in SYNCS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            caller = traceback.extract_stack(limit=2)[0].filename
            if f"{os.sep}dtvg_dist{os.sep}" in caller:
                calls.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    try:
        run()
    finally:
        monkeypatch.undo()
    return len(calls)


@pytest.mark.parametrize("method", ["pt", "dtvg"])
def test_a_step_that_does_not_log_reads_nothing_more_from_the_device(trainers, monkeypatch, method):
    """The step's one host read (the loss and stop flag, for the divergence
    check) is all: measuring adds reads only on a logged step."""
    trainer = trainers[method]
    trainer.train_step(0)  # warm-up: lazy state, first-call paths
    quiet = _count_syncs(monkeypatch, lambda: trainer.train_step(1, measure=False))
    assert quiet == 1
    assert trainer.last_grad_norm is None
    measured = _count_syncs(monkeypatch, lambda: trainer.train_step(2, measure=True))
    assert measured == 1  # the norm stays on the device until the logged row reads it
    assert trainer.last_grad_norm is not None and float(trainer.last_grad_norm) > 0
    assert trainer.last_samples == trainer.cfg.optim.batch_size * trainer.cfg.optim.grad_accum
    assert trainer.last_tokens > trainer.last_samples * trainer.cfg.prompt.length
