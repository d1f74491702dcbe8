"""Fixtures of the grid tests."""

from __future__ import annotations

import os

import pytest
from slurm_cluster import SlurmCluster, missing, start, stop


@pytest.fixture(scope="session")
def slurm_cluster():
    """A two-node SLURM cluster (n1, n2) on this machine for the whole session (SLURM_CONF set for the
    session's processes), stopped by pid at the end; skipped with the reason
    when this machine cannot run one."""
    reason = missing()
    if reason:
        pytest.skip(reason)
    cluster: SlurmCluster = start()
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        yield cluster
    finally:
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
        stop(cluster.state)
