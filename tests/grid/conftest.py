"""Fixtures of the grid tests."""

from __future__ import annotations

import atexit
import os

import pytest
from background import BACKGROUND
from slurm_cluster import SlurmCluster, missing, start, stop


def _start_for_the_session() -> SlurmCluster | None:
    """The cluster, or None where this machine cannot run one; stopped at
    exit if no fixture stops it first (stopping twice is harmless)."""
    if missing():
        return None
    cluster = start()
    atexit.register(stop, cluster.state)
    BACKGROUND.set_session_env("SLURM_CONF", str(cluster.conf))  # for the session's processes
    return cluster


# what the session had before the cluster's (put back when the fixture ends)
_CALLERS_SLURM_CONF = os.environ.get("SLURM_CONF")
# in the background from the session's start (tests/background.py): the grids
# of tests/grid/test_slurm.py are offered after it
BACKGROUND.offer("slurm_cluster", _start_for_the_session)


@pytest.fixture(scope="session")
def slurm_cluster():
    """A two-node SLURM cluster (n1, n2) on this machine for the whole session (SLURM_CONF set for the
    session's processes), stopped by pid at the end; skipped with the reason
    when this machine cannot run one."""
    reason = missing()
    if reason:
        pytest.skip(reason)
    cluster: SlurmCluster | None = BACKGROUND.result("slurm_cluster", _start_for_the_session)
    assert cluster is not None
    BACKGROUND.set_session_env("SLURM_CONF", str(cluster.conf))  # as the start did (a test may have unset it)
    try:
        yield cluster
    finally:
        if _CALLERS_SLURM_CONF is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = _CALLERS_SLURM_CONF
        stop(cluster.state)
