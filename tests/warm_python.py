"""`python -m MODULE ARGS` started warm: forked from a server that has
already imported torch, transformers and datasets.

A trainer the tests start as a fresh interpreter spends seconds of one core
importing those before it trains a step (`python -X importtime -m
dtvg_dist.train recipe=tiny-t5`), and the suite starts dozens of them
(docs/development.md has the suite's figures). A child forked from a
server that imported them once is still a process of its own: its own pid,
session when asked, signals, exit code and open files, the working folder
and environment asked for, the module run through `runpy` as `-m` runs it,
the library's own modules imported fresh (the server imports none of
dtvg_dist). It only skips the third-party imports.

A warm `accelerate launch` gets a connection of its own to the server:
torchrun's workers that run the training command are forked by the server
as the launcher asks, with the worker's environment, in a session of their
own (torchrun stops them with killpg), stdio unbuffered as `python -u`;
the launcher sees them through a Popen-like handle (tests/distributed/
test_warm_launch.py: not its children, and the run equal to a cold
launch's bit for bit). A warm `reproduce` (the grid command) likewise
gets a connection: the runs its executors start as `python -m
dtvg_dist.train` are forked by the server (_warm_runs;
tests/grid/test_demo_grid.py holds the serial executor's runs to the local
one's bit for bit).

It is used only where it cannot differ from a fresh interpreter: the
environment variables that libraries read once, at import (``HF_*``,
``TRANSFORMERS_*``, ``PYTHON*``, ...), must equal the server's: each such
environment gets a server of its own (at most MAX_SERVERS, then cold). OMP_NUM_THREADS, read by the OpenMP runtime when it
loads, is applied in the child with ``torch.set_num_threads``. What a fresh
interpreter adds (start-up, the imports themselves, the entry point's
``__main__``) is covered by the tests that keep real subprocesses: the docs'
pages, the wheel in a venv, test_train's full runs, the matrix's launches
(a driver script), the executors' script runs (tests/grid/test_executors.py)
and the SLURM jobs (their launchers and workers).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import IO, Any

# Imported once by the server, in this order (what a tiny trainer imports
# from third parties, model classes included).
PRELOAD = (
    "torch",
    "transformers",
    "transformers.modeling_utils",
    "transformers.models.t5.modeling_t5",
    "transformers.models.llama.modeling_llama",
    "datasets",
    "accelerate",
    "safetensors.torch",
    "omegaconf",
    "accelerate.commands.launch",
)
OPTIONAL_PRELOAD = ("bitsandbytes",)  # the 8-bit runs' (an extra: skipped where absent)
# Only these modules start warm: the training command, and accelerate's
# launcher, whose workers that run the training command start warm too (a
# warm launcher asks the server for them: _warm_workers).
TRAIN = "dtvg_dist.train"
LAUNCHER = "accelerate.commands.launch"
# the grid command: the runs its executors start as `python -m
# dtvg_dist.train` start warm too (_warm_runs)
REPRODUCE = "dtvg_dist.reproduce"
WARM_MODULES = frozenset({TRAIN, LAUNCHER, REPRODUCE})
# Environment variables read at import by Python or the preloaded libraries:
# each set of their values gets a server of its own (_server_for).
_IMPORT_TIME_PREFIXES = ("HF_", "HUGGINGFACE", "TRANSFORMERS_", "DATASETS_", "TORCH", "PYTORCH", "CUDA",
                         "PYTHON", "XDG_", "MKL_", "KMP_", "OPENBLAS", "TOKENIZERS_", "DS_", "ACCELERATE_",
                         "LD_", "TMPDIR")
# What a launcher adds to its workers' environment under those prefixes and
# the preloaded libraries read only when called, never at import (accelerate
# reads its ACCELERATE_* in AcceleratorState and the launch utilities, torch
# its TORCHELASTIC_* in torch.distributed.elastic and TORCH_NCCL_* in the
# NCCL process group, at run time): a worker
# whose import-time environment differs from its server's in these alone
# starts warm; any other difference starts it cold.
_RUN_TIME_PREFIXES = ("ACCELERATE_", "TORCHELASTIC_", "TORCH_NCCL_")
_MAX_MESSAGE = 1 << 20


def _import_time_env(env: Mapping[str, str], ignore: tuple[str, ...] = ()) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(_IMPORT_TIME_PREFIXES)
            and not (ignore and k.startswith(ignore))}


# ---- the server (its own process: python tests/warm_python.py) ---------------

def _warm_workers(channel: socket.socket, launcher_env: dict[str, str]) -> None:
    """In a warm launcher: torchrun's workers that run the training command
    (``python -u -m dtvg_dist.train ...``, what accelerate launch starts) are
    asked of the server over `channel`, as this process's own children would
    be started, when their import-time environment is the launcher's (which
    is its server's) up to _RUN_TIME_PREFIXES; any other command, or
    environment, starts cold."""
    from torch.distributed.elastic.multiprocessing.subprocess_handler import (
        subprocess_handler as handler,
    )

    client = WarmServer.over(channel)
    cold = handler.SubprocessHandler._popen
    same = _import_time_env(launcher_env, _RUN_TIME_PREFIXES)

    def _popen(self: Any, args: tuple, env: dict[str, str]) -> Any:
        cmd = [str(a) for a in args]
        if cmd[:4] == [sys.executable, "-u", "-m", TRAIN] and _import_time_env(env, _RUN_TIME_PREFIXES) == same:
            return client.popen([sys.executable, "-m", *cmd[3:]], cwd=os.getcwd(), env=env,
                                stdout=self._stdout, stderr=self._stderr, start_new_session=True,
                                unbuffered=True)
        return cold(self, args, env)

    handler.SubprocessHandler._popen = _popen


# What a warm `reproduce` may pass to Popen for a run it starts warm (the
# serial executor's Popen and the local one's subprocess.run); anything else
# starts cold.
_RUN_POPEN_KEYWORDS = frozenset({"stdout", "stderr", "text", "universal_newlines", "bufsize", "env", "cwd"})


def _warm_runs(channel: socket.socket, parent_env: dict[str, str]) -> None:
    """In a warm `reproduce`: the runs its executors start as ``python -m
    dtvg_dist.train ...`` are asked of the server over `channel` when their
    import-time environment is this process's (MKL_NUM_THREADS aside when it
    equals OMP_NUM_THREADS, which the child applies with
    torch.set_num_threads: what the local executor sets per run); any
    other command, argument or environment starts cold. Popen stays a class:
    a warm run is what `__new__` returns (a WarmProcess, so `__init__` is
    skipped)."""
    client = WarmServer.over(channel)
    cold = subprocess.Popen

    def import_time(env: Mapping[str, str]) -> dict[str, str]:
        out = _import_time_env(env)
        if out.get("MKL_NUM_THREADS") == env.get("OMP_NUM_THREADS"):
            out.pop("MKL_NUM_THREADS", None)
        return out

    same = import_time(parent_env)

    class WarmRunPopen(cold):  # type: ignore[misc, valid-type]
        def __new__(cls, args: Any, *rest: Any, **kwargs: Any) -> Any:
            cmd = [os.fspath(a) for a in args] if isinstance(args, (list, tuple)) else []
            env = dict(os.environ if kwargs.get("env") is None else kwargs["env"])
            if (cmd[:3] == [sys.executable, "-m", TRAIN] and not rest and set(kwargs) <= _RUN_POPEN_KEYWORDS
                    and import_time(env) == same):
                return client.popen(cmd, cwd=kwargs.get("cwd") or os.getcwd(), env=env,
                                    stdout=kwargs.get("stdout"), stderr=kwargs.get("stderr"),
                                    text=bool(kwargs.get("text") or kwargs.get("universal_newlines")))
            return super().__new__(cls)

    subprocess.Popen = WarmRunPopen  # type: ignore[misc]


# The modules whose warm process gets a connection of its own to the server,
# and what it does with it: the training runs it starts start warm too.
_CONNECTED = {LAUNCHER: _warm_workers, REPRODUCE: _warm_runs}


def _unbuffered_stdio() -> None:
    """What `python -u` does: stdout and stderr written through, unbuffered."""
    import io

    for name, fd in (("stdout", 1), ("stderr", 2)):
        old = getattr(sys, name)
        setattr(sys, name, io.TextIOWrapper(open(fd, "wb", buffering=0, closefd=False),  # noqa: SIM115
                                            encoding=old.encoding, errors=old.errors, write_through=True))


def _run_child(request: dict[str, Any], fds: list[int], channel: socket.socket | None) -> None:
    """In the forked child: become the asked-for command, then exit with its code."""
    code = 1
    try:
        if request["new_session"]:
            os.setsid()
        for target, fd in zip((0, 1, 2), fds, strict=True):
            os.dup2(fd, target)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        if request.get("unbuffered"):
            _unbuffered_stdio()
        os.chdir(request["cwd"])
        sys.path[0] = os.getcwd()  # what `python -m` puts first (the server had its own folder)
        os.environ.clear()
        os.environ.update(request["env"])
        if channel is not None:
            _CONNECTED[request["module"]](channel, request["env"])
        threads = request["env"].get("OMP_NUM_THREADS", "")
        import torch

        if threads.isdigit() and int(threads) > 0:
            torch.set_num_threads(int(threads))
        sys.argv = [request["module"], *request["args"]]
        import runpy

        try:
            runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as stop:
            if stop.code is None:
                code = 0
            elif isinstance(stop.code, int):
                code = stop.code
            else:
                print(stop.code, file=sys.stderr)
                code = 1
    except BaseException:  # noqa: BLE001 - the child reports like an interpreter would
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        try:
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve(sock: socket.socket) -> None:
    """Preload, say ready, then fork a child per request and report each
    child's pid and, when it ends, its wait status, to the connection that
    asked for it: the client's, or a warm launcher's (its workers)."""
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    for name in OPTIONAL_PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    # fork copies only the calling thread: no other Python thread may run (the
    # libraries' native helper threads, as under a forking DataLoader, are fine)
    sock.send(json.dumps({"ready": os.getpid(), "threads": threading.active_count()}).encode())
    conns = [sock]
    owner: dict[int, socket.socket] = {}  # child pid -> the connection that asked for it
    while True:
        readable, _, _ = select.select(conns, [], [], 0.02)
        while owner:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            with contextlib.suppress(OSError):  # its asker may be gone
                owner.pop(pid).send(json.dumps({"ended": pid, "status": status}).encode())
        for conn in readable:
            message, fds, _, _ = socket.recv_fds(conn, _MAX_MESSAGE, 3)
            if not message:  # that client is gone: so are the children it asked for
                for pid, asker in owner.items():
                    if asker is conn or conn is sock:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                if conn is sock:
                    return
                conns.remove(conn)
                conn.close()
                continue
            request = json.loads(message)
            channel, theirs = (socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                               if request["module"] in _CONNECTED else (None, None))
            pid = os.fork()
            if pid == 0:
                for other in (*conns, channel):
                    if other is not None:
                        other.close()
                _run_child(request, fds, theirs)
            for fd in fds:
                os.close(fd)
            if channel is not None:
                theirs.close()
                conns.append(channel)
            owner[pid] = conn
            conn.send(json.dumps({"started": request["id"], "pid": pid}).encode())


# ---- the client (in the pytest process) ------------------------------------------

class WarmProcess:
    """The part of `subprocess.Popen` the tests use, for a warm child."""

    def __init__(self, args: list[str], pid: int, stdout: IO | None, stderr: IO | None) -> None:
        self.args, self.pid, self.stdout, self.stderr = args, pid, stdout, stderr
        self.stdin = None
        self.returncode: int | None = None
        self._ended = threading.Event()

    def _end(self, status: int) -> None:
        self.returncode = os.waitstatus_to_exitcode(status)
        self._ended.set()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._ended.wait(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode  # type: ignore[return-value]

    def communicate(self, input: Any = None, timeout: float | None = None) -> tuple[Any, Any]:  # noqa: A002
        results: dict[str, Any] = {}
        readers = [threading.Thread(target=lambda n=name, f=f: results.__setitem__(n, f.read()), daemon=True)
                   for name, f in (("out", self.stdout), ("err", self.stderr)) if f is not None]
        for reader in readers:
            reader.start()
        self.wait(timeout)
        for reader in readers:
            reader.join(timeout)
            if reader.is_alive():
                raise subprocess.TimeoutExpired(self.args, timeout)
        for f in (self.stdout, self.stderr):
            if f is not None:
                f.close()
        return results.get("out"), results.get("err")

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def __enter__(self) -> WarmProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        for f in (self.stdout, self.stderr):
            if f is not None:
                f.close()
        self.wait()


class WarmServer:
    """One server process, started on first use; thread-safe."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = {k: v for k, v in env.items() if k != "OMP_NUM_THREADS"}
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen | None = None
        self._children: dict[int, WarmProcess] = {}
        self._early: dict[int, int] = {}  # pid -> status of children that ended before registering
        self._started: dict[int, threading.Event] = {}
        self._pids: dict[int, int] = {}
        self._next_id = 0
        self._failed: str | None = None

    @classmethod
    def over(cls, sock: socket.socket) -> WarmServer:
        """A client over a connection the server made (a warm launcher's)."""
        client = cls({})
        client._sock = sock
        threading.Thread(target=client._listen, name="warm-python", daemon=True).start()
        return client

    def _ensure(self) -> socket.socket:
        if self._sock is None:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            self._proc = subprocess.Popen([sys.executable, __file__, str(theirs.fileno())], env=self._env,
                                          pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)
            theirs.close()
            ready = json.loads(ours.recv(_MAX_MESSAGE) or b"{}")
            if "ready" not in ready or ready.get("threads") != 1:
                self._failed = f"the warm server did not start: {ready}"
                raise RuntimeError(self._failed)
            self._sock = ours
            threading.Thread(target=self._listen, name="warm-python", daemon=True).start()
        return self._sock

    def _listen(self) -> None:
        assert self._sock is not None
        while True:
            message = self._sock.recv(_MAX_MESSAGE)
            if not message:  # the server is gone, and it killed its children first
                for proc in list(self._children.values()):
                    proc._end(signal.SIGKILL)  # the wait status of a SIGKILLed process
                return
            event = json.loads(message)
            with self._lock:
                if "started" in event:
                    self._pids[event["started"]] = event["pid"]
                    self._started.pop(event["started"]).set()
                elif event["ended"] in self._children:
                    self._children.pop(event["ended"])._end(event["status"])
                else:
                    self._early[event["ended"]] = event["status"]

    def popen(self, cmd: Sequence[str], *, cwd: str | os.PathLike, env: Mapping[str, str],
              stdout: Any = None, stderr: Any = None, text: bool = False,
              start_new_session: bool = False, unbuffered: bool = False) -> WarmProcess:
        """Start `cmd` (``[sys.executable, "-m", MODULE, *ARGS]``) warm; stdout
        and stderr as Popen takes them (PIPE, STDOUT, DEVNULL, None or a file);
        `unbuffered`: as `python -u`."""
        ours: list[IO | None] = [None, None]
        fds, close_after = [os.open(os.devnull, os.O_RDONLY)], []
        close_after.append(fds[0])
        for i, spec in enumerate((stdout, stderr)):
            if spec == subprocess.PIPE:
                r, w = os.pipe()
                ours[i] = open(r, encoding="utf-8", errors="replace") if text else open(r, "rb")  # noqa: SIM115
                fds.append(w)
                close_after.append(w)
            elif spec == subprocess.STDOUT and i == 1:
                fds.append(fds[1])
            elif spec == subprocess.DEVNULL:
                fd = os.open(os.devnull, os.O_WRONLY)
                fds.append(fd)
                close_after.append(fd)
            elif spec is None:
                fds.append(i + 1)
            else:
                fds.append(spec if isinstance(spec, int) else spec.fileno())
        with self._lock:
            sock = self._ensure()
            request_id = self._next_id
            self._next_id += 1
            event = self._started[request_id] = threading.Event()
            request = {"id": request_id, "module": cmd[2], "args": [str(a) for a in cmd[3:]],
                       "cwd": os.fspath(cwd), "env": dict(env), "new_session": start_new_session,
                       "unbuffered": unbuffered}
            socket.send_fds(sock, [json.dumps(request).encode()], fds)
        for fd in close_after:
            os.close(fd)
        if not event.wait(60):
            raise RuntimeError(f"the warm server did not start {cmd[2]}")
        with self._lock:
            pid = self._pids.pop(request_id)
            proc = WarmProcess([str(a) for a in cmd], pid, ours[0], ours[1])
            if pid in self._early:
                proc._end(self._early.pop(pid))
            else:
                self._children[pid] = proc
        return proc

    def close(self) -> None:
        if self._sock is not None:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the listener; the server sees the end
            self._sock.close()
        if self._proc is not None:
            self._proc.wait(timeout=30)


# ---- one server per environment, and the entry point -------------------------------

class Watch:
    """What the caller's process watcher does around a start (conftest.py sets
    it): `before` may change the environment, `after` sees the process."""

    def before(self, cmd: Sequence[str], env: dict[str, str]) -> dict[str, str]:
        return env

    def after(self, proc: Any) -> None:
        pass


WATCH = Watch()
# Environments seen in a session: the tests' and the background's, tests/
# distributed's, the grids' (tests/grid), and a test's own (an HF_HUB_CACHE of
# its own): five or six. An idle server holds about 0.5 GB; past the limit a
# command starts cold, and test_warm_launch fails (its launch must be warm).
MAX_SERVERS = 8


class Servers:
    """A server per environment of import-time variables (at most `limit`,
    then cold); thread-safe. The session's is SERVERS; a test of this module
    makes its own, so that closing it stops nothing the session's other
    threads (the background's work) started."""

    def __init__(self, limit: int = MAX_SERVERS) -> None:
        self.limit = limit
        self._servers: dict[tuple[tuple[str, str], ...], WarmServer] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._servers)

    def values(self) -> list[WarmServer]:
        with self._lock:
            return list(self._servers.values())

    def server_for(self, env: Mapping[str, str]) -> WarmServer | None:
        key = tuple(sorted(_import_time_env(env).items()))
        with self._lock:
            server = self._servers.get(key)
            if server is None and len(self._servers) < self.limit:
                server = self._servers[key] = WarmServer(env)
        return server if server is not None and server._failed is None else None

    def popen(self, cmd: Sequence[str], *, cwd: str | os.PathLike | None = None,
              env: Mapping[str, str] | None = None, stdout: Any = None, stderr: Any = None, text: bool = False,
              start_new_session: bool = False) -> subprocess.Popen | WarmProcess:
        """`subprocess.Popen(cmd, ...)`, warm where `cmd` is ``[sys.executable, "-m",
        MODULE, ...]`` with MODULE in WARM_MODULES, cold otherwise."""
        env = dict(os.environ if env is None else env)
        cwd = os.fspath(cwd) if cwd is not None else os.getcwd()
        cmd = [os.fspath(c) for c in cmd]
        if len(cmd) >= 3 and cmd[0] == sys.executable and cmd[1] == "-m" and cmd[2] in WARM_MODULES:
            warm_env = WATCH.before(cmd, env)
            server = self.server_for(warm_env)
            if server is not None:
                try:
                    proc = server.popen(cmd, cwd=cwd, env=warm_env, stdout=stdout, stderr=stderr, text=text,
                                        start_new_session=start_new_session)
                except RuntimeError:  # the server could not start: cold, as asked
                    pass
                else:
                    WATCH.after(proc)
                    return proc
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=stdout, stderr=stderr, text=text,
                                start_new_session=start_new_session)

    def run(self, cmd: Sequence[str], *, timeout: float | None = None, **kwargs: Any) -> subprocess.CompletedProcess:
        """`subprocess.run(cmd, capture_output=True, ...)` through `popen`."""
        proc = self.popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def close_all(self) -> None:
        """Stop every server (their running children are killed)."""
        with self._lock:
            for server in self._servers.values():
                server.close()
            self._servers.clear()


SERVERS = Servers()
popen = SERVERS.popen
run = SERVERS.run
close_all = SERVERS.close_all


if __name__ == "__main__":
    serve(socket.socket(fileno=int(sys.argv[1])))
