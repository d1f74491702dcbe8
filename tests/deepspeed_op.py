"""DeepSpeed's shm collective op, which it compiles on the first distributed
use (35-45 s on one core, 1.5 GB): built once per session into the torch
extensions cache (TORCH_EXTENSIONS_DIR, default ~/.cache/torch_extensions)
before the tests need it, so no test pays it or races for it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def build_shm_op() -> None:
    """Build it in one CPU-only process. DeepSpeed decides whether the cached
    build fits this interpreter and torch (a build another environment made,
    say a venv's, is rebuilt: the first ZeRO-3 test took 87 s instead of 13 s
    after one); when it fits this costs one import of DeepSpeed."""
    code = "from deepspeed.comm.torch import build_shm_op; build_shm_op()"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
