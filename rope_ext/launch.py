"""Hydra callbacks of ``launcher=slurm``: job states on clusters without accounting storage, and the
memory request checked against the job's measured peak.

submitit polls ``sacct`` for the states of the jobs it waits on. On a cluster without accounting storage
(many small ones, and ``rope_ext.local_slurm``) every poll failed: sacct printed "Slurm accounting storage
is disabled" and submitit warned again, poll after poll. ``SlurmStates`` (a Hydra callback of
``conf/launcher/slurm.yaml``) gives submitit a watcher that says sacct's error once and then reads the
states from ``squeue --states=all`` (the jobs slurmctld still holds, ``MinJobAge``), so that a job SLURM
ended without a result (killed, failed node) is still seen to have ended.

``SlurmMemory`` warns once, when the sweep starts, if ``launcher.mem_gb`` is below the job's estimated
peak (``estimated_peak_mb``: measured peaks of CPU runs; no estimate, no check). A cluster that enforces
memory kills a job over its request.
"""

from __future__ import annotations

import logging
import math
import subprocess
import time
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from submitit.slurm.slurm import SlurmInfoWatcher, SlurmJob

from rope_ext.util import select

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


# The peak resident memory of one CPU training process (MB = 2**20 bytes), measured, by dataset: the
# largest `job peak MB` of the committed study runs (experiments/results/*/report.csv: 652 digits runs
# 935-1,018 MB, 456 relpos runs 1,062-1,290 MB; embed_dim 64, depth 2-3, batch 64, one thread) and of the
# default run (vit_cifar on digits, 1,217 MB: docs/study.md, "The quick-start runs (CPU)").
CPU_PEAK_MB = {"digits": 1217.0, "relpos": 1290.0}
# ... which hold for models and batches no larger than those runs' (vit_cifar's size, batch 64, 32 px)
MEASURED_LIMITS = {"model.embed_dim": 192, "model.depth": 6, "train.batch_size": 64, "dataset.input_size": 32}
HEADROOM = 1.5  # the request advised: the estimate with half again on top, in whole GB


def estimated_peak_mb(cfg: Any) -> float | None:
    """The estimated peak memory (MB) of one node of the job: the measured peak of one process
    (``CPU_PEAK_MB``) times the processes per node (``hardware.devices``); None where nothing was measured
    (GPU nodes, other datasets, larger models or batches)."""
    peak = CPU_PEAK_MB.get(str(select(cfg, "dataset.name")))
    if peak is None or select(cfg, "hardware.accelerator") != "cpu":
        return None
    if any(float(select(cfg, key, math.inf)) > limit for key, limit in MEASURED_LIMITS.items()):
        return None
    return peak * int(select(cfg, "hardware.devices", 1))


def memory_warning(cfg: Any) -> str | None:
    """A warning naming ``launcher.mem_gb``, its value and the estimate when the request is below the
    job's estimated peak; None when it is not, or when no estimate is known."""
    if select(cfg, "launcher.name") != "slurm" or select(cfg, "launcher.mem_gb") is None:
        return None
    mem_gb, estimate = int(select(cfg, "launcher.mem_gb")), estimated_peak_mb(cfg)
    if estimate is None or mem_gb * 1024 >= estimate:
        return None
    advised = math.ceil(estimate * HEADROOM / 1024)
    return (
        f"launcher.mem_gb={mem_gb} ({mem_gb * 1024} MB per node) is below this job's estimated peak of "
        f"{estimate:,.0f} MB (dataset={select(cfg, 'dataset.name')} on CPU, {select(cfg, 'hardware.devices', 1)} "
        f"process(es) per node; measured peaks: rope_ext.launch.CPU_PEAK_MB). A cluster that enforces memory "
        f"kills such a job: set launcher.mem_gb={advised} or more."
    )


class SlurmMemory(Callback):
    """Hydra callback of ``launcher=slurm`` (``hydra.callbacks.slurm_memory``): ``memory_warning``, once."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        warning = memory_warning(config)
        if warning:
            log.warning(warning)
