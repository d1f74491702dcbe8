"""The warm starter of tests/warm_python.py: which commands start warm, and
how a warm child ends. That a warm training run equals a fresh interpreter's
is tests/test_train.py's test_a_warm_start_trains_as_a_fresh_interpreter."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import warm_python

from dtvg_dist.errors import EXIT_USER_ERROR

pytestmark = pytest.mark.slow


@pytest.fixture
def servers(monkeypatch):
    """A registry of servers of this test's own, closed at its end."""
    monkeypatch.setattr(warm_python, "_servers", {})
    yield warm_python._servers
    warm_python.close_all()


def test_a_server_per_environment_of_import_time_variables(servers):
    base = {**os.environ, "HF_HUB_OFFLINE": "1"}
    first = warm_python._server_for({**base, "DTVG_FAULT_STEP": "3", "OMP_NUM_THREADS": "1"})
    # variables read at run time (and OMP_NUM_THREADS, applied in the child) share it
    assert warm_python._server_for({**base, "DTVG_FAULT_STEP": "5"}) is first
    # one that a library reads at import does not
    other = warm_python._server_for({**base, "HF_HOME": "/elsewhere"})
    assert other is not None and other is not first and len(servers) == 2
    for i in range(warm_python.MAX_SERVERS - 2):
        warm_python._server_for({**base, "HF_HOME": f"/elsewhere-{i}"})
    assert warm_python._server_for({**base, "HF_HOME": "/one-too-many"}) is None


def test_warm_and_cold_commands_end_alike(servers, tmp_path):
    """Exit codes, output and the working folder as a fresh interpreter gives them:
    --help (0) and an unknown recipe (the one-line user error, exit 2)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    for args in (["--help"], ["recipe=no-such-recipe"]):
        cmd = [sys.executable, "-m", "dtvg_dist.train", *args]
        warm = warm_python.run(cmd, cwd=tmp_path, env=env, text=True, timeout=120)
        cold = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert len(servers) == 1, "the command did not start warm"
        assert warm.returncode == cold.returncode, (warm.stderr, cold.stderr)
        assert warm.stdout == cold.stdout
        assert warm.stderr.strip().splitlines()[-1:] == cold.stderr.strip().splitlines()[-1:]
    assert cold.returncode == EXIT_USER_ERROR and "no-such-recipe" in cold.stderr


def test_a_warm_child_is_a_process_of_its_own(servers, tmp_path):
    """Its own pid, killed by a signal like any process (Popen's negative code)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = warm_python.popen([sys.executable, "-m", "dtvg_dist.train", "--help"], cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert isinstance(proc, warm_python.WarmProcess) and proc.pid != os.getpid()
    proc.communicate(timeout=120)
    assert proc.returncode == 0
    server = next(iter(servers.values()))
    assert server._proc is not None and proc.pid != server._proc.pid
    # a command that is not the training module starts cold
    cold = warm_python.popen([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"],
                             env=env)
    assert isinstance(cold, subprocess.Popen) and cold.wait(timeout=60) == -9
