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
def servers():
    """Servers of this test's own, closed at its end."""
    own = warm_python.Servers()
    yield own
    own.close_all()


def test_a_server_per_environment_of_import_time_variables(servers):
    base = {**os.environ, "HF_HUB_OFFLINE": "1"}
    first = servers.server_for({**base, "DTVG_FAULT_STEP": "3", "OMP_NUM_THREADS": "1"})
    # variables read at run time (and OMP_NUM_THREADS, applied in the child) share it
    assert servers.server_for({**base, "DTVG_FAULT_STEP": "5"}) is first
    # one that a library reads at import does not
    other = servers.server_for({**base, "HF_HOME": "/elsewhere"})
    assert other is not None and other is not first and len(servers) == 2
    for i in range(warm_python.MAX_SERVERS - 2):
        servers.server_for({**base, "HF_HOME": f"/elsewhere-{i}"})
    assert servers.server_for({**base, "HF_HOME": "/one-too-many"}) is None


def test_warm_and_cold_commands_end_alike(servers, tmp_path):
    """Exit codes, output and the working folder as a fresh interpreter gives them:
    --help (0) and an unknown recipe (the one-line user error, exit 2)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    for args in (["--help"], ["recipe=no-such-recipe"]):
        cmd = [sys.executable, "-m", "dtvg_dist.train", *args]
        warm = servers.run(cmd, cwd=tmp_path, env=env, text=True, timeout=120)
        cold = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert len(servers) == 1, "the command did not start warm"
        assert warm.returncode == cold.returncode, (warm.stderr, cold.stderr)
        assert warm.stdout == cold.stdout
        assert warm.stderr.strip().splitlines()[-1:] == cold.stderr.strip().splitlines()[-1:]
    assert cold.returncode == EXIT_USER_ERROR and "no-such-recipe" in cold.stderr


def test_a_warm_child_is_a_process_of_its_own(servers, tmp_path):
    """Its own pid, killed by a signal like any process (Popen's negative code)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = servers.popen([sys.executable, "-m", "dtvg_dist.train", "--help"], cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert isinstance(proc, warm_python.WarmProcess) and proc.pid != os.getpid()
    proc.communicate(timeout=120)
    assert proc.returncode == 0
    (server,) = servers.values()
    assert server._proc is not None and proc.pid != server._proc.pid
    # a command that is not the training module starts cold
    cold = servers.popen([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"],
                             env=env)
    assert isinstance(cold, subprocess.Popen) and cold.wait(timeout=60) == -9


def test_a_warm_reproduce_asks_the_server_for_its_runs_only(monkeypatch, tmp_path):
    """In a warm `reproduce` (_warm_runs), Popen of `python -m dtvg_dist.train`
    with the parent's import-time environment (OMP_NUM_THREADS and an equal
    MKL_NUM_THREADS aside: the local executor's) goes to the server over the
    connection, with its folder, environment and log file; another command,
    another import-time environment or another Popen argument starts cold."""
    import json
    import socket
    import threading

    monkeypatch.setattr(subprocess, "Popen", subprocess.Popen)  # put back after the patch
    ours, server_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    parent = {"PATH": os.environ["PATH"], "HF_HUB_OFFLINE": "1"}
    warm_python._warm_runs(ours, parent)
    asked: list[tuple[dict, int]] = []

    def server() -> None:  # what the real server answers: started, then ended with 0
        while True:
            message, fds, _, _ = socket.recv_fds(server_end, 1 << 20, 3)
            if not message:
                return
            request = json.loads(message)
            asked.append((request, len(fds)))
            for fd in fds:
                os.close(fd)
            server_end.send(json.dumps({"started": request["id"], "pid": 4242 + request["id"]}).encode())
            server_end.send(json.dumps({"ended": 4242 + request["id"], "status": 0}).encode())

    threading.Thread(target=server, daemon=True).start()
    train = [sys.executable, "-m", "dtvg_dist.train", "recipe=tiny-t5"]
    run_env = {**parent, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "DTVG_FAULT_STEP": "3"}
    with (tmp_path / "run.log").open("w") as log:
        done = subprocess.run(train, stdout=log, stderr=subprocess.STDOUT, env=run_env, cwd=tmp_path, check=False)
    assert done.returncode == 0 and done.args == train
    (request, nfds), = asked
    assert request["module"] == "dtvg_dist.train" and request["args"] == ["recipe=tiny-t5"]
    assert request["env"] == run_env and request["cwd"] == str(tmp_path) and nfds == 3
    # cold: subprocess's own Popen, which refuses a folder that is not there
    # (the server would have been asked, and answered)
    missing = tmp_path / "missing"
    cold = [
        ([sys.executable, "-c", "print('cold')"], {"env": run_env}),  # not the trainer
        (train, {"env": {**parent, "HF_HOME": str(tmp_path)}}),  # another import-time environment
        (train, {"env": {**run_env, "MKL_NUM_THREADS": "2"}}),  # MKL unlike OMP
        (train, {"env": run_env, "start_new_session": True}),  # an argument it does not take
    ]
    for cmd, kwargs in cold:
        with pytest.raises(FileNotFoundError):
            subprocess.Popen(cmd, cwd=missing, stdout=subprocess.DEVNULL, **kwargs)
    assert len(asked) == 1
    subprocess.run(train, env=run_env, cwd=missing, check=True)  # and the warm path is still taken
    assert len(asked) == 2 and asked[1][0]["cwd"] == str(missing)
    ours.close()
