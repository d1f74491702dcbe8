"""Launching the trainer as a user would: `python -m dtvg_dist.train` for one
process, `accelerate launch --config_file launch_configs/X.yaml` for several."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import warm_python
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "launch_configs"

# Small runs: stage 1 barely trains (the bank only has to exist), stage 2
# runs 6 steps with a checkpoint at step 3, and evaluation uses 15 examples in
# batches of 4, so the 2-rank shards are uneven (8 + 7) and the last batch is
# short on one rank.
COMMON = [
    "logging.progress_bar=false",
    "logging.every_steps=1",
    "stage1.max_steps=2",
    "optim.max_steps=6",
    "eval.every_steps=3",
    "eval.batch_size=4",
    "data.max_eval_examples=15",
    "distributed.timeout_s=60",
]


def env(**extra: str) -> dict[str, str]:
    out = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        # One thread per process, as `accelerate launch` gives its workers,
        # so the single-process reference does the same arithmetic.
        "OMP_NUM_THREADS": "1",
        # These tests are about CPU processes over gloo, also on a GPU machine.
        "CUDA_VISIBLE_DEVICES": "",
        "DS_ACCELERATOR": "cpu",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    out.update(extra)
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def single_cmd(*args: str) -> list[str]:
    """`python -m dtvg_dist.train` (later overrides win over COMMON)."""
    return [sys.executable, "-m", "dtvg_dist.train", *COMMON, *args]


def launch_cmd(
    config: str, *args: str, launcher_args: list[str] | None = None, port: int | None = None
) -> list[str]:
    """`accelerate launch --config_file launch_configs/<config> -m dtvg_dist.train ...`."""
    return [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(CONFIGS / config),
        "--main_process_port", str(port or free_port()),
        *(launcher_args or []),
        "-m", "dtvg_dist.train", *COMMON, *args,
    ]


def start(cmd: list[str], log: Path, **extra_env: str) -> subprocess.Popen:
    handle = open(log, "w")  # noqa: SIM115 - closed by wait()
    # the one-process runs start warm (tests/warm_python.py), launches cold
    return warm_python.popen(cmd, cwd=REPO, env=env(**extra_env), stdout=handle, stderr=subprocess.STDOUT)


def wait(proc: subprocess.Popen, log: Path, timeout: float = 300) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"timed out after {timeout} s; log tail:\n{tail(log)}") from None
    finally:
        if proc.stdout is not None:
            proc.stdout.close()


def run(cmd: list[str], log: Path, timeout: float = 300, **extra_env: str) -> int:
    return wait(start(cmd, log, **extra_env), log, timeout)


def tail(log: Path, chars: int = 6000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else "(no log)"


def check(code: int, log: Path) -> None:
    assert code == 0, f"exit {code}; log tail:\n{tail(log)}"


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def losses(run_dir: Path) -> list[float]:
    return [row["loss"] for row in jsonl(run_dir / "metrics.jsonl") if "loss" in row]


# how long an evaluation took differs between any two runs
TIMING = ("eval_time_s", "eval_examples_per_s")


def evals(run_dir: Path) -> list[dict]:
    """The evaluation rows, without their timing."""
    return [{k: v for k, v in row.items() if k not in TIMING}
            for row in jsonl(run_dir / "metrics.jsonl") if "split" in row]


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def prompt(run_dir: Path) -> dict:
    return load_file(str(run_dir / "prompt.safetensors"))


def groups(run_dir: Path) -> list[tuple[int, list[str]]]:
    return [(row["step"], row["group"]) for row in jsonl(run_dir / "grouping.jsonl")]
