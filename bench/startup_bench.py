"""What a tiny training process costs, and what two start-up changes saved.

A tiny-t5 `stage=all` run (five stage-1 tasks of 4 steps, 12 DTVG steps) as
the suite starts it dozens of times, timed as a subprocess in interleaved
rounds, against the same run with the cost it paid before:

- `+deepspeed`: DeepSpeed imported first, as accelerate's `unwrap_model`
  did in every evaluation while DeepSpeed is installed (it imports mlflow);
  `training.distributed.unwrapped` no longer calls it outside DeepSpeed.
- `+fsync`: an fsync after every appended log row, as `RunFiles` did; it now
  syncs the logs once per checkpoint.
- `+sklearn`: scikit-learn's metrics imported, as `metrics.accuracy` did
  (`accuracy_score`) in every evaluation; accuracy is now a numpy mean.

Prints each variant's median wall and CPU seconds and its ratio to the plain
run, measured in this one run (these machines are noisy).

    python bench/startup_bench.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ARGS = ["recipe=tiny-t5", "stage1.max_steps=4", "eval.every_steps=2", "logging.progress_bar=false"]

# The old behaviours, put back around the unchanged trainer.
PRELUDES = {
    "plain": "",
    "+deepspeed": "import deepspeed\n",
    "+fsync": (
        "import os\nfrom dtvg_dist.store import run_files\n"
        "_append = run_files.RunFiles._append\n"
        "def _synced(self, name, rows):\n"
        "    _append(self, name, rows)\n"
        "    if self.enabled and rows:\n"
        "        with open(self.dir / name, 'rb') as handle:\n"
        "            os.fsync(handle.fileno())\n"
        "run_files.RunFiles._append = _synced\n"
    ),
    "+sklearn": "import sklearn.metrics\n",
}


def _run(prelude: str, out: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of one tiny run in a fresh process."""
    code = (f"{prelude}import runpy, sys\nsys.argv = ['dtvg_dist.train', *sys.argv[1:]]\n"
            "runpy.run_module('dtvg_dist.train', run_name='__main__', alter_sys=True)\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "DTVG_CACHE": str(out.parent / "cache")}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *ARGS, f"output_dir={out}",
                           f"bank_dir={out / 'bank'}"], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"run failed: {proc.stderr[-3000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in PRELUDES}
    with tempfile.TemporaryDirectory() as tmp:
        _run("", Path(tmp) / "warm")  # caches (tokenized splits, bytecode) for every round alike
        for i in range(args.rounds):
            for name, prelude in PRELUDES.items():
                times[name].append(_run(prelude, Path(tmp) / f"{name}-{i}"))
    plain_wall = statistics.median(w for w, _ in times["plain"])
    plain_cpu = statistics.median(c for _, c in times["plain"])
    print(f"tiny-t5 stage=all run, {args.rounds} interleaved rounds, medians")
    for name, rows in times.items():
        wall, cpu = statistics.median(w for w, _ in rows), statistics.median(c for _, c in rows)
        print(f"{name:>11}: {wall:6.2f} s wall {cpu:6.2f} s CPU   ratio to plain: "
              f"wall {wall / plain_wall:.3f} CPU {cpu / plain_cpu:.3f}")


if __name__ == "__main__":
    main()
