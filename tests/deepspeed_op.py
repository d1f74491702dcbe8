"""DeepSpeed's shm collective op, which it compiles on the first distributed
use (35-45 s on one core, 1.5 GB): built once per machine into the torch
extensions cache (TORCH_EXTENSIONS_DIR, default ~/.cache/torch_extensions),
so no test pays it or races for it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def shm_op_cached() -> bool:
    """The op is in the torch extensions cache (named as
    torch.utils.cpp_extension names its build folders)."""
    import torch
    from torch.utils.cpp_extension import get_default_build_root

    root = os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root()
    cuda = torch.version.cuda
    flavour = "cpu" if cuda is None else "cu" + cuda.replace(".", "")
    version = f"py{sys.version_info.major}{sys.version_info.minor}_{flavour}"
    return (Path(root) / version / "deepspeed_shm_comm" / "deepspeed_shm_comm.so").is_file()


def build_shm_op() -> None:
    """Build it in one CPU-only process (nothing when it is cached)."""
    if shm_op_cached():
        return
    code = "from deepspeed.comm.torch import build_shm_op; build_shm_op()"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
