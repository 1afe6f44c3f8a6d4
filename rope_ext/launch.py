"""Job states for ``launcher=slurm`` on clusters without accounting storage.

submitit polls ``sacct`` for the states of the jobs it waits on. On a cluster without accounting storage
(many small ones, and ``rope_ext.local_slurm``) every poll failed: sacct printed "Slurm accounting storage
is disabled" and submitit warned again, poll after poll. ``SlurmStates`` (a Hydra callback of
``conf/launcher/slurm.yaml``) gives submitit a watcher that says sacct's error once and then reads the
states from ``squeue --states=all`` (the jobs slurmctld still holds, ``MinJobAge``), so that a job SLURM
ended without a result (killed, failed node) is still seen to have ended.
"""

from __future__ import annotations

import logging
import subprocess
import time
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from submitit.slurm.slurm import SlurmInfoWatcher, SlurmJob

log = logging.getLogger(__name__)


class QuietSlurmWatcher(SlurmInfoWatcher):
    """submitit's sacct poller that falls back to squeue, saying once why (see the module docstring)."""

    def __init__(self, delay_s: int = 60) -> None:
        super().__init__(delay_s=delay_s)
        self.sacct_error: str | None = None

    def update(self) -> None:
        command = self._make_command()
        if command is None:
            return
        self._num_calls += 1
        output = self._sacct(command) if self.sacct_error is None else None
        if output is None:
            output = self._squeue(command)
        if output is not None:
            self._info_dict.update(self.read_info(output))
        self._last_status_check = time.time()
        for job_id in self._registered - self._finished:
            if self.is_done(job_id, mode="cache"):
                self._finished.add(job_id)

    def _sacct(self, command: list[str]) -> str | None:
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode == 0:
            return done.stdout
        lines = (done.stderr or done.stdout).strip().splitlines()
        self.sacct_error = lines[-1] if lines else f"exit status {done.returncode}"
        log.warning("sacct failed (%s): job states are read from squeue instead", self.sacct_error)
        return None

    def _squeue(self, sacct_command: list[str]) -> str | None:
        ids = [sacct_command[i + 1] for i, arg in enumerate(sacct_command) if arg == "-j"]
        cmd = ["squeue", "--noheader", "--states=all", "--format=%i|%T|%N", "--jobs", ",".join(ids)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:  # e.g. the jobs left slurmctld's memory: keep the last states seen
            log.debug("squeue failed: %s", done.stderr.strip())
            return None
        return "JobID|State|NodeList\n" + done.stdout


class SlurmStates(Callback):
    """Hydra callback of ``launcher=slurm`` (``hydra.callbacks.slurm_states``): installs the watcher."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not isinstance(SlurmJob.watcher, QuietSlurmWatcher):
            SlurmJob.watcher = QuietSlurmWatcher(delay_s=SlurmJob.watcher._delay_s)
