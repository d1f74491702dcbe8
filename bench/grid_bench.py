"""Wall time of the demo grid, `serial` against `local --max-parallel N`,
measured in one run on this machine, as a ratio.

    python bench/grid_bench.py [--max-parallel 2] [--seeds 1,2] [--rounds 1] [--full]

Each round runs `python -m dtvg_dist.reproduce demo` once per executor into
a fresh runs dir (order alternating between rounds), with the same
overrides: by default reduced budgets (random-weight backbone, 4 steps),
with --full the demo's own. The ratio is serial / local: above 1, local
saves time. Both train through subprocesses of the trainer, so the ratio
includes one interpreter start per run on either side.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REDUCED = ["backbone.name_or_path=null", "backbone.tokenizer=synthetic", "optim.max_steps=4",
           "stage1.max_steps=4", "stage1.source_max_steps=6", "eval.every_steps=2",
           "logging.progress_bar=false"]


def run(executor: list[str], seeds: str, overrides: list[str], root: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    env.setdefault("OMP_NUM_THREADS", "1")  # serial: one thread per run, as the demo
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "dtvg_dist.reproduce", "demo", "--seeds", seeds,
                           "--runs-dir", str(root), "--no-plot", *executor, *overrides],
                          cwd=root.parent, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(executor)} failed:\n{proc.stdout[-3000:]}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-parallel", type=int, default=2)
    parser.add_argument("--seeds", default="1,2")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--full", action="store_true", help="the demo's own budgets")
    args = parser.parse_args()
    overrides = [] if args.full else REDUCED
    local = ["--executor", "local", "--max-parallel", str(args.max_parallel)]
    times: dict[str, list[float]] = {"serial": [], "local": []}
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)  # one working dir: the synthetic backbone and data caches are shared
        for r in range(args.rounds):
            order = ["serial", "local"] if r % 2 == 0 else ["local", "serial"]
            for name in order:
                flags = ["--executor", "serial"] if name == "serial" else local
                times[name].append(run(flags, args.seeds, overrides, cache / f"{name}{r}"))
                print(f"round {r + 1}: {name} {times[name][-1]:.1f} s", flush=True)
    serial, par = statistics.median(times["serial"]), statistics.median(times["local"])
    print(f"demo grid (seeds {args.seeds}, {'full' if args.full else 'reduced'} budgets, "
          f"{os.cpu_count()} cores, {args.rounds} round(s), median): serial {serial:.1f} s, "
          f"local --max-parallel {args.max_parallel} {par:.1f} s, serial / local = {serial / par:.2f}")


if __name__ == "__main__":
    main()
