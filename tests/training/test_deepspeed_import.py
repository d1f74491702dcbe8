"""DeepSpeed is imported without mlflow (training.distributed.import_deepspeed_without_mlflow):
every ZeRO-3 rank skips mlflow's import, and mlflow stays importable. On CPU
it compiles no op training never calls (skip_deepspeed_cpu_inference_op)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dtvg_dist.training.distributed import import_deepspeed_without_mlflow


@pytest.mark.slow
def test_deepspeed_imports_without_mlflow_which_imports_after():
    code = ("import sys\nfrom dtvg_dist.training.distributed import import_deepspeed_without_mlflow\n"
            "import_deepspeed_without_mlflow([])\n"
            "print('deepspeed' in sys.modules, 'mlflow' in sys.modules)\n"
            "from deepspeed.autotuning import autotuner\nprint(autotuner.has_mlflow)\n"
            "import mlflow\nprint(mlflow.__name__)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[-4:] == ["True", "False", "False", "mlflow"], proc.stdout  # after DeepSpeed's notice


def test_a_run_tracked_with_mlflow_imports_nothing_here(monkeypatch):
    """With mlflow among the trackers DeepSpeed is left to import it (accelerate's
    tracker needs it anyway): nothing is imported or hidden here."""
    monkeypatch.delitem(sys.modules, "deepspeed", raising=False)
    monkeypatch.delitem(sys.modules, "mlflow", raising=False)
    import_deepspeed_without_mlflow(["tensorboard", "mlflow"])
    assert "deepspeed" not in sys.modules and "mlflow" not in sys.modules


@pytest.mark.slow
def test_on_cpu_deepspeed_would_build_its_shm_op_and_now_does_not(tmp_path: Path):
    """This machine can build the op (DeepSpeed's own probe says so), and
    after skip_deepspeed_cpu_inference_op DeepSpeed's comm backend asks for
    it and gets None, with nothing written to the extensions folder."""
    code = ("from dtvg_dist.training.distributed import (SHM_COMM_OP, import_deepspeed_without_mlflow,\n"
            "    skip_deepspeed_cpu_inference_op)\n"
            "import_deepspeed_without_mlflow([])\n"
            "import deepspeed.ops\n"
            "print(deepspeed.ops.__compatible_ops__[SHM_COMM_OP])\n"
            "print(skip_deepspeed_cpu_inference_op())\n"
            "from deepspeed.comm.torch import build_shm_op\n"
            "print(build_shm_op())\n")
    extensions = tmp_path / "torch_extensions"
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(extensions), "DS_ACCELERATOR": "cpu",
           "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[-3:] == ["True", "True", "None"], proc.stdout  # after DeepSpeed's notice
    assert not extensions.exists() or not any(extensions.rglob("*")), list(extensions.rglob("*"))
