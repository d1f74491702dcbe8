"""DeepSpeed is imported without mlflow (training.distributed.import_deepspeed_without_mlflow):
every ZeRO-3 rank skips mlflow's import, and mlflow stays importable."""

from __future__ import annotations

import subprocess
import sys

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
