"""python -m dtvg_dist.doctor: passes on 2 gloo processes, names an unwritable
output_dir, a folder that is not shared, and a rank that never joins."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from dtvg_dist import doctor
from dtvg_dist.orchestration.doctor import rank_env

REPO = Path(__file__).resolve().parents[1]
# The synthetic recipe: no hub access, its data is generated.
RECIPE = "recipe=tiny-t5"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _clear_rank_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_PROCID",
                "SLURM_NTASKS", "TORCHELASTIC_USE_AGENT_STORE", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(key, raising=False)


def test_unwritable_output_dir_is_named(tmp_path, monkeypatch, capsys):
    _clear_rank_env(monkeypatch)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")  # root can write anywhere, but not below a file
    out = blocker / "out"
    code = doctor.main([RECIPE, f"output_dir={out}", f"bank_dir={tmp_path / 'bank'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == [line for line in err if line.startswith("error: ")]  # one line per failure
    assert len(err) == 1 and f"output_dir {out} is not writable" in err[0] and "rank 0" in err[0]


def test_a_rank_that_never_joins_is_named_within_the_watchdog(tmp_path, monkeypatch, capsys):
    _clear_rank_env(monkeypatch)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    import time

    start = time.monotonic()
    code = doctor.main([RECIPE, f"output_dir={tmp_path / 'out'}", "--watchdog-s", "2"])
    elapsed = time.monotonic() - start
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "rank 1 never joined the rendezvous" in err and "within 2 s" in err
    assert elapsed < 30  # the watchdog, not a hang (recipe loading included)


def test_slurm_environment_gives_ranks_and_master():
    env = rank_env({"SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_LOCALID": "1",
                    "SLURM_NODEID": "1", "SLURM_JOB_ID": "1234", "MASTER_ADDR": "n1"})
    assert (env.rank, env.world, env.local_rank, env.node) == (3, 4, 1, 1)
    assert (env.master_addr, env.master_port, env.launcher) == ("n1", 21234, "srun")
    torchrun = rank_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "h",
                         "MASTER_PORT": "29400", "TORCHELASTIC_RUN_ID": "x",
                         "TORCHELASTIC_USE_AGENT_STORE": "True"})
    assert (torchrun.rank, torchrun.world, torchrun.agent_store, torchrun.launcher) == (1, 2, True, "torchrun")


def _launch(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """`accelerate launch` with the packaged 2-process CPU config, from a temporary folder."""
    from dtvg_dist.orchestration.config import launch_config_path

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "accelerate.commands.launch",
           "--config_file", str(launch_config_path("cpu_ddp_2proc")),
           "--main_process_port", str(_free_port()), "-m", "dtvg_dist.doctor", RECIPE,
           "--bandwidth-mb", "4", "--watchdog-s", "60", *args]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.distributed
def test_two_gloo_processes_pass_and_a_folder_not_shared_is_named(tmp_path):
    # Both launches side by side (own folders, own ports).
    with ThreadPoolExecutor(max_workers=1) as pool:
        own = pool.submit(_launch, tmp_path, "output_dir=" + str(tmp_path / "own") + "/${oc.env:RANK}",
                          f"bank_dir={tmp_path / 'bank-own'}")
        ok = _launch(tmp_path, f"output_dir={tmp_path / 'out'}", f"bank_dir={tmp_path / 'bank'}")
        bad = own.result()
    assert ok.returncode == 0, ok.stdout[-3000:] + ok.stderr[-3000:]
    assert "bus bandwidth" in ok.stdout and "planner: ddp sends" in ok.stdout
    table = [line.split() for line in ok.stdout.splitlines() if line.split()[:1] in (["0"], ["1"])]
    assert sorted(row[0] for row in table) == ["0", "1"] and all(row[5] == "gloo" for row in table)
    assert not list((tmp_path / "out").glob(".doctor-*"))  # the tokens are removed
    # Each rank resolves output_dir to its own folder: what a node without the
    # shared filesystem sees. Rank 1 is named; every rank exits 2.
    assert bad.returncode != 0
    errors = [line for line in bad.stderr.splitlines() if line.startswith("error: ")]
    assert any("output_dir shared: rank 1 on" in e and "is not the folder rank 0" in e for e in errors), bad.stderr[-3000:]
    assert not any(e.startswith("error: output_dir shared: rank 0") for e in errors)
