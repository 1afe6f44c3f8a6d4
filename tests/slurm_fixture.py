"""The ``slurm_cluster`` fixture: a throwaway one-node SLURM cluster (rope_ext.local_slurm) for the session."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator

import pytest

from rope_ext import local_slurm, local_slurm_state


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
        state_dir = tmp_path_factory.mktemp("slurm") / "state"  # made by start: private and marked
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
        daemons = json.loads((state_dir / local_slurm_state.RECORDS).read_text())
        notes = local_slurm.stop(state_dir)
        # stop found every daemon it started, by pid, executable, start time and command line
        assert notes == [], notes
        left = [
            name for name, d in daemons.items() if local_slurm_state.is_running(d["pid"], d["start_time"])
        ]
        assert left == [], f"still running after stop: {left}"
