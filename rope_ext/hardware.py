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
from omegaconf import DictConfig

from rope_ext import distributed
from rope_ext.config import ConfigError

log = logging.getLogger(__name__)


def setup(hardware: DictConfig, env: distributed.DistEnv) -> tuple[torch.device, torch.dtype | None]:
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


def pick_device(hardware: DictConfig, env: distributed.DistEnv) -> torch.device:
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


def peak_mem_mb(device: torch.device) -> float:
    """GPU: peak memory allocated by torch; CPU: the process's peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
