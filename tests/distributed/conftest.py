"""Shared runs for the multi-process tests (CPU, gloo).

The single-process references (stage 1 into a bank, then stage 2) for tiny
Llama and tiny T5 run once per session, side by side; every multi-process
test trains stage 2 against the same bank and compares with them.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from dist_runs import check, env, single_cmd, start, wait


def _shm_op_cached() -> bool:
    """DeepSpeed's shm op is in the torch extensions cache (named as
    torch.utils.cpp_extension names its build folders)."""
    import os

    import torch
    from torch.utils.cpp_extension import get_default_build_root

    root = os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root()
    cuda = torch.version.cuda
    flavour = "cpu" if cuda is None else "cu" + cuda.replace(".", "")
    version = f"py{sys.version_info.major}{sys.version_info.minor}_{flavour}"
    return (Path(root) / version / "deepspeed_shm_comm" / "deepspeed_shm_comm.so").is_file()


@pytest.fixture(scope="session")
def deepspeed_ops() -> None:
    """DeepSpeed compiles its shm collective op on the first distributed use
    (35-45 s, 1.5 GB). Build it once here, in one process, into the torch
    extensions cache (TORCH_EXTENSIONS_DIR, default ~/.cache/torch_extensions;
    CI keeps that folder between runs), so no test pays it or races for it."""
    if _shm_op_cached():
        return
    code = "from deepspeed.comm.torch import build_shm_op; build_shm_op()"
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env(), capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-4000:]


@dataclass
class Reference:
    """A finished single-process stage=all run: its bank and its stage-2 outputs."""

    recipe: str
    bank: Path
    out: Path


@pytest.fixture(scope="session")
def references(tmp_path_factory: pytest.TempPathFactory, deepspeed_ops) -> dict[str, Reference]:
    root = tmp_path_factory.mktemp("references")
    refs, procs = {}, []
    for recipe in ("tiny-llama", "tiny-t5"):
        ref = Reference(recipe, root / recipe / "bank", root / recipe / "run")
        log = root / f"{recipe}.log"
        cmd = single_cmd(
            f"recipe={recipe}", "stage=all", f"output_dir={ref.out}", f"bank_dir={ref.bank}"
        )
        procs.append((start(cmd, log), log))
        refs[recipe] = ref
    for proc, log in procs:
        check(wait(proc, log, timeout=600), log)
    return refs
