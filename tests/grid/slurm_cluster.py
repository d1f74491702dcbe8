"""A real SLURM cluster of two nodes on this one machine for the tests,
started by scripts/slurm_test_cluster.sh (munged, slurmctld and one slurmd
per node, `slurmd -N n1` and `-N n2`, each with its own port, spool, log and
pid file, all at NodeAddr=127.0.0.1; every file in one temporary folder,
nothing under /etc) and stopped by the pids it recorded. Both nodes see the
same filesystem, as the nodes of a cluster with a shared home do.

`cluster_or_skip()` gives the reason to skip when this machine cannot run
one (no binaries, not root), so the tests say why instead of failing."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "slurm_test_cluster.sh"
BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "setpriv")


@dataclass(frozen=True)
class SlurmCluster:
    """A started cluster: its state folder and the SLURM_CONF clients need."""

    state: Path
    conf: Path

    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def log_tail(self, lines: int = 30) -> str:
        """The daemons' last log lines, for a failed test's message."""
        out = []
        for path in sorted((self.state / "log").glob("*.log")):
            out.append(f"--- {path.name}\n" + "\n".join(path.read_text().splitlines()[-lines:]))
        return "\n".join(out)


def missing() -> str | None:
    """Why no cluster can start here, or None."""
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/sbin"
    absent = [b for b in BINARIES if shutil.which(b, path=path) is None]
    if absent:
        return (f"SLURM binaries missing: {', '.join(absent)} "
                "(scripts/ci_system_packages.sh installs slurm-wlm and munge)")
    if os.geteuid() != 0:
        return "the SLURM test cluster needs root (slurmd starts jobs as their user)"
    try:
        import submitit  # noqa: F401
    except ImportError:
        return "submitit is not installed (pip install submitit)"
    return None


NODES = ("n1", "n2")


def start(nodes: int = len(NODES)) -> SlurmCluster:
    """Start a cluster in a fresh folder under the system temp dir (the munge
    user must be able to reach its socket there, so not under pytest's
    root-only tmp)."""
    state = Path(tempfile.mkdtemp(prefix="dtvg-slurm-"))
    proc = subprocess.run(["bash", str(SCRIPT), "start", str(state), str(nodes)], capture_output=True,
                          text=True, timeout=120)
    if proc.returncode != 0:
        stop(state)
        raise RuntimeError(f"{SCRIPT} start failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return SlurmCluster(state, state / "slurm.conf")


def stop(state: Path) -> None:
    """Stop the daemons start recorded (by pid) and remove the folder."""
    subprocess.run(["bash", str(SCRIPT), "stop", str(state)], capture_output=True, timeout=60,
                   check=False)
    shutil.rmtree(state, ignore_errors=True)
