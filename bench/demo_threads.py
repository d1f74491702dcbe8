"""Training-step time of the demo's backbone at 1 and 2 torch threads,
interleaved in one run (why `python -m dtvg_dist.demo` uses one thread).

    python bench/demo_threads.py [--rounds 6 --steps 30]

Builds the `demo` recipe's T5 from its config (random weights: the time of a
step does not depend on them) and times forward + backward through a batch
shaped like the demo's (16 rows, 10 prompt rows + 12 tokens). Prints each
round's ms/step and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from omegaconf import OmegaConf
from transformers import AutoConfig, AutoModelForSeq2SeqLM

from dtvg_dist.orchestration.config import load_recipe


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    cfg = load_recipe("demo")
    params = OmegaConf.to_container(cfg.backbone.config)
    model = AutoModelForSeq2SeqLM.from_config(AutoConfig.for_model(params.pop("model_type"), **params))
    d = model.config.d_model
    embeds = torch.randn(cfg.optim.batch_size, cfg.prompt.length + 12, d, requires_grad=True)
    mask = torch.ones(embeds.shape[:2], dtype=torch.long)
    labels = torch.randint(4, 90, (cfg.optim.batch_size, 2))

    def step() -> None:
        model(inputs_embeds=embeds, attention_mask=mask, labels=labels).loss.backward()

    times: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(args.rounds):
        for threads in times:
            torch.set_num_threads(threads)
            for _ in range(3):
                step()
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            times[threads].append((time.perf_counter() - start) / args.steps * 1e3)
    for threads, values in times.items():
        print(f"{threads} thread(s): ms/step per round {[round(v, 1) for v in values]}, "
              f"median {statistics.median(values):.1f}")
    print(f"2 threads / 1 thread (medians): {statistics.median(times[2]) / statistics.median(times[1]):.2f}x")


if __name__ == "__main__":
    main()
