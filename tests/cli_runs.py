"""Running the training CLI in a process of its own, as a user would (warm:
tests/warm_python.py, unless a test asks for a fresh interpreter)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import warm_python
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]


def start_cli(*args: str, env: dict[str, str] | None = None,
              warm: bool = True) -> subprocess.Popen | warm_python.WarmProcess:
    """The training command in a process of its own, started (several can run
    side by side); `warm=False`: a fresh interpreter, as `python -m` starts it."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **(env or {})}
    cmd = [sys.executable, "-m", "dtvg_dist.train", *args, "logging.progress_bar=false"]
    start = warm_python.popen if warm else subprocess.Popen
    return start(cmd, cwd=REPO, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen | warm_python.WarmProcess, timeout: int = 600) -> subprocess.CompletedProcess:
    stdout, stderr = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return finish(start_cli(*args, env=env), timeout)


def check_ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def prompt_tensors(run_dir: Path) -> dict:
    return load_file(str(run_dir / "prompt.safetensors"))


def losses(run_dir: Path) -> list[float]:
    return [row["loss"] for row in jsonl(run_dir / "metrics.jsonl") if "loss" in row]
