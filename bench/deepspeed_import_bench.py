"""What `import deepspeed` costs a ZeRO-3 rank, with and without mlflow.

DeepSpeed's autotuner imports mlflow when it is installed; the trainer hides
it for that import (`training.distributed.import_deepspeed_without_mlflow`),
since every rank of every ZeRO-3 launch pays it. Times, in fresh processes and
interleaved rounds, the import as a rank does it now against the plain
`import deepspeed`, both after the trainer's own modules are imported, and
prints the median wall and CPU seconds and their ratio, measured in this one
run (these machines are noisy).

    python bench/deepspeed_import_bench.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BEFORE = "import dtvg_dist.training.distributed as d\n"
VARIANTS = {
    "without mlflow": BEFORE + "d.import_deepspeed_without_mlflow([])\n",
    "plain import": BEFORE + "import deepspeed\n",
}


def _time(code: str) -> tuple[float, float]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "DS_ACCELERATOR": "cpu"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {proc.stderr[-3000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    codes = {"trainer modules only": BEFORE, **VARIANTS}
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in codes}
    _time(VARIANTS["plain import"])  # bytecode caches for every round alike
    for _ in range(args.rounds):
        for name, code in codes.items():
            times[name].append(_time(code))
    medians = {name: (statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs))
               for name, runs in times.items()}
    base_wall, base_cpu = medians["without mlflow"]
    print(f"{'':22s} {'wall s':>8s} {'cpu s':>8s} {'wall ratio':>11s}")
    for name, (wall, cpu) in medians.items():
        print(f"{name:22s} {wall:8.2f} {cpu:8.2f} {wall / base_wall:11.3f}")
    print(f"plain import / without mlflow: {medians['plain import'][0] / base_wall:.3f} (wall), "
          f"{medians['plain import'][1] / base_cpu:.3f} (cpu)")


if __name__ == "__main__":
    main()
