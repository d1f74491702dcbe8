"""Installed, not checked out: the wheel (not an editable install) in a fresh
virtualenv, used from a folder outside any checkout. Recipes, launch configs
and a launch config's DeepSpeed JSON must all resolve from the package."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from background import BACKGROUND

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


def _install_and_use(tmp_path: Path) -> dict:
    """Build the wheel, install it into a fresh venv, and use it from a folder
    outside any checkout; returns what the test checks."""
    # Build from a copy, so the checkout gets no build/ or egg-info.
    src = tmp_path / "src"
    shutil.copytree(REPO, src, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", "runs", "tests", "bench", "build", "*.egg-info", "__pycache__", ".venv", "docs"))
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels),
          str(src)], tmp_path, dict(os.environ))
    (wheel,) = wheels.glob("dtvg_dist-*.whl")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path, dict(os.environ))
    py = str(venv / "bin" / "python")  # its real path: a symlink elsewhere would lose pyvenv.cfg
    # The dependencies are this environment's (torch, DeepSpeed, ...): a .pth
    # line puts its site-packages on the venv's path, after the venv's own,
    # and runs no .pth inside it (an editable install's finder stays out).
    purelib = _run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path,
                   dict(os.environ)).stdout.strip()
    ours = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    Path(purelib, "dtvg_test_dependencies.pth").write_text("\n".join(ours) + "\n")
    _run([sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "--no-index", str(wheel)],
         tmp_path, dict(os.environ))
    work = tmp_path / "elsewhere"
    work.mkdir()
    # No PYTHONPATH: the wheel is what runs, not the checkout.
    env = {**os.environ, "PYTHONPATH": "", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "CUDA_VISIBLE_DEVICES": "", "DS_ACCELERATOR": "cpu", "TOKENIZERS_PARALLELISM": "false"}
    where = Path(_run([py, "-c", "import dtvg_dist; print(dtvg_dist.__file__)"], work, env).stdout.strip())
    site = where.parent
    # train tiny-t5, both stages, a tiny budget: one thread, in the background
    # while the short commands take the other core
    train = subprocess.Popen([py, "-m", "dtvg_dist.train", "recipe=tiny-t5", f"output_dir={work / 'run'}",
                              f"bank_dir={work / 'bank'}", *TINY], cwd=work, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        short = _short_commands(py, work, env)
        out, _ = train.communicate(timeout=600)
    finally:
        if train.poll() is None:
            train.kill()
    # 2 processes with the packaged ZeRO-3 CPU config: its DeepSpeed JSON is
    # written relative to a checkout's root, which this folder is not
    z3 = _run([py, "-m", "accelerate.commands.launch", "--config_file",
               str(site / "launch_configs" / "cpu_zero3_2proc.yaml"), "--main_process_port",
               str(_free_port()), "-m", "dtvg_dist.train", "recipe=tiny-t5", "stage=1",
               "stage1.tasks=[syn_same]", f"output_dir={work / 'z3'}", f"bank_dir={work / 'z3bank'}",
               *TINY], work, env)
    return {"py": py, "venv": venv, "work": work, "where": where, "site": site, "train_exit": train.returncode,
            "train_out": out, "z3": z3.stdout + z3.stderr, **short}


def _short_commands(py: str, work: Path, env: dict[str, str]) -> dict:
    """train --help, plan and reproduce --dry-run from the installed package."""
    help_text = _run([py, "-m", "dtvg_dist.train", "--help"], work, env).stdout
    plan = _run([py, "-m", "dtvg_dist.plan", "recipe=tiny-llama", "--gpus", "2", "--gpu-memory", "8"],
                work, env).stdout
    dry = _run([py, "-m", "dtvg_dist.reproduce", "table5", "--recipes", "llama3-8b-cb", "--seeds", "42",
                "--no-stage1", "--gpu-memory", "80", "--dry-run", "--executor", "local",
                "--runs-dir", str(work / "grid")], work, env).stdout
    return {"help": help_text, "plan": plan, "dry": dry}


# in the background (tests/background.py): pip, the venv and the wheel's runs
BACKGROUND.offer("wheel_in_a_venv", lambda: _install_and_use(BACKGROUND.folder("wheel")))


@pytest.fixture(scope="module")
def wheel_in_a_venv(tmp_path_factory) -> dict:
    return BACKGROUND.result("wheel_in_a_venv", lambda: _install_and_use(tmp_path_factory.mktemp("wheel")))


@pytest.mark.slow
@pytest.mark.distributed
def test_wheel_installed_in_a_fresh_venv_runs_from_any_folder(wheel_in_a_venv):
    got = wheel_in_a_venv
    site, work, py = got["site"], got["work"], got["py"]
    assert got["where"].is_relative_to(got["venv"]), got["where"]
    # train, both stages, from the package's recipe
    assert got["train_exit"] == 0, f"train: exit {got['train_exit']}\n{got['train_out'][-4000:]}"
    assert (work / "run" / "results.json").is_file(), got["train_out"][-2000:]
    # train --help lists the packaged recipes
    assert f"recipes (packaged in {site / 'recipes'})" in got["help"] and "llama3-8b-cb" in got["help"]
    # plan: a launch line whose --config_file exists here, inside the installed package
    line = next(ln.strip() for ln in got["plan"].splitlines() if ln.strip().startswith("accelerate launch"))
    config = Path(line.split()[3])
    assert config.is_file() and config.is_relative_to(site), line
    # reproduce --dry-run: the planner's line, the grid's folders under --runs-dir
    assert f"{py} -m dtvg_dist.train recipe=llama3-8b-cb seed=42" in got["dry"]
    assert not (work / "grid").exists() or not any((work / "grid").rglob("results.json"))
    # the packaged ZeRO-3 CPU config found its DeepSpeed JSON
    assert "2 process(es)" in got["z3"] and "zero stage 3" in got["z3"]
    assert (work / "z3bank" / "syn_same.safetensors").is_file()
