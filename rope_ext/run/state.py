"""Where a run is (``RunState``), what stays fixed while it trains (``Context``), and the run directory's
lock, checkpoint and resumption."""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rope_ext import checkpoint, safety
from rope_ext.checkpoint import CheckpointError
from rope_ext.run import distributed
from rope_ext.run.build import Engine
from rope_ext.run.hooks import StepHooks
from rope_ext.run.preemption import SignalGuard
from rope_ext.run.settings import Settings, record_of
from rope_ext.schema import Config
from rope_ext.tracking.records import EpochRecord
from rope_ext.tracking.wandb_run import Tracker

log = logging.getLogger(__name__)

# The fields of RunState saved with every checkpoint (top-level keys of checkpoint.pt), restored on resume
PROGRESS_KEYS = (
    "epoch",
    "step_in_epoch",
    "global_step",
    "best_val_acc",
    "best_epoch",
    "history",
    "speed",
    "partial_loss",
)


@dataclass
class RunState:
    """Where the job is. The fields named in PROGRESS_KEYS go into every checkpoint."""

    epoch: int = 0  # epochs done
    step_in_epoch: int = 0  # steps of the next epoch done (a checkpoint taken on a signal)
    global_step: int = 0  # updates done
    best_val_acc: float | None = None
    best_epoch: int | None = None  # 1-based
    history: list[EpochRecord] = field(default_factory=list)
    speed: dict[str, float] = field(default_factory=lambda: {"images": 0.0, "seconds": 0.0})  # training
    partial_loss: list[float] = field(default_factory=lambda: [0.0, 0.0])  # [sum, count] before step_in_epoch
    # not saved
    resumed: bool = False
    epochs_done: int = 0  # epochs whose checkpoint is on disk: what failure.json reports
    on_disk: str = "none"  # what the checkpoint on disk holds, for messages

    def saved(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in PROGRESS_KEYS}

    def restore(self, ckpt: dict[str, Any]) -> None:
        for key in PROGRESS_KEYS:
            setattr(self, key, ckpt[key])


@dataclass
class Job:
    """What ``run_job`` needs of a job that ``train`` runs: to release, hand over and report."""

    lock: safety.RunLock
    guard: SignalGuard = field(default_factory=SignalGuard)
    state: RunState = field(default_factory=RunState)
    settings: Settings | None = None  # once the config is valid: what the failure record reports


@dataclass
class Context:
    """What stays fixed while a job trains; the loop's helpers take it first."""

    settings: Settings
    run_dir: Path
    env: distributed.DistEnv
    device: torch.device
    amp_dtype: torch.dtype | None  # None: fp32
    tracker: Tracker
    guard: SignalGuard
    fingerprint: dict[str, Any]  # what a checkpoint must match to be resumed
    steps_per_epoch: int
    bars: bool  # progress bars (rank 0 on a terminal), else log lines
    hooks: StepHooks | None = None  # the debug hook (rope_ext.run.hooks), None unless installed

    @property
    def config(self) -> Config:
        return self.settings.config


def position(epoch: int, step_in_epoch: int) -> str:
    return f"{epoch} epoch(s) done" + (f" + {step_in_epoch} step(s)" if step_in_epoch else "")


def first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def lock(ctx: Context, run_lock: safety.RunLock) -> None:
    """Rank 0 takes the run directory's lock; every rank stops when it is taken."""
    busy = None
    if ctx.env.is_main:
        try:
            run_lock.acquire()
        except safety.RunDirBusy as err:
            busy = err
    if distributed.all_reduce_max([float(busy is not None)], ctx.device)[0]:
        raise busy or safety.RunDirBusy(f"the run directory {ctx.run_dir} is in use by another process")


def resume(ctx: Context, engine: Engine, state: RunState) -> None:
    """Load the run directory's checkpoint (when train.resume) into the engine and the state."""
    train, run_dir = ctx.config.train, ctx.run_dir
    ckpt = checkpoint.load(run_dir, ctx.fingerprint) if train.resume else None
    if ckpt is None and not train.resume and (run_dir / checkpoint.CKPT_NAME).exists():
        log.warning(
            "train.resume=false: ignoring %s, it is overwritten at the next save", checkpoint.CKPT_NAME
        )
    if ckpt is not None:
        _load(ctx, engine, state, ckpt)
        state.on_disk = position(state.epoch, state.step_in_epoch)
        log.info(
            "Resuming from %s: %d of %d epochs done%s, best val_acc %s",
            run_dir / checkpoint.CKPT_NAME,
            state.epoch,
            train.epochs,
            f" + {state.step_in_epoch} steps" if state.step_in_epoch else "",
            fmt(state.best_val_acc),
        )
    state.epochs_done, state.resumed = state.epoch, state.epoch > 0 or state.step_in_epoch > 0
    if ckpt is not None and state.step_in_epoch >= ctx.steps_per_epoch:
        log.info("the checkpoint holds all of epoch %d's steps: ending that epoch", state.epoch + 1)


def _load(ctx: Context, engine: Engine, state: RunState, ckpt: dict[str, Any]) -> None:
    """The checkpoint's values into the engine and the state; a hand-edited or foreign file is one
    paragraph (CheckpointError, exit 2), not a traceback or a bogus record."""
    path = ctx.run_dir / checkpoint.CKPT_NAME
    try:
        checkpoint.check_progress(ckpt, ctx.steps_per_epoch)
        engine.model.load_state_dict(ckpt["model"])  # strict: names and shapes
        checkpoint.check_finite(path, engine.model.state_dict())
        engine.optimizer.load_state_dict(ckpt["optimizer"])
        checkpoint.check_optimizer(engine.optimizer)
        engine.scheduler.load_state_dict(ckpt["scheduler"])  # after the optimizer: it may set the lr
        engine.scaler.load_state_dict(ckpt["scaler"])
        state.restore(ckpt)
        rngs = ckpt["rng"]
        if len(rngs) == ctx.env.world_size:
            checkpoint.set_rng_state(rngs[ctx.env.rank])
        else:
            log.warning(
                "checkpoint from %d processes, now %d: RNG streams reseeded", len(rngs), ctx.env.world_size
            )
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as err:
        raise CheckpointError(
            f"checkpoint {path} does not fit this run: {first_line(err)}. {checkpoint.HOW}"
        ) from None


def save(ctx: Context, engine: Engine, state: RunState) -> None:
    """Rank 0 writes the checkpoint (every rank contributes its RNG state)."""
    # gathered as torch.save bytes: all_gather_object cannot pickle the RNG tensors themselves
    blob = io.BytesIO()
    torch.save(checkpoint.rng_state(), blob)
    rngs = [
        torch.load(io.BytesIO(b), weights_only=True) for b in distributed.all_gather_object(blob.getvalue())
    ]
    if ctx.env.is_main:
        _write_checkpoint(ctx, engine, state, rngs)
    state.on_disk = position(state.epoch, state.step_in_epoch)


def _write_checkpoint(ctx: Context, engine: Engine, state: RunState, rngs: list[Any]) -> None:
    payload = {
        "model": engine.model.state_dict(),
        "optimizer": engine.optimizer.state_dict(),
        "scheduler": engine.scheduler.state_dict(),
        "scaler": engine.scaler.state_dict(),
        "rng": rngs,
        **state.saved(),
    }
    record = {
        "epoch": state.epoch,
        "step_in_epoch": state.step_in_epoch,
        "global_step": state.global_step,
        "best_val_acc": state.best_val_acc,
        "fingerprint": ctx.fingerprint,
        "fingerprint_format": 2,
        "saved_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "config": record_of(ctx.config),
    }
    checkpoint.save(ctx.run_dir, payload, record)
