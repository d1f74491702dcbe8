"""The distributed half of ``python -m dtvg_dist.doctor``: a pre-flight run on
every rank, launched exactly as training is, that turns the usual multi-node
failures (a rank that never joins, a collective that hangs or returns wrong
sums, a node that does not see the shared folder) into one line each before
the expensive run starts.

Why its own rendezvous: ``init_process_group`` waits for every rank and
then times out without saying who is missing. Here every rank first writes
``rendezvous/<rank>`` (with its host) into a TCP store, and rank 0 polls for the
keys until the watchdog expires, so the error names the missing ranks. The
same arrival keys guard each collective step. Under ``torchrun``/``accelerate
launch`` the agent's store at MASTER_ADDR:MASTER_PORT is reused (as torch's
env:// rendezvous does); under plain python or SLURM rank 0 hosts it.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from dtvg_dist.errors import UserError

KEY_PREFIX = "dtvg-doctor"


class DoctorError(UserError):
    """A rendezvous or collective that did not complete within the watchdog."""


@dataclass
class Check:
    """One row of the doctor's table: a check on one rank."""

    name: str
    rank: int
    host: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        """The one-line error the doctor prints for a failing check."""
        return f"{self.name}: rank {self.rank} on {self.host}: {self.detail}" + (
            f"; {self.fix}" if self.fix else ""
        )


@dataclass
class RankEnv:
    """Where this process stands, read from the environment the launcher set."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    node: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    launcher: str = "python"
    agent_store: bool = False
    host: str = field(default_factory=socket.gethostname)


def _slurm_master(nodelist: str) -> str:
    """The first host of a SLURM nodelist (`scontrol show hostnames`)."""
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True,
                             text=True, timeout=30, check=True).stdout.split()
        return out[0] if out else nodelist
    except (OSError, subprocess.SubprocessError):
        return nodelist.split(",")[0]


def rank_env(environ: dict[str, str] | None = None) -> RankEnv:
    """torchrun/accelerate set RANK, WORLD_SIZE, LOCAL_RANK, GROUP_RANK and
    MASTER_*; a bare ``srun python -m dtvg_dist.doctor`` sets only SLURM_*:
    then the first node of the job is the master and the port derives from
    the job id (both overridable through MASTER_ADDR / MASTER_PORT)."""
    env = dict(os.environ if environ is None else environ)
    if "RANK" in env and "WORLD_SIZE" in env:
        return RankEnv(
            rank=int(env["RANK"]), world=int(env["WORLD_SIZE"]),
            local_rank=int(env.get("LOCAL_RANK", "0")),
            node=int(env.get("GROUP_RANK", env.get("NODE_RANK", env.get("SLURM_NODEID", "0")))),
            master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
            master_port=int(env.get("MASTER_PORT", "29500")),
            launcher="torchrun" if "TORCHELASTIC_RUN_ID" in env else "env",
            agent_store=env.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true",
        )
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        job = int(env.get("SLURM_JOB_ID", "0"))
        return RankEnv(
            rank=int(env["SLURM_PROCID"]), world=int(env["SLURM_NTASKS"]),
            local_rank=int(env.get("SLURM_LOCALID", "0")), node=int(env.get("SLURM_NODEID", "0")),
            master_addr=env.get("MASTER_ADDR") or _slurm_master(env.get("SLURM_JOB_NODELIST", "127.0.0.1")),
            master_port=int(env.get("MASTER_PORT", str(20000 + job % 20000))),
            launcher="srun",
        )
    return RankEnv()


# ------------------------------------------------------------------ rendezvous
class Rendezvous:
    """A key-value store every rank reaches, with arrival keys that name who is missing."""

    def __init__(self, env: RankEnv, watchdog_s: float) -> None:
        self.env, self.watchdog_s = env, watchdog_s
        self.hosts: dict[int, str] = {env.rank: env.host}
        where = f"{env.master_addr}:{env.master_port}"
        is_master = env.rank == 0 and not env.agent_store
        try:
            base = dist.TCPStore(
                env.master_addr, env.master_port, None, is_master,
                timeout=datetime.timedelta(seconds=watchdog_s), wait_for_workers=False,
            )
        except (RuntimeError, OSError) as err:
            role = "host" if is_master else "reach"
            raise DoctorError(
                f"rendezvous: rank {env.rank} on {env.host} could not {role} the store at {where} "
                f"within {watchdog_s:g} s ({str(err).splitlines()[0]}); check that MASTER_ADDR "
                "resolves from every node, the port is free and not firewalled"
            ) from None
        run = os.environ.get("TORCHELASTIC_RUN_ID", "") + os.environ.get("SLURM_JOB_ID", "")
        self.store = dist.PrefixStore(f"{KEY_PREFIX}/{run}/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", base)
        self.where = where

    def arrive(self, stage: str, payload: str = "") -> dict[int, str]:
        """Write this rank's key for `stage`, wait (watchdog) for every rank's;
        returns rank -> payload. A rank that never arrives raises naming it."""
        env = self.env
        self.store.set(f"{stage}/{env.rank}", payload or env.host)
        deadline = time.monotonic() + self.watchdog_s
        keys = [f"{stage}/{r}" for r in range(env.world)]
        while True:
            missing = [r for r, k in enumerate(keys) if not self.store.check([k])]
            if not missing:
                break
            if time.monotonic() > deadline:
                raise DoctorError(self._missing_message(stage, missing))
            time.sleep(0.05)
        got = {r: self.store.get(k).decode() for r, k in enumerate(keys)}
        if stage == "rendezvous":
            self.hosts = dict(got)
        return got

    def _missing_message(self, stage: str, missing: list[int]) -> str:
        names = ", ".join(
            f"rank {r}" + (f" on {self.hosts[r]}" if r in self.hosts else "") for r in missing
        )
        if stage == "rendezvous":
            what = (f"never joined the rendezvous at {self.where} within {self.watchdog_s:g} s "
                    "(seen from rank {0} on {1}); check that the node started its launcher, that "
                    "MASTER_ADDR/MASTER_PORT are the same on every node and reachable "
                    "(firewall, NCCL_SOCKET_IFNAME)")
        else:
            what = (f"did not reach the {stage} step within {self.watchdog_s:g} s "
                    "(seen from rank {0} on {1}); that rank hangs or died: see its log "
                    "(NCCL_DEBUG=INFO) and raise --watchdog-s if it is only slow")
        return f"{stage}: {names} " + what.format(self.env.rank, self.env.host)


# ---------------------------------------------------------------------- facts
def rank_facts(env: RankEnv, device: torch.device, backend: str) -> dict[str, Any]:
    """Host, ranks, device, free memory, backend and library versions of this rank."""
    import accelerate
    import transformers

    facts: dict[str, Any] = {
        "host": env.host, "rank": env.rank, "local_rank": env.local_rank, "node": env.node,
        "world": env.world, "launcher": env.launcher, "device": str(device), "backend": backend,
        "torch": torch.__version__, "transformers": transformers.__version__,
        "accelerate": accelerate.__version__,
    }
    try:
        from dtvg_dist.training.distributed import import_deepspeed_without_mlflow

        import_deepspeed_without_mlflow([])
        import deepspeed

        facts["deepspeed"] = deepspeed.__version__
    except Exception:  # noqa: BLE001 - absent or broken: reported, not fatal
        facts["deepspeed"] = "absent"
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        facts["device_name"] = torch.cuda.get_device_name(device)
        facts["free_memory_gib"] = round(free / 2**30, 2)
        facts["total_memory_gib"] = round(total / 2**30, 2)
        facts["cuda"] = torch.version.cuda
        nccl = torch.cuda.nccl.version() if hasattr(torch.cuda, "nccl") else None
        facts["nccl"] = ".".join(map(str, nccl)) if isinstance(nccl, tuple) else str(nccl)
    else:
        facts["device_name"] = "cpu"
        facts["free_memory_gib"] = round(_available_ram() / 2**30, 2)
    return facts


def _available_ram() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


# ---------------------------------------------------------------- collectives
def _wait(work: Any, what: str, env: RankEnv, watchdog_s: float) -> None:
    """Wait for an async collective, at most the watchdog: every rank reached
    it (the arrival keys said so), so a hang here is the transport."""
    deadline = time.monotonic() + watchdog_s
    try:
        while not work.is_completed():
            if time.monotonic() > deadline:
                raise DoctorError(
                    f"collective: the {what} did not complete within {watchdog_s:g} s on rank "
                    f"{env.rank} on {env.host}, though every rank reached it: the transport hangs; "
                    "rerun with NCCL_DEBUG=INFO, check NCCL_SOCKET_IFNAME (an interface every node "
                    "shares), InfiniBand/RoCE (NCCL_IB_DISABLE=1 to test without) and the firewall "
                    "between nodes")
            time.sleep(0.01)
        work.wait()
    except RuntimeError as err:  # the backend's own timeout or a peer that died
        raise DoctorError(f"collective: the {what} failed on rank {env.rank} on {env.host}: "
                          f"{str(err).splitlines()[0]}") from None


def collective_round(env: RankEnv, device: torch.device, bandwidth_bytes: int,
                     watchdog_s: float = 120.0) -> tuple[list[Check], float]:
    """All-reduce of a known tensor (each rank adds rank+1: the sum is
    world*(world+1)/2 everywhere), a broadcast from rank 0, and the bus
    bandwidth of an all-reduce of `bandwidth_bytes` (nccl-tests' busbw:
    bytes * 2(n-1)/n / time). Returns the failing checks and busbw in B/s."""
    checks: list[Check] = []
    world = env.world
    x = torch.full((1024,), float(env.rank + 1), device=device)
    _wait(dist.all_reduce(x, async_op=True), "all-reduce", env, watchdog_s)
    want = world * (world + 1) / 2
    if not torch.all(x == want):
        checks.append(Check("collective all-reduce", env.rank, env.host, False,
                            f"sum {x[0].item():g}, expected {want:g}",
                            "the collective returns wrong values: check the backend/driver versions"))
    y = torch.full((16,), 12345.0 if env.rank == 0 else -1.0, device=device)
    _wait(dist.broadcast(y, src=0, async_op=True), "broadcast from rank 0", env, watchdog_s)
    if not torch.all(y == 12345.0):
        checks.append(Check("collective broadcast", env.rank, env.host, False,
                            f"got {y[0].item():g} from rank 0, expected 12345",
                            "the collective returns wrong values: check the backend/driver versions"))
    n = max(1, bandwidth_bytes // 4)
    buf = torch.ones(n, device=device)
    _wait(dist.all_reduce(buf, async_op=True), "bandwidth all-reduce", env, watchdog_s)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    rounds, start = 3, time.perf_counter()
    for _ in range(rounds):
        _wait(dist.all_reduce(buf, async_op=True), "bandwidth all-reduce", env, watchdog_s)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = (time.perf_counter() - start) / rounds
    busbw = n * 4 * 2 * (world - 1) / world / max(elapsed, 1e-9)
    return checks, busbw


def fmt_rate(bytes_per_s: float) -> str:
    return f"{bytes_per_s / 1e9:.2f} GB/s" if bytes_per_s >= 1e9 else f"{bytes_per_s / 1e6:.1f} MB/s"


# -------------------------------------------------------------------- folders
def write_tokens(folders: dict[str, Path], env: RankEnv, nonce: str) -> list[Check]:
    """Each rank creates the folder and writes its token file there."""
    checks = []
    for key, folder in folders.items():
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f".doctor-{nonce}-rank{env.rank}").write_text(env.host)
        except OSError as err:
            checks.append(Check(f"{key} writable", env.rank, env.host, False,
                                f"{key} {folder} is not writable ({err.strerror or err})",
                                f"set {key}= to a folder every rank can write, or fix its permissions"))
    return checks


def shared_checks(folders: dict[str, Path], hosts: dict[int, str], nonce: str,
                  unwritable: set[tuple[str, int]]) -> list[Check]:
    """Rank 0: the token of every rank that wrote one must be in rank 0's folder."""
    checks = []
    for key, folder in folders.items():
        for r, host in sorted(hosts.items()):
            if (key, r) in unwritable:
                continue
            token = folder / f".doctor-{nonce}-rank{r}"
            if not token.is_file():
                checks.append(Check(
                    f"{key} shared", r, host, False,
                    f"{key} {folder} on {host} is not the folder rank 0 on {hosts[0]} sees "
                    "(its token file is missing there)",
                    f"mount the shared filesystem at {folder} on {host}, or set {key}= to a shared path"))
    return checks


def remove_tokens(folders: dict[str, Path], env: RankEnv, nonce: str) -> None:
    for folder in folders.values():
        with contextlib.suppress(OSError):
            (folder / f".doctor-{nonce}-rank{env.rank}").unlink()


# ------------------------------------------------------------------------ run
@dataclass
class DoctorReport:
    facts: dict[int, dict[str, Any]]
    checks: list[Check]
    busbw: float | None = None
    failed_anywhere: bool = False  # rank 0's verdict, known to every rank

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]


def init_process_group(env: RankEnv, rdv: Rendezvous, watchdog_s: float) -> tuple[str, torch.device]:
    """The process group on the store the rendezvous already reached."""
    if torch.cuda.is_available():
        backend, device = "nccl", torch.device("cuda", env.local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        backend, device = "gloo", torch.device("cpu")
    dist.init_process_group(backend, store=dist.PrefixStore("pg", rdv.store), rank=env.rank,
                            world_size=env.world, timeout=datetime.timedelta(seconds=watchdog_s))
    return backend, device


def run_doctor(
    env: RankEnv,
    folders: dict[str, Path],
    node_checks: list[Callable[[], Check | None]],
    *,
    watchdog_s: float = 120.0,
    bandwidth_bytes: int = 64 * 2**20,
    extra_facts: Callable[[], dict[str, Any]] | None = None,
) -> DoctorReport:
    """Every check on this rank; rank 0's report holds every rank's rows.

    `node_checks` run on every rank (backbone/tokenizer, data, bank: they
    depend on what the node's disks hold); each returns a Check or None."""
    rdv: Rendezvous | None = None
    hosts = {0: env.host}
    if env.world > 1:
        rdv = Rendezvous(env, watchdog_s)
        hosts = {int(r): h for r, h in rdv.arrive("rendezvous").items()}
        backend, device = init_process_group(env, rdv, watchdog_s)
    else:
        backend = "none (one process)"
        device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    facts = rank_facts(env, device, backend)
    if extra_facts is not None:
        facts.update(extra_facts())
    checks: list[Check] = []
    busbw = None
    if rdv is not None:
        rdv.arrive("collective")
        failing, busbw = collective_round(env, device, bandwidth_bytes, watchdog_s)
        checks += failing
        if env.rank == 0:
            nonce = uuid.uuid4().hex[:12]
            rdv.store.set("nonce", nonce)
        else:
            rdv.store.wait(["nonce"])
            nonce = rdv.store.get("nonce").decode()
    else:
        nonce = uuid.uuid4().hex[:12]
    checks += write_tokens(folders, env, nonce)
    for run in node_checks:
        result = run()
        if result is not None:
            checks.append(result)
    if rdv is None:
        remove_tokens(folders, env, nonce)
        return DoctorReport({0: facts}, checks, busbw, any(not c.ok for c in checks))
    payload = json.dumps({"facts": facts, "checks": [asdict(c) for c in checks]})
    rows = rdv.arrive("report", payload)
    all_facts: dict[int, dict[str, Any]] = {}
    all_checks: list[Check] = []
    for r in range(env.world):
        got = json.loads(rows[r])
        all_facts[r] = got["facts"]
        all_checks += [Check(**c) for c in got["checks"]]
    unwritable = {(c.name.split()[0], c.rank) for c in all_checks if c.name.endswith("writable")}
    if env.rank == 0:
        all_checks += shared_checks(folders, hosts, nonce, unwritable)
        rdv.store.set("verdict", "fail" if any(not c.ok for c in all_checks) else "pass")
    rdv.arrive("done")  # rank 0 has read the tokens: now each rank removes its own
    verdict = rdv.store.get("verdict").decode()
    remove_tokens(folders, env, nonce)
    dist.destroy_process_group()
    return DoctorReport(all_facts, all_checks, busbw, failed_anywhere=verdict == "fail")


def render(report: DoctorReport, ok_rows: list[tuple[str, str]]) -> str:
    """One table: a row per rank (facts), then every check's verdict."""
    cols = ["rank", "host", "node", "device", "free GiB", "backend", "torch", "deepspeed",
            "transformers", "attention"]
    keys = ["rank", "host", "node", "device_name", "free_memory_gib", "backend", "torch",
            "deepspeed", "transformers", "attention"]
    table = [cols] + [[str(f.get(k, "-")) for k in keys] for _, f in sorted(report.facts.items())]
    widths = [max(len(r[i]) for r in table) for i in range(len(cols))]
    lines = ["  ".join(c.ljust(widths[i]) for i, c in enumerate(r)) for r in table]
    lines.append("")
    failed = {c.name.split()[0] for c in report.failures}
    for name, detail in ok_rows:
        verdict = "FAIL" if name.split()[0] in failed else "ok"
        lines.append(f"{name:<24} {verdict:<5} {detail}")
    for c in report.failures:
        lines.append(f"{c.name:<24} FAIL  rank {c.rank} on {c.host}: {c.detail}")
    return "\n".join(lines)
