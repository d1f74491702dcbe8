"""How much of the frozen backbone each rank holds under DeepSpeed ZeRO-3.

    python bench/zero3_memory.py            # measure on CPU (world size 1 and 2) + Llama-3-8B table
    python bench/zero3_memory.py --table    # only the table computed from the Llama-3-8B config

Measured part: a small Llama (random weights, saved once as a checkpoint) is
loaded by `dtvg_dist.model.backbone.load_backbone` under the CPU ZeRO-3 launch
config (`launch_configs/cpu_zero3_2proc.yaml`, gloo) with 1 and 2 processes.
Each rank reports the parameter bytes it holds (its ZeRO-3 partitions plus
any whole copies) right after loading (zero.Init: the model never exists
whole) and after `prepare` and one training step with a DTVG prompt (the
prompt and the small persistent parameters are whole on every rank then).
The ratio to total / N is the figure of merit (target <= 1.05). Beside it,
what `dtvg_dist.costs.zero3_elements_per_rank` predicts from the config
alone (a ceil(n / N) slice of every tensor, plus whole copies of the tensors
at or under the persistence threshold once a step has run), and the ratio
measured / predicted (1.000 when the planner's arithmetic is exact).

Table part: parameter bytes per GPU for Llama-3-8B, computed by
`dtvg_dist.costs` from its config (no weights): bf16 under ZeRO-3 over
1/2/4/8 GPUs, and 8-bit (bitsandbytes LLM.int8: decoder linears int8 plus
one fp32 scale per output row; embeddings, norms and lm_head kept in bf16)
on one GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # this checkout's dtvg_dist, also without an install
LAUNCH = REPO / "launch_configs" / "cpu_zero3_2proc.yaml"

BENCH_LLAMA = {
    "model_type": "llama",
    "vocab_size": 2048,
    "hidden_size": 128,
    "intermediate_size": 344,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
    "tie_word_embeddings": False,
}

LLAMA3_8B = "meta-llama/Meta-Llama-3-8B"  # a known shape of dtvg_dist.costs (config cited there)
BENCH_R = 16  # the worker's prompt length
PROMPT_R = 100  # soft prompt length of the paper
N_SOURCES = 6  # DTVG source tasks of the paper's GLUE setting


# ---------------------------------------------------------------- worker side
def _held_bytes(model) -> int:
    total = 0
    for p in model.parameters():
        total += p.data.numel() * p.element_size()
        if hasattr(p, "ds_tensor"):
            total += p.ds_tensor.numel() * p.ds_tensor.element_size()
    return total


def _total_bytes(model) -> int:
    return sum(int(getattr(p, "ds_numel", p.numel())) * p.element_size() for p in model.parameters())


def worker(checkpoint: str, out: str) -> None:
    """Runs under `accelerate launch`: load, measure, one step, measure."""
    import torch

    from dtvg_dist.model.backbone import BackboneSettings, load_backbone
    from dtvg_dist.model.prompt import DTVGPrompt, PromptedModel
    from dtvg_dist.training.distributed import (
        build_accelerator,
        gathered,
        keep_prompt_whole,
        mask_broadcaster,
        zero_init,
        zero_stage,
    )

    acc = build_accelerator(60, [], tempfile.gettempdir(), batch_size=4, max_grad_norm=1.0)
    settings = BackboneSettings(name_or_path=checkpoint)
    with zero_init(acc, True):
        bb = load_backbone(settings, device=acc.device)
    at_load = _held_bytes(bb.model)
    total = _total_bytes(bb.model)
    weight = bb.model.get_input_embeddings().weight
    with gathered([weight]):
        p_init = weight.detach()[:BENCH_R].float().clone()
    gen = torch.Generator().manual_seed(0)
    d = p_init.shape[1]
    prompt = DTVGPrompt(
        p_init, 0.01 * torch.randn(BENCH_R, d, generator=gen),
        0.01 * torch.randn(3, BENCH_R, d, generator=gen), ["a", "b", "c"],
    ).to(acc.device)
    prompt.mask_sync = mask_broadcaster(acc)
    model = PromptedModel(bb, prompt)
    optimizer = torch.optim.AdamW(prompt.param_groups(0.1, 0.1, 0.0), lr=0.1)
    keep_prompt_whole(acc, prompt, bb.hidden_size)
    model, optimizer = acc.prepare(model, optimizer)
    ids = torch.randint(4, 2000, (2, 12), generator=gen)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
    batch = {k: v.to(acc.device) for k, v in batch.items()}
    loss = model(**batch).loss
    acc.backward(loss)
    optimizer.step()
    after_step = _held_bytes(bb.model)
    row = {
        "rank": acc.process_index,
        "world_size": acc.num_processes,
        "zero_stage": zero_stage(acc),
        "total_bytes": total,
        "held_bytes_at_load": at_load,
        "held_bytes_after_step": after_step,
    }
    rows: list = [None] * acc.num_processes
    if acc.num_processes > 1:
        torch.distributed.all_gather_object(rows, row)
    else:
        rows = [row]
    if acc.is_main_process:
        Path(out).write_text(json.dumps(rows))
    acc.wait_for_everyone()


# ---------------------------------------------------------------- driver side
def _save_checkpoint(folder: Path) -> Path:
    from dtvg_dist.model.backbone import BackboneSettings, load_backbone
    from dtvg_dist.model.toy_tokenizer import build_toy_tokenizer

    words = [f"w{i}" for i in range(200)]
    build_toy_tokenizer(words, str(folder / "tok"))
    bb = load_backbone(
        BackboneSettings(config=dict(BENCH_LLAMA), tokenizer=str(folder / "tok"), init_seed=0),
        device="cpu",
    )
    path = folder / "bench-llama"
    bb.model.save_pretrained(str(path))
    bb.tokenizer.save_pretrained(str(path))
    return path


def measure(world_sizes: list[int]) -> list[dict]:
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = _save_checkpoint(Path(tmp))
        for n in world_sizes:
            out = Path(tmp) / f"rows_{n}.json"
            cmd = [
                sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(LAUNCH),
                "--num_processes", str(n), "--main_process_port", str(29600 + n),
                str(Path(__file__).resolve()), "--worker", str(ckpt), str(out),
            ]
            env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
            start = time.time()
            proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
            if proc.returncode != 0:
                sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
                raise SystemExit(f"world size {n}: launch failed ({proc.returncode})")
            rows = json.loads(out.read_text())
            for row in rows:
                row["wall_s"] = round(time.time() - start, 1)
            results.extend(rows)
    return results


def predicted_bytes(world: int) -> tuple[int, int]:
    """(at load, after a step) per rank, from the config alone: fp32 slices of
    every tensor; after the step also whole copies of the tensors at or under
    the threshold that `keep_prompt_whole` sets (ds_zero3_cpu.json's "auto"
    = 10 x hidden, raised to the prompt's r x hidden)."""
    from dtvg_dist.costs import ModelShape, zero3_elements_per_rank

    shape = ModelShape.from_config(BENCH_LLAMA)
    threshold = max(10 * shape.hidden, BENCH_R * shape.hidden)
    part, persist = zero3_elements_per_rank(shape, world, threshold)
    return part * 4, (part + persist) * 4


def print_measured(rows: list[dict]) -> float:
    """The table; returns the largest |measured / predicted - 1|."""
    print("## Measured on CPU (gloo): per-rank backbone parameter bytes under ZeRO-3")
    print(f"model: Llama {BENCH_LLAMA['hidden_size']}d x {BENCH_LLAMA['num_hidden_layers']} layers, "
          f"vocab {BENCH_LLAMA['vocab_size']} (fp32), loaded from a checkpoint by load_backbone")
    print()
    print("| world size | rank | total bytes | held at load | / (total/N) | predicted | measured / predicted "
          "| held after prepare + 1 step | / (total/N) | predicted | measured / predicted |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    worst = 0.0
    for r in rows:
        share = r["total_bytes"] / r["world_size"]
        at_load, after = predicted_bytes(r["world_size"])
        q_load, q_after = r["held_bytes_at_load"] / at_load, r["held_bytes_after_step"] / after
        worst = max(worst, abs(q_load - 1), abs(q_after - 1))
        print(f"| {r['world_size']} | {r['rank']} | {r['total_bytes']:,} | {r['held_bytes_at_load']:,} | "
              f"{r['held_bytes_at_load'] / share:.3f} | {at_load:,} | {q_load:.4f} | "
              f"{r['held_bytes_after_step']:,} | {r['held_bytes_after_step'] / share:.3f} | "
              f"{after:,} | {q_after:.4f} |")
    print()
    return worst


def llama3_8b_table() -> str:
    from dtvg_dist.costs import (
        KNOWN_CONFIGS,
        ModelShape,
        PromptState,
        weight_bytes,
        zero3_elements_per_rank,
    )

    shape = ModelShape.from_config(KNOWN_CONFIGS[LLAMA3_8B][0])
    total = shape.parameters()
    d = shape.hidden
    int8 = sum(n for _, n, q in shape.tensors() if q)
    threshold = max(10 * d, PROMPT_R * d)  # keep_prompt_whole: above the prompt's size
    prompt = PromptState.of("dtvg", PROMPT_R, d, N_SOURCES)
    gib = 1024**3
    persistent = zero3_elements_per_rank(shape, 1, threshold)[1]
    lines = [
        "## Llama-3-8B, computed from its config (parameters only; no activations)",
        f"parameters: {total:,} ({total / 1e9:.2f} B); decoder linears {int8:,}, other "
        f"{total - int8:,}; persistent under ZeRO-3 (<= {threshold:,} elements, whole on every "
        f"GPU): {persistent:,}",
        f"DTVG prompt (r={PROMPT_R}, {N_SOURCES} sources), whole on every GPU: trainables "
        f"{prompt.trainable * 4 / 2**20:.1f} MiB fp32 + buffers {prompt.buffers * 4 / 2**20:.1f} MiB",
        "(`python -m dtvg_dist.plan` adds activations, evaluation, optimizer state and traffic)",
        "",
        "| setting | GPUs | backbone GiB per GPU | ratio to total/N |",
        "|---|---:|---:|---:|",
    ]
    bf16_total = total * 2
    for n in (1, 2, 4, 8):
        part, persist = zero3_elements_per_rank(shape, n, threshold)
        held = (part + persist) * 2
        lines.append(f"| bf16, ZeRO-3 | {n} | {held / gib:.2f} | {held / (bf16_total / n):.4f} |")
    lines.append(f"| 8-bit (LLM.int8), one process | 1 | {weight_bytes(shape, 2, True) / gib:.2f} | - |")
    lines.append(f"| bf16, no sharding (DDP or one GPU) | 1 | {bf16_total / gib:.2f} | - |")
    return "\n".join(lines)


def main() -> int:
    if len(sys.argv) >= 2 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", action="store_true", help="only the Llama-3-8B table")
    args = parser.parse_args()
    if not args.table:
        rows = measure([1, 2])
        off = print_measured(rows)
        print(f"largest |measured / predicted - 1|: {off:.4f}")
        worst = max(
            max(r["held_bytes_at_load"], r["held_bytes_after_step"]) / (r["total_bytes"] / r["world_size"])
            for r in rows
        )
        print(f"worst ratio: {worst:.3f} (target <= 1.05): {'OK' if worst <= 1.05 else 'OVER'}")
        print()
    print(llama3_8b_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
