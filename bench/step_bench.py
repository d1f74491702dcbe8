"""Training-step time (forward + backward + AdamW step on one fixed batch) of
prompt-tuning set-ups sharing one frozen backbone, measured in one run.

--mode prompt (default): three set-ups

  PT    our PromptedModel + SoftPrompt
  DTVG  our PromptedModel + DTVGPrompt (n random source TPVs, greedy rule)
  PEFT  HF PEFT PromptTuningConfig (CAUSAL_LM, RANDOM init) via get_peft_model

    python bench/step_bench.py [--steps 1 --rounds 5 --hidden 512 --layers 4 ...]
    python bench/step_bench.py --device cuda --hidden 4096 --layers 8 --heads 32 \
        --intermediate 11008 --dtype bf16 --steps 20

The backbone is a LlamaForCausalLM built from its config (random weights,
fixed seed), frozen, sdpa attention. The batch is full length (attention mask
of ones), labels -100 on the first half and the tokens on the second half.
Rounds interleave the three set-ups (the order rotates every round) after a
warm-up; each round times ``--steps`` steps; the median over rounds is
reported, with the ratios DTVG/PT (target <= 1.02; the paper reports 1.096
on T5-base) and PT/PEFT (target <= 1.00). Before timing it checks that our
PT and PEFT give the same loss for the same prompt values.

Also printed, not judged: min step times, the median of per-round ratios
(pairs cancel slow load drifts), process CPU time (CPU runs), and each
set-up's own work outside the backbone timed alone (prompt build + insertion
+ backward to the prompt): on a shared 2-core machine whole-step times swing
by 2-4x with the load, far more than the 2% being judged, while that last
line measures the only part in which the three set-ups differ.

--mode logits: our PT with the output head over the whole extended sequence
(``answer_only_logits=False``: [B, L + r, V] logits and the backbone's own
loss) against the head at the answer positions only (the default), on a
Llama with SmolLM2-135M's shape (hidden 576, 30 layers, 9 heads / 3 KV heads,
intermediate 1536, vocab 49,152, tied embeddings; random weights), batch 4 x
128 text tokens of which the last ``--answer-tokens`` are the answer, r = 20:

    python bench/step_bench.py --mode logits [--rounds 5 --dtype fp32]

It prints the two losses for the same prompt (target: equal to 1e-5), the
median step times and full / answer-only (target >= 1.15), and each mode's
peak memory of one training step: on CUDA ``max_memory_allocated``; on CPU
the peak resident set size of a fresh subprocess per mode during its second
step (Linux ``/proc/self/clear_refs`` resets the high-water mark VmHWM after
the first step; reported as the peak above the RSS just before the step).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from types import SimpleNamespace

import torch
from torch import nn

from dtvg_dist.model.prompt import (
    DTVGPrompt,
    PromptedModel,
    SoftPrompt,
    _position_ids,
    sample_p_init,
)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DTVG_TARGET = 1.02
PEFT_TARGET = 1.00
LOGITS_TARGET = 1.15
# Shape of each mode's backbone unless given on the command line. SmolLM2-135M:
# its published config, with tied embeddings (the GGUF SmolLM2-135M loads as a
# LlamaForCausalLM with tied embeddings).
SHAPES = {
    "prompt": dict(hidden=512, layers=4, heads=8, kv_heads=8, intermediate=1376, vocab=32000,
                   seq=256, batch=8, r=100, tie=False),
    "logits": dict(hidden=576, layers=30, heads=9, kv_heads=3, intermediate=1536, vocab=49152,
                   seq=128, batch=4, r=20, tie=True),
}


def build_llama(args: argparse.Namespace, device: torch.device) -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        max_position_embeddings=max(2048, args.seq + args.r),
        tie_word_embeddings=args.tie,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    config._attn_implementation = "sdpa"
    torch.manual_seed(args.seed)
    model = LlamaForCausalLM(config).to(device=device, dtype=DTYPES[args.dtype])
    model.requires_grad_(False)
    return model.train()  # Llama has no dropout; train() so that nothing takes an eval path


def make_batch(args: argparse.Namespace, device: torch.device) -> dict[str, torch.Tensor]:
    gen = torch.Generator(device="cpu").manual_seed(args.seed + 1)
    ids = torch.randint(3, args.vocab, (args.batch, args.seq), generator=gen)
    labels = ids.clone()
    labels[:, : args.seq // 2] = -100
    mask = torch.ones_like(ids)
    return {
        "input_ids": ids.to(device),
        "attention_mask": mask.to(device),
        "labels": labels.to(device),
    }


class Setup:
    """A module whose ``(**batch).loss`` is trained, and AdamW on its trainables."""

    def __init__(self, name: str, module: nn.Module, lr: float) -> None:
        self.name = name
        self.module = module
        params = [p for p in module.parameters() if p.requires_grad]
        self.n_trainable = sum(p.numel() for p in params)
        self.optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)

    def step(self, batch: dict[str, torch.Tensor]) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.module(**batch).loss
        loss.backward()
        self.optimizer.step()


def build_setups(
    model: nn.Module, args: argparse.Namespace, device: torch.device
) -> tuple[list[Setup], torch.Tensor]:
    from peft import PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model

    bb = SimpleNamespace(model=model, family="causal")
    emb = model.get_input_embeddings().weight
    p_init, _ = sample_p_init(emb, args.r, args.seed)
    d = p_init.shape[1]

    # Full logits in PT and DTVG, as PEFT computes them: this mode compares the
    # prompt paths, so the backbone does the same work in all three (--mode
    # logits measures answer-only logits).
    torch.manual_seed(args.seed)
    pt = PromptedModel(bb, SoftPrompt(p_init), answer_only_logits=False).to(device)

    torch.manual_seed(args.seed)
    gen = torch.Generator(device="cpu").manual_seed(args.seed + 2)
    target_tpv = 0.01 * torch.randn(args.r, d, generator=gen)
    # Sources near the target, so that the greedy rule selects a non-trivial group.
    source_tpvs = target_tpv + 0.01 * torch.randn(args.n, args.r, d, generator=gen)
    dtvg_prompt = DTVGPrompt(
        p_init,
        target_tpv,
        source_tpvs,
        [f"src{i}" for i in range(args.n)],
        rule="greedy",
    ).to(device)
    dtvg = PromptedModel(bb, dtvg_prompt, answer_only_logits=False)

    torch.manual_seed(args.seed)
    peft_cfg = PromptTuningConfig(
        task_type=TaskType.CAUSAL_LM,
        num_virtual_tokens=args.r,
        prompt_tuning_init=PromptTuningInit.RANDOM,
    )
    peft_model = get_peft_model(model, peft_cfg).to(device)
    peft_model.train()
    # Same prompt values as our PT (RANDOM init is N(0, 1); this keeps the loss comparable).
    with torch.no_grad():
        peft_model.prompt_encoder["default"].embedding.weight.copy_(p_init)

    setups = [
        Setup("PT", pt, args.lr),
        Setup("DTVG", dtvg, args.lr),
        Setup("PEFT", peft_model, args.lr),
    ]
    return setups, p_init


def check_same_loss(setups: list[Setup], batch: dict[str, torch.Tensor]) -> tuple[float, float]:
    by_name = {s.name: s for s in setups}
    with torch.no_grad():
        ours = float(by_name["PT"].module(**batch).loss)
        peft = float(by_name["PEFT"].module(**batch).loss)
    return ours, peft


def time_steps(fn: Callable[[], None], steps: int, device: torch.device) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) per call."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(steps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps, (time.process_time() - cpu_start) / steps


def timed_rounds(
    setups: list[Setup], batch: dict[str, torch.Tensor], rounds: int, steps: int,
    device: torch.device,
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall and CPU seconds per step of every set-up, round by round; the
    order rotates each round so that no set-up always runs first."""
    times: dict[str, list[float]] = {s.name: [] for s in setups}
    cpu_times: dict[str, list[float]] = {s.name: [] for s in setups}
    for rnd in range(rounds):
        k = rnd % len(setups)
        for s in setups[k:] + setups[:k]:
            wall, cpu = time_steps(lambda s=s: s.step(batch), steps, device)
            times[s.name].append(wall)
            cpu_times[s.name].append(cpu)
        print(
            f"round {rnd + 1}/{rounds}: "
            + "  ".join(f"{n} {t[-1] * 1e3:.1f} ms" for n, t in times.items())
        )
    return times, cpu_times


def prompt_paths(
    setups: list[Setup], batch: dict[str, torch.Tensor]
) -> dict[str, Callable[[], None]]:
    """Each set-up's own work outside the backbone: build the prompt, put it in
    front of the token embeddings (mask, labels, positions), and backpropagate
    a fixed gradient from the extended embeddings to the trainable prompt."""
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    by_name = {s.name: s.module for s in setups}
    grad = None

    def ours(pm: PromptedModel) -> Callable[[], None]:
        def run() -> None:
            nonlocal grad
            emb, mask_ext, _ = pm.insert_prompt(ids, mask, labels)
            _position_ids(mask_ext)
            if grad is None:
                grad = torch.ones_like(emb)
            torch.autograd.backward(emb, grad)

        return run

    peft = by_name["PEFT"]
    r = peft.active_peft_config.num_virtual_tokens

    def peft_run() -> None:  # PeftModelForCausalLM.forward's prompt-tuning branch
        nonlocal grad
        bsz = ids.shape[0]
        emb = peft.word_embeddings(ids)
        torch.cat((torch.ones(bsz, r).to(mask.device), mask), dim=1)
        torch.cat((torch.full((bsz, r), -100).to(labels.device), labels), dim=1)
        prompts = peft.get_prompt(batch_size=bsz).to(emb.dtype)
        emb = torch.cat((prompts, emb), dim=1)
        if grad is None:
            grad = torch.ones_like(emb)
        torch.autograd.backward(emb, grad)

    return {"PT": ours(by_name["PT"]), "DTVG": ours(by_name["DTVG"]), "PEFT": peft_run}


def verdict(ratio: float, target: float) -> str:
    return "PASS" if ratio <= target else "MISS"


def profile(setups: list[Setup], batch: dict[str, torch.Tensor], steps: int, rows: int) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as tprofile

    activities = [ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(ProfilerActivity.CUDA)
    for s in setups:
        with tprofile(activities=activities) as prof:
            for _ in range(steps):
                s.step(batch)
        print(f"\n=== profile {s.name} ({steps} steps) ===")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--mode", choices=sorted(SHAPES), default="prompt")
    parser.add_argument("--hidden", type=int, help="default: per mode (SHAPES)")
    parser.add_argument("--layers", type=int)
    parser.add_argument("--heads", type=int)
    parser.add_argument("--kv-heads", type=int)
    parser.add_argument("--intermediate", type=int)
    parser.add_argument("--vocab", type=int)
    parser.add_argument("--seq", type=int)
    parser.add_argument("--batch", type=int)
    parser.add_argument("--r", type=int)
    parser.add_argument("--tie", action=argparse.BooleanOptionalAction, default=None,
                        help="tie the output head to the embeddings")
    parser.add_argument("--answer-tokens", type=int, default=4,
                        help="logits mode: answer tokens at the end of each row")
    parser.add_argument("--memory-child", choices=["full", "answer-only"],
                        help=argparse.SUPPRESS)  # logits mode: one memory measurement
    parser.add_argument("--n", type=int, default=6)
    parser.add_argument("--lr", type=float, default=0.3)
    parser.add_argument("--steps", type=int, default=1, help="timed steps per set-up per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per set-up first")
    parser.add_argument("--path-iters", type=int, default=10, help="calls per round, prompt path")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--profile", type=int, default=0, help="also profile this many steps each")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for key, value in SHAPES[args.mode].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.mode == "logits":
        logits_main(args)
        return

    device = torch.device(args.device)
    model = build_llama(args, device)
    batch = make_batch(args, device)
    setups, _ = build_setups(model, args, device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"{name}, torch {torch.__version__}, threads {torch.get_num_threads()}: Llama hidden "
        f"{args.hidden} layers {args.layers} heads {args.heads} inter {args.intermediate} vocab "
        f"{args.vocab}, {args.dtype}, batch {args.batch} x seq {args.seq}, r={args.r}, n={args.n}"
    )
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("trainable params: " + ", ".join(f"{s.name} {s.n_trainable}" for s in setups))
    ours, peft = check_same_loss(setups, batch)
    print(
        f"same prompt, same batch: loss PT {ours:.6f}  PEFT {peft:.6f}  |diff| {abs(ours - peft):.2e}"
    )

    for s in setups:
        for _ in range(args.warmup):
            s.step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()

    times, cpu_times = timed_rounds(setups, batch, args.rounds, args.steps, device)
    med = {n: statistics.median(t) for n, t in times.items()}
    print(
        f"median step time ({args.rounds} rounds x {args.steps} steps): "
        + "  ".join(f"{n} {m * 1e3:.1f} ms" for n, m in med.items())
    )

    print("min step time: " + "  ".join(f"{n} {min(t) * 1e3:.1f} ms" for n, t in times.items()))

    def paired(a: str, b: str) -> float:  # per-round ratios cancel slow drifts of the load
        return statistics.median(x / y for x, y in zip(times[a], times[b], strict=True))

    print(
        f"median of per-round ratios: DTVG/PT {paired('DTVG', 'PT'):.3f}  PT/PEFT {paired('PT', 'PEFT'):.3f}"
    )
    if device.type == "cpu":
        cmed = {n: statistics.median(t) for n, t in cpu_times.items()}
        print(
            "median process CPU time per step: "
            + "  ".join(f"{n} {m * 1e3:.1f} ms" for n, m in cmed.items())
            + f"  (DTVG/PT {cmed['DTVG'] / cmed['PT']:.3f}  PT/PEFT {cmed['PT'] / cmed['PEFT']:.3f})"
        )

    # The set-ups differ only outside the backbone: time that part alone (precise, cheap).
    paths = prompt_paths(setups, batch)
    path_times: dict[str, list[float]] = {n: [] for n in paths}
    for fn in paths.values():
        for _ in range(3):
            fn()
    for _ in range(args.rounds):
        for n, fn in paths.items():
            path_times[n].append(time_steps(fn, args.path_iters, device)[0])
    for s in setups:
        s.optimizer.zero_grad(set_to_none=True)
    pmed = {n: statistics.median(t) for n, t in path_times.items()}
    print(
        "prompt path alone (build + insert + backward, no backbone): "
        + "  ".join(f"{n} {m * 1e3:.2f} ms" for n, m in pmed.items())
    )
    base = med["PEFT"]
    print(
        "implied by the prompt paths: "
        f"DTVG/PT {(base + pmed['DTVG'] - pmed['PEFT']) / (base + pmed['PT'] - pmed['PEFT']):.4f}  "
        f"PT/PEFT {(base + pmed['PT'] - pmed['PEFT']) / base:.4f}"
    )
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    r_dtvg = med["DTVG"] / med["PT"]
    r_peft = med["PT"] / med["PEFT"]
    print(
        f"DTVG/PT   = {r_dtvg:.3f}  (target <= {DTVG_TARGET:.2f}; paper 1.096 on T5-base)  "
        f"{verdict(r_dtvg, DTVG_TARGET)}"
    )
    print(
        f"PT/PEFT   = {r_peft:.3f}  (target <= {PEFT_TARGET:.2f})  {verdict(r_peft, PEFT_TARGET)}"
    )
    if args.profile:
        profile(setups, batch, args.profile, rows=25)


# ---------------------------------------------------------------- --mode logits


def make_answer_batch(args: argparse.Namespace, device: torch.device) -> dict[str, torch.Tensor]:
    """Full-length rows whose last ``--answer-tokens`` tokens are the answer."""
    if not 0 < args.answer_tokens < args.seq:
        raise SystemExit(f"--answer-tokens={args.answer_tokens} must be in 1..{args.seq - 1}")
    gen = torch.Generator(device="cpu").manual_seed(args.seed + 1)
    ids = torch.randint(3, args.vocab, (args.batch, args.seq), generator=gen)
    labels = torch.full_like(ids, -100)
    labels[:, -args.answer_tokens :] = ids[:, -args.answer_tokens :]
    return {
        "input_ids": ids.to(device),
        "attention_mask": torch.ones_like(ids).to(device),
        "labels": labels.to(device),
    }


def logits_setups(args: argparse.Namespace, device: torch.device) -> list[Setup]:
    """Two PromptedModels on one frozen backbone, same initial prompt: the
    head over the whole sequence ("full") and at the answer rows only."""
    model = build_llama(args, device)
    bb = SimpleNamespace(model=model, family="causal")
    p_init, _ = sample_p_init(model.get_input_embeddings().weight, args.r, args.seed)
    return [
        Setup(name, PromptedModel(bb, SoftPrompt(p_init), answer_only_logits=on).to(device), args.lr)
        for name, on in (("full", False), ("answer-only", True))
    ]


def head_paths(
    model: nn.Module, args: argparse.Namespace, device: torch.device
) -> dict[str, Callable[[], None]]:
    """The output head and loss of each mode on fixed final hidden states
    [B, L + r, d], backward to those states: the backbone's head and its own
    loss over every row ("full"), or the rows before an answer token only."""
    from dtvg_dist.model.prompt import token_mean_loss

    gen = torch.Generator(device="cpu").manual_seed(args.seed + 3)
    ext = args.seq + args.r
    dtype = DTYPES[args.dtype]
    hidden = torch.randn(args.batch, ext, args.hidden, generator=gen).to(device, dtype)
    hidden.requires_grad_(True)
    labels = torch.full((args.batch, ext), -100, dtype=torch.long)
    labels[:, -args.answer_tokens :] = torch.randint(
        3, args.vocab, (args.batch, args.answer_tokens), generator=gen
    )
    labels = labels.to(device)
    keep = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=-100) != -100
    targets = labels[:, 1:][keep[:, :-1]]
    head = model.get_output_embeddings()

    def full() -> None:
        hidden.grad = None
        loss = model.loss_function(logits=head(hidden), labels=labels, vocab_size=args.vocab)
        loss.backward()

    def answer_only() -> None:
        hidden.grad = None
        token_mean_loss(head(hidden[keep]), targets).backward()

    return {"full": full, "answer-only": answer_only}


def _rss_kib(field: str) -> int:
    with open("/proc/self/status", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def memory_child(args: argparse.Namespace) -> None:
    """Subprocess body: one warm-up step, reset the RSS high-water mark, one
    measured step; prints a JSON line with the peak above the RSS before it."""
    device = torch.device(args.device)
    setups = {s.name: s for s in logits_setups(args, device)}
    setup = setups[args.memory_child]  # the other mode's extra state is its [r, d] prompt
    batch = make_answer_batch(args, device)
    setup.step(batch)
    before = _rss_kib("VmRSS")
    with open("/proc/self/clear_refs", "w", encoding="utf-8") as fh:
        fh.write("5")  # reset VmHWM to the current RSS (Linux >= 4.0)
    setup.step(batch)
    peak = _rss_kib("VmHWM")
    print(json.dumps({"rss_before_kib": before, "peak_kib": peak}))


def cpu_peak_memory(args: argparse.Namespace) -> dict[str, dict[str, int]]:
    """Each mode's step peak, measured in a fresh process (no allocator
    state carried over from the other mode)."""
    out = {}
    for mode in ("full", "answer-only"):
        argv = [sys.executable, __file__, *sys.argv[1:], "--memory-child", mode]
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"memory child {mode} failed:\n{proc.stderr[-3000:]}")
        out[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def cuda_peak_memory(setups: list[Setup], batch: dict[str, torch.Tensor]) -> dict[str, int]:
    out = {}
    for s in setups:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        s.step(batch)
        torch.cuda.synchronize()
        out[s.name] = torch.cuda.max_memory_allocated() - base
    return out


def logits_main(args: argparse.Namespace) -> None:
    if args.memory_child:
        memory_child(args)
        return
    device = torch.device(args.device)
    setups = logits_setups(args, device)
    batch = make_answer_batch(args, device)
    full, answer = setups
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    ext = args.seq + args.r
    backbone = full.module.model
    tied = backbone.get_output_embeddings().weight is backbone.get_input_embeddings().weight
    print(
        f"{name}, torch {torch.__version__}, threads {torch.get_num_threads()}: Llama hidden "
        f"{args.hidden} layers {args.layers} heads {args.heads}/{args.kv_heads} KV inter "
        f"{args.intermediate} vocab {args.vocab} tied={tied}, {args.dtype}, batch "
        f"{args.batch} x {args.seq} text tokens (last {args.answer_tokens} = answer), r={args.r}"
    )
    print(
        f"head rows per step: full {args.batch * ext} (= {args.batch} x {ext}), answer-only "
        f"{args.batch * args.answer_tokens}"
    )
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with torch.no_grad():
        loss_full = float(full.module(**batch).loss)
        loss_answer = float(answer.module(**batch).loss)
    diff = abs(loss_full - loss_answer)
    print(
        f"same prompt, same batch: loss full {loss_full:.6f}  answer-only {loss_answer:.6f}  "
        f"|diff| {diff:.2e}  (target <= 1e-5)  {'PASS' if diff <= 1e-5 else 'MISS'}"
    )
    for s in setups:
        for _ in range(args.warmup):
            s.step(batch)
    times, cpu_times = timed_rounds(setups, batch, args.rounds, args.steps, device)
    med = {n: statistics.median(t) for n, t in times.items()}
    paired = statistics.median(
        a / b for a, b in zip(times["full"], times["answer-only"], strict=True)
    )
    print(
        f"median step time ({args.rounds} rounds x {args.steps} steps): "
        + "  ".join(f"{n} {m * 1e3:.1f} ms" for n, m in med.items())
    )
    print(f"median of per-round ratios full / answer-only: {paired:.3f}")
    if device.type == "cpu":
        cmed = {n: statistics.median(t) for n, t in cpu_times.items()}
        print(
            "median process CPU time per step: "
            + "  ".join(f"{n} {m * 1e3:.1f} ms" for n, m in cmed.items())
            + f"  (full / answer-only {cmed['full'] / cmed['answer-only']:.3f})"
        )
    # The modes differ only in the head and the loss: time that part alone.
    heads = head_paths(full.module.model, args, device)
    head_times: dict[str, list[float]] = {n: [] for n in heads}
    for fn in heads.values():
        fn()
    for _ in range(args.rounds):
        for n, fn in heads.items():
            head_times[n].append(time_steps(fn, args.path_iters, device)[0])
    hmed = {n: statistics.median(t) for n, t in head_times.items()}
    implied = (med["answer-only"] + hmed["full"] - hmed["answer-only"]) / med["answer-only"]
    print(
        "output head + loss alone (forward + backward to the hidden states): "
        + "  ".join(f"{n} {m * 1e3:.1f} ms" for n, m in hmed.items())
        + f"; implied full / answer-only step {implied:.3f}"
    )
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    ratio = med["full"] / med["answer-only"]
    print(
        f"full / answer-only = {ratio:.3f}  (target >= {LOGITS_TARGET:.2f})  "
        f"{'PASS' if ratio >= LOGITS_TARGET else 'MISS'}"
    )
    if device.type == "cuda":
        peaks = cuda_peak_memory(setups, batch)
        print(
            "peak memory of one step above the allocated memory before it (cuda "
            "max_memory_allocated): "
            + "  ".join(f"{n} {b / 2**20:.1f} MiB" for n, b in peaks.items())
            + f"  (answer-only / full {peaks['answer-only'] / peaks['full']:.3f})"
        )
        return
    del setups, full, answer
    mem = cpu_peak_memory(args)
    print(
        "peak RSS of one step, fresh process per mode (VmHWM after a reset; above the "
        "RSS before the step / total): "
        + "  ".join(
            f"{n} {(m['peak_kib'] - m['rss_before_kib']) / 1024:.1f} / {m['peak_kib'] / 1024:.1f} MiB"
            for n, m in mem.items()
        )
    )


if __name__ == "__main__":
    main()
