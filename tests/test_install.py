"""Installed, not checked out: the wheel (not an editable install) in a fresh
virtualenv, used from a folder outside any checkout. Recipes, launch configs
and a launch config's DeepSpeed JSON must all resolve from the package."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY = ["stage1.max_steps=2", "optim.max_steps=2", "eval.every_steps=2", "data.max_eval_examples=8",
        "logging.progress_bar=false"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd}\nexit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.mark.slow
@pytest.mark.distributed
def test_wheel_installed_in_a_fresh_venv_runs_from_any_folder(tmp_path):
    # Build from a copy, so the checkout gets no build/ or egg-info.
    src = tmp_path / "src"
    shutil.copytree(REPO, src, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", "runs", "tests", "bench", "build", "*.egg-info", "__pycache__", ".venv", "docs"))
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels),
          str(src)], tmp_path, dict(os.environ))
    (wheel,) = wheels.glob("dtvg_dist-*.whl")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], tmp_path, dict(os.environ))
    py = str(venv / "bin" / "python")  # its real path: a symlink elsewhere would lose pyvenv.cfg
    _run([py, "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)], tmp_path, dict(os.environ))
    work = tmp_path / "elsewhere"
    work.mkdir()
    # No PYTHONPATH: the wheel is what runs, not the checkout.
    env = {**os.environ, "PYTHONPATH": "", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "CUDA_VISIBLE_DEVICES": "", "DS_ACCELERATOR": "cpu", "TOKENIZERS_PARALLELISM": "false"}
    where = _run([py, "-c", "import dtvg_dist; print(dtvg_dist.__file__)"], work, env).stdout.strip()
    assert Path(where).is_relative_to(venv), where
    site = Path(where).parent

    # train tiny-t5, both stages, a tiny budget: one thread, in the background
    # while the short commands below take the other core
    train = subprocess.Popen([py, "-m", "dtvg_dist.train", "recipe=tiny-t5", f"output_dir={work / 'run'}",
                              f"bank_dir={work / 'bank'}", *TINY], cwd=work, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _check_the_short_commands(py, work, env, site)
        out, _ = train.communicate(timeout=600)
    finally:
        if train.poll() is None:
            train.kill()
    assert train.returncode == 0, f"train: exit {train.returncode}\n{out[-4000:]}"
    assert (work / "run" / "results.json").is_file(), out[-2000:]

    # 2 processes with the packaged ZeRO-3 CPU config: its DeepSpeed JSON is
    # written relative to a checkout's root, which this folder is not
    z3 = _run([py, "-m", "accelerate.commands.launch", "--config_file",
               str(site / "launch_configs" / "cpu_zero3_2proc.yaml"), "--main_process_port",
               str(_free_port()), "-m", "dtvg_dist.train", "recipe=tiny-t5", "stage=1",
               "stage1.tasks=[syn_same]", f"output_dir={work / 'z3'}", f"bank_dir={work / 'z3bank'}",
               *TINY], work, env)
    assert "2 process(es)" in z3.stdout + z3.stderr and "zero stage 3" in z3.stdout + z3.stderr
    assert (work / "z3bank" / "syn_same.safetensors").is_file()


def _check_the_short_commands(py: str, work: Path, env: dict[str, str], site: Path) -> None:
    """train --help, plan and reproduce --dry-run from the installed package."""
    help_text = _run([py, "-m", "dtvg_dist.train", "--help"], work, env).stdout
    assert f"recipes (packaged in {site / 'recipes'})" in help_text and "llama3-8b-cb" in help_text

    # plan: a launch line whose --config_file exists here, inside the installed package
    line = next(ln.strip() for ln in _run([py, "-m", "dtvg_dist.plan", "recipe=tiny-llama", "--gpus", "2",
                                           "--gpu-memory", "8"], work, env).stdout.splitlines()
                if ln.strip().startswith("accelerate launch"))
    config = Path(line.split()[3])
    assert config.is_file() and config.is_relative_to(site), line

    # reproduce --dry-run: the planner's line, the grid's folders under --runs-dir
    dry = _run([py, "-m", "dtvg_dist.reproduce", "table5", "--recipes", "llama3-8b-cb", "--seeds", "42",
                "--no-stage1", "--gpu-memory", "80", "--dry-run", "--executor", "local",
                "--runs-dir", str(work / "grid")], work, env).stdout
    assert f"{py} -m dtvg_dist.train recipe=llama3-8b-cb seed=42" in dry
    assert not (work / "grid").exists() or not any((work / "grid").rglob("results.json"))
