"""Process group setup: torchrun's environment variables or submitit's JobEnvironment, nothing hand-parsed.

DistributedDataParallel engages by itself whenever the world size is above 1: gloo on CPU, nccl on GPU.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass
class DistEnv:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    source: str = "single process"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _submitit_env() -> DistEnv | None:
    """Ranks of a submitit task (SLURM or local executor), exported for torch's env:// init."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return None
    import submitit

    env = submitit.helpers.TorchDistributedEnvironment()
    if env.world_size > 1:
        env.export(set_cuda_visible_devices=False)
    return DistEnv(env.rank, env.local_rank, env.world_size, f"submitit ({env._job_env.cluster})")


def detect() -> DistEnv:
    """Ranks from torchrun (RANK, WORLD_SIZE, LOCAL_RANK) or submitit; a single process otherwise."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return DistEnv(
            int(os.environ["RANK"]),
            int(os.environ.get("LOCAL_RANK", 0)),
            int(os.environ["WORLD_SIZE"]),
            "torchrun",
        )
    return _submitit_env() or DistEnv()


def init(env: DistEnv, device: torch.device, timeout_min: float = 30.0) -> None:
    """Join the process group (env:// rendezvous) when the world size is above 1."""
    if not env.enabled or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(
        backend=backend,
        init_method="env://",
        rank=env.rank,
        world_size=env.world_size,
        timeout=datetime.timedelta(minutes=timeout_min),
        device_id=device if device.type == "cuda" else None,
    )
    log.info("DDP: rank %d of %d (%s, %s)", env.rank, env.world_size, backend, env.source)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _all_reduce(values: list[float], device: torch.device, op: dist.ReduceOp) -> list[float]:
    if not (dist.is_available() and dist.is_initialized()):
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=op)
    return t.tolist()


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum a few numbers over all ranks (identity in a single process)."""
    return _all_reduce(values, device, dist.ReduceOp.SUM)


def all_reduce_max(values: list[float], device: torch.device) -> list[float]:
    """Maximum of a few numbers over all ranks (identity in a single process)."""
    return _all_reduce(values, device, dist.ReduceOp.MAX)


def all_gather_object(obj: object) -> list[object]:
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: object) -> object:
    """Rank 0's ``obj`` on every rank."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
