"""Peak memory of real steps on CPU against what `dtvg_dist.plan` predicts.

    python bench/plan_memory.py                  # the three cases below (7m53s on 2 busy cores)
    python bench/plan_memory.py --cases train    # one case

A model with SmolLM2-135M's shape (hidden 576, 30 layers, 9 heads / 3 KV
heads, intermediate 1536, vocabulary 49,152, tied embeddings; random
weights from its config through `load_backbone`), fp32 on CPU, SDPA, with a
DTVG prompt (r = 20, 6 source TPVs) through `PromptedModel`:

- train: one training step (forward, backward, AdamW step), batch 4 of at
  most 128 text tokens (right-padded: 128, 120, 112, 104), the last 4 tokens
  of each row the answer;
- train-answer-only: the same with the output head at the answer tokens only
  (`backbone.answer_only_logits`; skipped where the
  checkout has no such switch);
- train-ckpt: `train` with `backbone.gradient_checkpointing`;
- generate: greedy generation of 8 tokens for 16 prompts of at most 128 tokens.

How memory is measured on CPU: every case runs in a fresh subprocess with
glibc's `MALLOC_MMAP_THRESHOLD_=65536`, so every tensor above 64 KiB is its
own mmap and goes back to the system when freed (resident memory follows
the live tensors instead of the allocator's free lists). The process reads
its resident set (VmRSS, /proc/self/status) after imports, builds the model
(weights = the growth), runs one untimed warm-up step (optimizer state,
kernel caches), resets its high-water mark (`5` written to
/proc/self/clear_refs, Linux >= 4.0), runs the measured step and reads the
high-water mark (VmHWM). Measured peak = VmHWM - RSS after imports; the
step's own part = VmHWM - RSS just before it. Predicted = `dtvg_dist.costs`
for the same shapes (weights, prompt state, `activations(...).peak`;
for generation `eval_bytes`). Target: measured / predicted within 0.85-1.15.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # gpu_check's switch

SMOLLM2 = "HuggingFaceTB/SmolLM2-135M"
BATCH, TEXT, R, ANSWER, N_SOURCES = 4, 128, 20, 4, 6
LENGTHS = (128, 120, 112, 104)
GEN_BATCH, NEW_TOKENS = 16, 8
CASES = ("train", "train-answer-only", "train-ckpt", "generate")
TOLERANCE = 0.15


def _status(key: str) -> int:
    """A /proc/self/status figure in bytes (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


# ------------------------------------------------------------------ child
def _load_code_paths(case: str) -> str | None:
    """Import and run everything once on a tiny model of the same family, so
    the baseline already holds the libraries' code and thread pools and the
    measured growth is tensors only. Returns why the case cannot run, if so."""
    import torch
    from gpu_check import set_answer_only_logits

    from dtvg_dist.model.backbone import BackboneSettings, load_backbone
    from dtvg_dist.model.prompt import PromptedModel, SoftPrompt

    tiny = {"model_type": "llama", "vocab_size": 64, "hidden_size": 16, "intermediate_size": 32,
            "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
            "tie_word_embeddings": True}
    bb = load_backbone(BackboneSettings(config=tiny, attn_implementation="sdpa",
                                        gradient_checkpointing=case == "train-ckpt"), device="cpu")
    model = PromptedModel(bb, SoftPrompt(torch.randn(2, 16)))
    why_not = set_answer_only_logits(model, case == "train-answer-only")
    if why_not is not None:
        return why_not
    ids = torch.randint(3, 64, (2, 6))
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    model(input_ids=ids, attention_mask=mask, labels=ids).loss.backward()
    with torch.no_grad():
        model.eval().generate(ids, mask, max_new_tokens=2)
    del model, bb
    return None


def child(case: str) -> dict:
    import torch

    from dtvg_dist.costs import KNOWN_CONFIGS
    from dtvg_dist.model.backbone import BackboneSettings, load_backbone
    from dtvg_dist.model.prompt import DTVGPrompt, PromptedModel, sample_p_init

    why_not = _load_code_paths(case)
    if why_not is not None:
        return {"case": case, "skipped": why_not}
    torch.manual_seed(0)
    gc.collect()
    rss_start = _status("VmRSS")
    settings = BackboneSettings(
        config=dict(KNOWN_CONFIGS[SMOLLM2][0]), dtype="fp32", attn_implementation="sdpa",
        gradient_checkpointing=case == "train-ckpt",
    )
    backbone = load_backbone(settings, device="cpu")
    gc.collect()
    rss_model = _status("VmRSS")
    gen = torch.Generator().manual_seed(1)
    p_init, _ = sample_p_init(backbone.model.get_input_embeddings().weight, R, seed=0)
    d = p_init.shape[1]
    target = 0.01 * torch.randn(R, d, generator=gen)
    prompt = DTVGPrompt(p_init, target, target + 0.01 * torch.randn(N_SOURCES, R, d, generator=gen),
                        [f"s{i}" for i in range(N_SOURCES)])
    model = PromptedModel(backbone, prompt)
    from gpu_check import set_answer_only_logits

    set_answer_only_logits(model, case == "train-answer-only")  # available: checked above
    vocab = backbone.model.config.vocab_size
    out: dict = {"case": case, "weights_measured": rss_model - rss_start}
    if case == "generate":
        lengths = [TEXT - 2 * (i % 8) for i in range(GEN_BATCH)]
        ids = torch.randint(3, vocab, (GEN_BATCH, TEXT), generator=gen)
        mask = torch.zeros_like(ids)
        for i, n in enumerate(lengths):
            mask[i, :n] = 1
        model.eval()
        with torch.no_grad():
            model.generate(ids, mask, max_new_tokens=NEW_TOKENS)  # warm-up
        gc.collect()
        before = _status("VmRSS")
        _reset_peak()
        with torch.no_grad():
            model.generate(ids, mask, max_new_tokens=NEW_TOKENS)
    else:
        ids = torch.randint(3, vocab, (BATCH, TEXT), generator=gen)
        mask = torch.zeros_like(ids)
        labels = torch.full_like(ids, -100)
        for i, n in enumerate(LENGTHS):
            mask[i, :n] = 1
            labels[i, n - ANSWER : n] = ids[i, n - ANSWER : n]
        optimizer = torch.optim.AdamW(prompt.param_groups(1e-3, 1e-3, 0.0), lr=1e-3)
        model.train()

        def step() -> float:
            # As the trainer does: the output (and its logits) lives through the backward.
            out = model(input_ids=ids, attention_mask=mask, labels=labels)
            out.loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return float(out.loss)

        step()  # warm-up: AdamW state, kernel caches
        gc.collect()
        before = _status("VmRSS")
        _reset_peak()
        out["loss"] = step()
    peak = _status("VmHWM")
    out.update(peak_measured=peak - rss_start, step_measured=peak - before)
    return out


# ----------------------------------------------------------------- parent
def predicted(case: str) -> dict:
    from dtvg_dist.costs import (
        KNOWN_CONFIGS,
        ModelShape,
        PromptState,
        Step,
        activations,
        eval_bytes,
        prompt_bytes,
        weight_bytes,
    )

    shape = ModelShape.from_config(KNOWN_CONFIGS[SMOLLM2][0])
    weights = weight_bytes(shape, 4)
    state = PromptState.of("dtvg", R, shape.hidden, N_SOURCES)
    if case == "generate":
        step = eval_bytes(shape, GEN_BATCH, R + TEXT, NEW_TOKENS, 4)
        prompt = state.buffers * 4 + state.trainable * 4  # no gradients or optimizer while generating
    else:
        t = R + TEXT
        rows = BATCH * ANSWER if case == "train-answer-only" else BATCH * t
        act = activations(shape, Step(BATCH, t, 0, rows, 4, case == "train-ckpt"))
        step = act.peak
        prompt = prompt_bytes(state, "ddp", 1)
    return {"weights": weights, "prompt": prompt, "step": step, "peak": weights + prompt + step}


def run_case(case: str) -> dict:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "PYTHONPATH": str(REPO),
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", case],
        env=env, capture_output=True, text=True, timeout=1800,
    )
    if proc.returncode != 0:
        raise SystemExit(f"case {case} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated: {', '.join(CASES)}")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child)))
        return 0
    if not Path("/proc/self/clear_refs").exists():
        raise SystemExit("needs Linux: the peak is read from /proc/self/status and reset through clear_refs")
    cases = [c for c in args.cases.split(",") if c]
    for c in cases:
        if c not in CASES:
            raise SystemExit(f"--cases: unknown case {c!r}; known: {', '.join(CASES)}")
    mib = 2**20
    print(f"SmolLM2-135M shape, fp32, CPU, torch threads {os.environ.get('OMP_NUM_THREADS', 'default')}; "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("| case | weights MiB measured / predicted | step MiB measured / predicted | ratio | "
          "peak MiB measured / predicted | ratio |")
    print("|---|---|---|---:|---|---:|")
    worst = 0.0
    for case in cases:
        m, p = run_case(case), predicted(case)
        if "skipped" in m:
            print(f"| {case} | skipped: {m['skipped']} | | | | |")
            continue
        r_step = m["step_measured"] / p["step"]
        r_peak = m["peak_measured"] / p["peak"]
        worst = max(worst, abs(r_peak - 1))
        print(f"| {case} | {m['weights_measured'] / mib:.0f} / {p['weights'] / mib:.0f} | "
              f"{m['step_measured'] / mib:.0f} / {p['step'] / mib:.0f} | {r_step:.3f} | "
              f"{m['peak_measured'] / mib:.0f} / {p['peak'] / mib:.0f} | {r_peak:.3f} |")
    verdict = "OK" if worst <= TOLERANCE else "OVER"
    print(f"largest peak deviation: {worst:.1%} (target <= {TOLERANCE:.0%}): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
