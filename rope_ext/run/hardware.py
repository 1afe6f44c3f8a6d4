"""Where and how a job computes (``conf/hardware``): device, autocast dtype, threads, loader workers,
seeding, a synchronised clock and peak memory."""

from __future__ import annotations

import logging
import os
import random
import resource
import time
from typing import Any

import numpy as np
import torch

from rope_ext.errors import ConfigError
from rope_ext.run import distributed
from rope_ext.schema import HardwareConfig

log = logging.getLogger(__name__)


def setup(hardware: HardwareConfig, env: distributed.DistEnv) -> tuple[torch.device, torch.dtype | None]:
    """The job's device and autocast dtype (None: fp32); applies ``hardware.threads``.

    Warns when DDP was asked for (``devices * nodes > 1``) but this process was started alone.
    """
    device = pick_device(hardware, env)
    dtype = amp_dtype(hardware.precision, device)
    if hardware.devices * hardware.nodes > 1 and not env.enabled:
        log.warning(
            "hardware.devices=%d, hardware.nodes=%d but this process runs alone: start it with "
            "torchrun --nproc_per_node=%d or a submitit launcher (launcher=submitit_local|slurm) for DDP",
            hardware.devices,
            hardware.nodes,
            hardware.devices,
        )
    if hardware.threads:
        torch.set_num_threads(int(hardware.threads))
    return device, dtype


def pick_device(hardware: HardwareConfig, env: distributed.DistEnv) -> torch.device:
    """``hardware.accelerator`` as a device: this rank's GPU (made current), else the CPU."""
    want = hardware.accelerator
    if want == "gpu" and not torch.cuda.is_available():
        raise ConfigError.bad_value(
            "hardware.accelerator", "gpu", "cpu or auto here", "no CUDA device is visible; use hardware=cpu"
        )
    if want == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    device = torch.device("cuda", env.local_rank % torch.cuda.device_count())
    torch.cuda.set_device(device)
    return device


def amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``hardware.precision`` on ``device``; None means fp32 (no autocast)."""
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError.bad_value("hardware.precision", precision, "fp32 or bf16 on the CPU")
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[precision]


def num_workers(configured: Any, device: torch.device, env: distributed.DistEnv) -> int:
    """``dataset.num_workers``; "auto": none on the CPU, else this process's share of the cores minus
    one (kept for the training loop), at most 8."""
    if configured == "auto":
        if device.type != "cuda":
            return 0
        per_process = (
            len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        )
        return max(0, min(8, per_process // max(1, torch.cuda.device_count()) - 1))
    return int(configured)


def seed(value: int) -> None:
    """Seed Python's, numpy's and torch's global generators."""
    random.seed(value)
    np.random.seed(value % 2**32)
    torch.manual_seed(value)


def now(device: torch.device) -> float:
    """``time.perf_counter()`` after the device's queued work is done (GPU work is asynchronous)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


_CPU_PEAK = {"reset": False}  # whether this process's peak RSS was reset (then VmHWM is the job's)


def reset_peak_mem(device: torch.device) -> None:
    """Start this job's peak memory afresh, so that each job of an in-process sweep reports its own.

    CUDA: torch's peak counters. CPU: Linux resets the peak resident set size (VmHWM) on writing 5 to
    /proc/self/clear_refs; ``getrusage``'s ``ru_maxrss`` cannot be reset. Where that fails, a warning
    says that ``peak_mem_mb`` is the process's peak so far.
    """
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        _CPU_PEAK["reset"] = _vm_hwm_kb() is not None
    except OSError:
        _CPU_PEAK["reset"] = False
    if not _CPU_PEAK["reset"]:
        log.warning("cannot reset the peak memory here: peak_mem_mb is this process's peak so far")


def _vm_hwm_kb() -> int | None:
    """The peak resident set size (kB) since the last reset, from /proc/self/status; None elsewhere."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def peak_mem_mb(device: torch.device) -> float:
    """This job's peak (since ``reset_peak_mem``): GPU, memory allocated by torch; CPU, the resident set
    size (the process's peak so far where it could not be reset)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    hwm = _vm_hwm_kb() if _CPU_PEAK["reset"] else None
    if hwm is not None:
        return hwm / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
