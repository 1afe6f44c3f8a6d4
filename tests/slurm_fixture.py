"""The ``slurm_cluster`` fixture: a throwaway one-node SLURM cluster (rope_ext.local_slurm) for the session."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from rope_ext import local_slurm


def _free_ports(n: int) -> tuple[int, ...]:
    """``n`` TCP ports free on 127.0.0.1 now (so that a user's own local cluster keeps its ports)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return tuple(s.getsockname()[1] for s in sockets)
    finally:
        for s in sockets:
            s.close()


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[local_slurm.Cluster]:
    """A started cluster (its own state directory and ports), stopped at the end of the session.

    Skips with the reason where it cannot run (not root, no apt); under CI (``CI`` set) that is a failure:
    CI runs as root on a Debian-like machine, where these tests must run.
    """
    reason = local_slurm.unavailable_reason()
    if reason is None:
        state_dir = tmp_path_factory.mktemp("slurm")
        try:
            cluster = local_slurm.start(state_dir, ports=_free_ports(2))  # type: ignore[arg-type]
        except local_slurm.ClusterUnavailable as err:
            reason = str(err)
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"local SLURM cluster unavailable under CI: {reason}")
        pytest.skip(f"no local SLURM cluster: {reason}")
    try:
        yield cluster
    finally:
        local_slurm.stop(state_dir)
