"""The training job behind ``train.py``: read it top to bottom.

``run_job(cfg)`` runs ``train`` and turns its failures into exit codes. ``train`` goes through the job's
phases in order: check the config, build data, model, optimiser and schedule, lock the run directory and
resume from its checkpoint, train (warm-up + cosine LR, evaluation and an atomic checkpoint at every epoch
end, a checkpoint on SIGTERM/SIGUSR1/SIGUSR2/SIGINT too: exit 128 + signal), evaluate at several input
sizes, measure inference speed and write ``metrics.json``. Every step checks that its loss, gradients
and updated weights are finite (read at the next sync point, before any checkpoint): divergence, or a
failed linear solve, stops the job with exit 3 and the last good checkpoint kept. Bad input stops it before any work with one paragraph naming key, value and what
is allowed. A failing job writes ``failure.json`` beside its results (``metrics.json`` is only written by
a finished run and never replaced by a failure); in a multirun it returns, so the sweep goes on; a single
run exits non-zero. The run directory is locked (``rope_ext.safety.RunLock``) while a job uses it.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

import rope_ext
from rope_ext import checkpoint, distributed, hardware, recipe, safe_io, safety
from rope_ext.checkpoint import CheckpointError
from rope_ext.config import ConfigError, eval_sizes, select, validate
from rope_ext.data import DataSplits, build_datasets
from rope_ext.encoding.spec import OPTION_KEYS
from rope_ext.encoding.vit import resolved_options
from rope_ext.evaluation import benchmark_inference, eval_transform, evaluate, final_evaluation
from rope_ext.loader import Batches, BatchTransform
from rope_ext.metrics import (
    FAILURE_NAME,
    METRICS_NAME,
    RUN_NAME,
    SCHEMA_VERSION,
    EpochRecord,
    FailureRecord,
    RunMetrics,
    record_run,
    write_record,
)
from rope_ext.model import build_model
from rope_ext.optim import WarmupCosine, build_optimizer, build_scheduler
from rope_ext.preemption import Interrupted, SignalGuard, interrupted_before_training
from rope_ext.provenance import process_revision, provenance
from rope_ext.summary import format_table, row_of
from rope_ext.tracking import Tracker

log = logging.getLogger(__name__)

# A refused checkpoint (corrupt, of other settings, or whose values cannot be what a run saved: wrong
# types or shapes, an epoch beyond its history, non-finite weights) is bad input: EXIT_CONFIG, like a bad
# config, with nothing trained. EXIT_IO: the run's files cannot be written (disk full, read-only, links).
EXIT_CONFIG, EXIT_NONFINITE, EXIT_IO = 2, 3, 4

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


class Diverged(RuntimeError):
    """Training diverged (a non-finite loss, gradient or weight, or a failed linear solve); the last good
    checkpoint is kept and nothing non-finite was saved."""


NonFiniteLoss = Diverged  # its earlier name

# Test hook: faults injected at exact steps, "KIND@EPOCH:STEP[,...]" (1-based; STEP "end": right after
# that epoch's checkpoint). KIND: a signal name (SIGTERM, SIGUSR1, SIGUSR2, SIGINT; SIGINT2 sends two),
# sent from inside the step, after the backward pass; loss / grad / param: that step's loss, a gradient
# or, after the update, a weight made NaN; solve: the step's forward raises the LinAlgError of a
# singular linear solve. Deterministic on every processor, unlike a huge learning rate.
FAULT_ENV = "ROPE_EXT_FAULT"
FAULT_KINDS = ("SIGTERM", "SIGUSR1", "SIGUSR2", "SIGINT", "SIGINT2", "loss", "grad", "param", "solve")
Faults = dict[tuple[int, int | None], set[str]]  # (epoch, step or None for "end") -> kinds


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


@dataclass
class Context:
    """What stays fixed while a job trains; the loop's helpers take it first."""

    cfg: DictConfig
    run_dir: Path
    env: distributed.DistEnv
    device: torch.device
    amp_dtype: torch.dtype | None  # None: fp32
    tracker: Tracker
    guard: SignalGuard
    fingerprint: dict[str, Any]  # what a checkpoint must match to be resumed
    steps_per_epoch: int
    bars: bool  # progress bars (rank 0 on a terminal), else log lines
    faults: Faults = field(default_factory=dict)  # FAULT_ENV's injected faults (tests)


@dataclass
class Data:
    """The splits as device-side batches of images (B, 3, H, W) and labels (B,)."""

    splits: DataSplits
    dataset: DictConfig
    batch_args: dict[str, Any]  # device, rank, world size, in_memory, num_workers: the same for all
    eval_batch_size: int
    input_size: int
    sizes: list[int]  # of the final evaluation
    train: Batches
    test: Batches = field(init=False)
    # validation: what model and learning-rate selection read (every epoch); the test split is evaluated
    # once, at the end, and selects nothing
    val: Batches | None = field(init=False)

    def __post_init__(self) -> None:
        self.test = self.eval_batches(self.splits.test, self.input_size)
        self.val = (
            self.eval_batches(self.splits.val, self.input_size) if self.splits.val is not None else None
        )

    def eval_batches(self, split: Any, size: int) -> Batches:
        transform = eval_transform(self.dataset, size)
        return Batches(
            split, batch_size=self.eval_batch_size, transform=transform, train=False, **self.batch_args
        )

    def test_at(self, size: int) -> Batches:
        """The test split at ``size``: redrawn at that size where the dataset can, else resized."""
        redrawn = self.splits.test_at(size) if size != self.input_size else None
        if redrawn is not None:
            return self.eval_batches(redrawn, size)
        self.test.transform = eval_transform(self.dataset, size)
        return self.test


@dataclass
class Engine:
    """What an update changes, and what a checkpoint saves."""

    model: nn.Module  # the model itself: saved, evaluated, measured
    optimizer: torch.optim.Optimizer
    scheduler: WarmupCosine
    scaler: torch.amp.GradScaler
    criterion: nn.Module
    net: nn.Module  # what trains: the model, under DDP and torch.compile when they are on
    mixup: Any = None  # timm.data.Mixup (recipe.mixup/cutmix): (x, y) -> (mixed x, soft targets)


# (global step, step in epoch, loss (), lr, finite (3,): loss, gradients, weights) not yet checked or logged
Pending = tuple[int, int, torch.Tensor, float, torch.Tensor]


def run_job(cfg: DictConfig) -> float | None:
    """Train one job and return its final validation accuracy, else (val_fraction=0) its test accuracy;
    None when a multirun job failed. The return value is what a Hydra sweeper would optimise: never test
    when a validation split exists."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    env = distributed.detect()
    if not env.is_main:  # one log: the other ranks report warnings and errors only
        logging.getLogger().setLevel(logging.WARNING)
    tracker = Tracker()
    job = Job(safety.RunLock(run_dir))

    def failed(error: str, exit_code: int) -> None:
        """failure.json, W&B told the exit code; a single run exits with it, a multirun goes on."""
        _write_failure(run_dir, cfg, env, error, job.state)
        tracker.finish(exit_code=exit_code)
        if multirun:
            return None
        raise SystemExit(exit_code) from None

    try:
        safety.check_run_dir(run_dir, multirun=multirun)
        metrics = train(cfg, run_dir, env, tracker, job)
        return metrics["val_acc"] if metrics.get("val_acc") is not None else metrics["test_acc"]
    except (ConfigError, CheckpointError) as err:
        kind = "Invalid configuration" if isinstance(err, ConfigError) else "Refusing the checkpoint"
        log.error("%s: %s Nothing was trained.", kind, err)
        if not isinstance(err, safety.RunDirBusy):  # the directory is another live process's
            _write_failure(run_dir, cfg, env, f"{kind}: {err}", job.state)
        if multirun:
            return None
        raise SystemExit(EXIT_CONFIG) from None
    except OSError as err:  # disk full, read-only output, a planted link: one paragraph, no traceback
        if isinstance(err, safe_io.UnsafePathError):
            log.error("Unsafe run directory: %s.", err)
        else:
            log.error(
                "I/O error: %s. Free space or fix the permissions (output: %s), then rerun the same "
                "command: it resumes from the last checkpoint.",
                _describe_os_error(err, run_dir),
                run_dir,
            )
        return failed(f"{type(err).__name__}: {err}", EXIT_IO)
    except Diverged as err:
        log.error("%s", err)
        return failed(str(err), EXIT_NONFINITE)
    except torch.linalg.LinAlgError as err:  # outside the loop (final evaluation): the same cause
        message = _diverged_message(f"the final evaluation's linear solve failed ({_first_line(err)})", job)
        log.error("%s", message)
        return failed(message, EXIT_NONFINITE)
    except KeyboardInterrupt:  # Ctrl-C outside the training loop, where nothing needs saving
        message = interrupted_before_training(job.state.on_disk)
        log.warning("%s", message)
        _write_failure(run_dir, cfg, env, message, job.state)
        tracker.finish(exit_code=130)
        raise SystemExit(130) from None
    except Interrupted as err:
        log.warning("%s", err)
        _write_failure(run_dir, cfg, env, str(err), job.state)
        tracker.finish(exit_code=128 + err.signum)
        distributed.shutdown()
        try:
            job.guard.hand_over(err.signum)  # submitit: requeue and exit
        except Exception as refused:  # submitit did not requeue (time-outs beyond launcher.max_num_timeout)
            limit = select(cfg, "launcher.max_num_timeout")
            error = f"{err}; not requeued (launcher.max_num_timeout={limit}): {refused}"
            log.error("%s", error)
            _write_failure(run_dir, cfg, env, error, job.state)
            if multirun:
                return None
        raise SystemExit(128 + err.signum) from None
    except Exception as err:
        log.exception("job failed")
        _write_failure(run_dir, cfg, env, f"{type(err).__name__}: {err}", job.state)
        if multirun:
            return None
        raise
    finally:
        tracker.finish()
        distributed.shutdown()
        job.lock.release()


def train(
    cfg: DictConfig, run_dir: Path, env: distributed.DistEnv, tracker: Tracker, job: Job | None = None
) -> RunMetrics:
    """Run the job of ``cfg`` in ``run_dir`` and return its metrics (written to metrics.json by rank 0).

    ``job`` is shared with the caller, who reads its state (epochs done) when this raises.
    """
    job = job if job is not None else Job(safety.RunLock(run_dir))
    state = job.state
    started = time.time()
    process_revision()  # the code this process loaded: a commit made during a long sweep is not it
    faults = faults_from_env()
    # 1. check everything that can be checked before doing any work
    validate(cfg, multirun=HydraConfig.get().mode == RunMode.MULTIRUN)  # train.py ran it before Hydra too
    if select(cfg, "recipe.lr_batch") is not None:  # the peak lr scales with the global batch
        with open_dict(cfg):
            cfg.train.lr = recipe.peak_lr(cfg, env.world_size)
    device, amp_dtype = hardware.setup(cfg.hardware, env)
    hardware.reset_peak_mem(device)  # peak_mem_mb is this job's, not an earlier job's of the process

    # 2. data, model, optimiser and schedule (still nothing written)
    data, model = _build_data_and_model(cfg, env, device)
    engine = _build_engine(cfg, model, data.train.num_batches, device, amp_dtype, data.splits.num_classes)
    fingerprint = checkpoint.fingerprint_of(
        OmegaConf.to_container(cfg, resolve=True), data.splits.num_classes
    )
    bars = env.is_main and sys.stderr.isatty()
    ctx = Context(
        cfg,
        run_dir,
        env,
        device,
        amp_dtype,
        tracker,
        job.guard,
        fingerprint,
        data.train.num_batches,
        bars,
        faults,
    )

    # 3. lock the run directory, resume from its checkpoint (refused when corrupt or of other settings)
    _lock(ctx, job.lock)
    _resume(ctx, engine, state)
    if env.is_main and (not state.resumed or not (run_dir / RUN_NAME).exists()):
        # the run's own identity for the readers: Hydra rewrites .hydra/ at every attempt, refused ones too
        overrides = [str(o) for o in HydraConfig.get().overrides.task]
        record_run(run_dir, OmegaConf.to_container(cfg, resolve=True), overrides)
    engine.net = _parallel(ctx, model)
    _start_tracking(ctx, state, data, model)

    # 4. the loop: an epoch of updates, then validation and a checkpoint
    with job.guard, logging_redirect_tqdm() if bars else contextlib.nullcontext():
        with _bar(ctx, total=cfg.train.epochs, initial=state.epoch, desc="epochs", position=0) as bar:
            first = state.epoch
            while state.epoch < cfg.train.epochs:
                losses = _train_epoch(ctx, engine, data.train, state, first_here=state.epoch == first)
                _end_epoch(ctx, engine, data.val, state, losses)
                bar.update(1)
                _inject(ctx, ctx.faults.get((state.epoch, None), set()))
                # a signal in the epoch's last step or during its end (validation, checkpoint): the
                # checkpoint just saved is complete, stop like any other interruption (exit 128+signal)
                late = _agreed_signal(ctx)
                if late:
                    where = "after the last epoch (before the final evaluation)"
                    if state.epoch < cfg.train.epochs:
                        where = f"after epoch {state.epoch}'s checkpoint"
                    raise Interrupted(late, where)
        # a signal after the loop's last check (or a rerun with every epoch done): stop the same way
        late = _agreed_signal(ctx)
        if late:
            raise Interrupted(late, "after the last epoch (before the final evaluation)")

    # 5. final evaluation: resolution extrapolation, the relative property, speed
    final = final_evaluation(model, data.test_at, data.input_size, data.sizes, device, amp_dtype)
    speed = _speeds(ctx, state, model, data.input_size)

    # 6. the record
    metrics = _run_metrics(ctx, state, model, data.input_size, final | speed, started)
    if env.is_main:
        _publish(ctx, metrics)
    return metrics


# ---------------------------------------------------------------------------------------------------
# building


def _build_data_and_model(
    cfg: DictConfig, env: distributed.DistEnv, device: torch.device
) -> tuple[Data, nn.Module]:
    """The datasets as batches and the model on ``device``, the same initial weights on every rank."""
    splits = build_datasets(cfg.dataset, select(cfg, "recipe"))
    hardware.seed(cfg.seed)  # the same initial weights on every rank
    model = build_model(cfg, splits.num_classes)
    patch = int(model.patch_embed.patch_size[0])
    input_size = int(cfg.dataset.input_size)
    sizes = eval_sizes(input_size, patch, cfg.eval.input_sizes)  # patch multiples: config.validate
    distributed.init(env, device)
    hardware.seed(cfg.seed + 1 + env.rank)  # augmentation differs across ranks
    model.to(device)

    train_tf = BatchTransform(
        input_size,
        cfg.dataset.mean,
        cfg.dataset.std,
        train=cfg.dataset.name not in recipe.PER_IMAGE_DATASETS,  # those are augmented per image
        crop_padding=select(cfg.dataset, "augment.crop_padding", 0),
        hflip=select(cfg.dataset, "augment.hflip", False),
    )
    workers = hardware.num_workers(select(cfg.dataset, "num_workers", 0), device, env)
    in_memory = bool(select(cfg.dataset, "in_memory", True))
    batch_args = dict(device=device, rank=env.rank, world_size=env.world_size, in_memory=in_memory)
    batch_args["num_workers"] = workers
    train = Batches(
        splits.train,
        batch_size=cfg.train.batch_size,
        transform=train_tf,
        train=True,
        seed=cfg.seed,
        **batch_args,
    )
    data = Data(splits, cfg.dataset, batch_args, cfg.eval.batch_size, input_size, sizes, train)
    if train.num_batches == 0:
        raise ConfigError(f"the train set of dataset={cfg.dataset.name} is empty on rank {env.rank}")
    return data, model


def _build_engine(
    cfg: DictConfig,
    model: nn.Module,
    steps_per_epoch: int,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    num_classes: int,
) -> Engine:
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch)
    # loss scaling only for fp16: bf16 has fp32's exponent range
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.train.label_smoothing)
    mixup = recipe.build_mixup(cfg, num_classes)
    if mixup is not None:  # soft targets (label smoothing included) from timm's Mixup/CutMix
        from timm.loss import SoftTargetCrossEntropy

        criterion = SoftTargetCrossEntropy()
    return Engine(model, optimizer, scheduler, scaler, criterion, net=model, mixup=mixup)


def _parallel(ctx: Context, model: nn.Module) -> nn.Module:
    """DDP when there are several processes, torch.compile when asked."""
    net = model
    if ctx.env.enabled:
        device = ctx.device
        net = nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None
        )
    if ctx.cfg.hardware.compile:
        net = torch.compile(net)
    return net


def _lock(ctx: Context, lock: safety.RunLock) -> None:
    """Rank 0 takes the run directory's lock; every rank stops when it is taken."""
    busy = None
    if ctx.env.is_main:
        try:
            lock.acquire()
        except safety.RunDirBusy as err:
            busy = err
    if distributed.all_reduce_max([float(busy is not None)], ctx.device)[0]:
        raise busy or safety.RunDirBusy(f"the run directory {ctx.run_dir} is in use by another process")


def _resume(ctx: Context, engine: Engine, state: RunState) -> None:
    """Load the run directory's checkpoint (when train.resume) into the engine and the state."""
    cfg, run_dir = ctx.cfg, ctx.run_dir
    ckpt = checkpoint.load(run_dir, ctx.fingerprint) if cfg.train.resume else None
    if ckpt is None and not cfg.train.resume and (run_dir / checkpoint.CKPT_NAME).exists():
        log.warning(
            "train.resume=false: ignoring %s, it is overwritten at the next save", checkpoint.CKPT_NAME
        )
    if ckpt is not None:
        path = run_dir / checkpoint.CKPT_NAME
        try:  # a hand-edited or foreign file: one paragraph (exit 2), not a traceback or a bogus record
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
                    "checkpoint from %d processes, now %d: RNG streams reseeded",
                    len(rngs),
                    ctx.env.world_size,
                )
        except CheckpointError:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as err:
            raise CheckpointError(
                f"checkpoint {path} does not fit this run: {_first_line(err)}. {checkpoint.HOW}"
            ) from None
        state.on_disk = _position(state.epoch, state.step_in_epoch)
        log.info(
            "Resuming from %s: %d of %d epochs done%s, best val_acc %s",
            run_dir / checkpoint.CKPT_NAME,
            state.epoch,
            cfg.train.epochs,
            f" + {state.step_in_epoch} steps" if state.step_in_epoch else "",
            _fmt(state.best_val_acc),
        )
    state.epochs_done, state.resumed = state.epoch, state.epoch > 0 or state.step_in_epoch > 0
    if ckpt is not None and state.step_in_epoch >= ctx.steps_per_epoch:
        log.info("the checkpoint holds all of epoch %d's steps: ending that epoch", state.epoch + 1)


def _start_tracking(ctx: Context, state: RunState, data: Data, model: nn.Module) -> None:
    """W&B (rank 0, one run per job) and the job's one-line description."""
    cfg, run_dir = ctx.cfg, ctx.run_dir
    if ctx.env.is_main and cfg.wandb.mode != "disabled":
        name, group = _wandb_names(cfg, run_dir)
        ctx.tracker.start(
            mode=cfg.wandb.mode,
            run_dir=run_dir,
            project=cfg.wandb.project,
            entity=cfg.wandb.entity,
            group=group,
            name=name,
            config=OmegaConf.to_container(cfg, resolve=True),
            tags=list(cfg.wandb.tags),
            init_timeout=cfg.wandb.init_timeout,
            resuming=state.resumed,
        )
    log.info(
        "%s | pe=%s | %s %s | %d params | %s x %d process(es), batch %d each | %d epochs of %d steps -> %s",
        cfg.model.name,
        cfg.pe.name,
        cfg.dataset.name,
        data.input_size,
        sum(p.numel() for p in model.parameters()),
        ctx.device,
        ctx.env.world_size,
        cfg.train.batch_size,
        cfg.train.epochs,
        ctx.steps_per_epoch,
        run_dir,
    )


# ---------------------------------------------------------------------------------------------------
# the loop


def _train_epoch(
    ctx: Context, engine: Engine, batches: Batches, state: RunState, first_here: bool
) -> list[torch.Tensor]:
    """The updates of epoch ``state.epoch`` from ``state.step_in_epoch`` on; returns their losses (each
    a 0-dim tensor still on the device). Counts the images/s of its steady state into ``state.speed``.

    A stop request at a sync point checkpoints mid-epoch and raises Interrupted, except in the epoch's
    last step: the caller then ends the epoch (its checkpoint is the stop's) and stops. A checkpoint
    holding all of an epoch's steps (written by earlier versions) resumes as that epoch's end.
    """
    cfg, device, steps = ctx.cfg, ctx.device, ctx.steps_per_epoch
    skip = min(state.step_in_epoch, steps)
    if skip == steps:
        return []
    batches.set_epoch(state.epoch, skip=skip)
    engine.net.train()
    losses: list[torch.Tensor] = []
    pending: list[Pending] = []
    images, timer_start = 0, None if first_here else hardware.now(device)
    # the first steps of a process pay for allocation, compilation and autotuning: not counted
    warmup = speed_warmup(cfg.train.speed_warmup_steps, steps - skip) if first_here else 0
    desc = f"epoch {state.epoch + 1}"
    with _bar(ctx, total=steps, initial=skip, desc=desc, position=1, leave=False) as bar:
        step = skip
        for i, (x, y) in enumerate(batches):
            if i == warmup and timer_start is None:
                timer_start = hardware.now(device)
            kinds = ctx.faults.get((state.epoch + 1, step + 1), set())
            try:
                loss, lr, finite = _update(ctx, engine, x, y, kinds)
            except torch.linalg.LinAlgError as err:
                _check(ctx, state, pending, bar)  # an earlier step's non-finite values are the cause
                raise Diverged(
                    _diverged_message(
                        f"the rotary encoding's linear solve failed ({_first_line(err)}) at epoch "
                        f"{state.epoch + 1}, step {step + 1}/{steps}",
                        state,
                    )
                ) from None
            step += 1
            state.global_step += 1
            losses.append(loss)
            pending.append((state.global_step, step, loss, lr, finite))
            if timer_start is not None:
                images += x.shape[0]
            bar.update(1)
            # the sync point: every log_every steps (ranks agree on it); alone, right after a signal
            if (
                len(pending) >= cfg.train.log_every
                or step == steps
                or (ctx.guard.requested and not ctx.env.enabled)
            ):
                stop = _check(ctx, state, pending, bar)
                pending = []
                if stop is not None and step < steps:
                    state.step_in_epoch = step
                    state.partial_loss = _loss_sums(ctx, losses, state.partial_loss)
                    _save(ctx, engine, state)
                    raise Interrupted(stop, f"at epoch {state.epoch + 1} step {step}/{steps}")
    if timer_start is not None:
        state.speed["images"] += images
        state.speed["seconds"] += hardware.now(device) - timer_start
    return losses


def _update(
    ctx: Context, engine: Engine, x: torch.Tensor, y: torch.Tensor, faults: set[str]
) -> tuple[torch.Tensor, float, torch.Tensor]:
    """One optimiser step on images ``x`` (B, 3, H, W) and labels ``y`` (B,); returns the loss (a 0-dim
    tensor, not synchronised), the lr it used and whether (3,) the loss, the gradients and the weights
    after the update are finite (not synchronised either: ``_check`` reads them at the sync point).

    ``faults``: what FAULT_ENV injects into this step (tests)."""
    if "solve" in faults:
        raise torch.linalg.LinAlgError(
            "linalg.solve: The solver failed because the input matrix is singular (injected)."
        )
    if engine.mixup is not None:
        x, y = engine.mixup(x, y)
    with torch.autocast(ctx.device.type, dtype=ctx.amp_dtype, enabled=ctx.amp_dtype is not None):
        loss = engine.criterion(engine.net(x), y)
    if "loss" in faults:
        loss = loss * float("nan")
    engine.optimizer.zero_grad(set_to_none=True)
    engine.scaler.scale(loss).backward()
    params = [p for p in engine.model.parameters() if p.requires_grad]
    if "grad" in faults:
        params[0].grad.fill_(float("inf"))
    _inject(ctx, faults)
    if ctx.cfg.train.grad_clip:
        engine.scaler.unscale_(engine.optimizer)  # clip the true gradients, not the scaled ones
        nn.utils.clip_grad_norm_(engine.net.parameters(), ctx.cfg.train.grad_clip)
    # with fp16 loss scaling, non-finite gradients are expected now and then: the scaler skips them
    grads = [p.grad for p in params if p.grad is not None and not engine.scaler.is_enabled()]
    grads_ok = _finite(grads, loss.device)
    engine.scaler.step(engine.optimizer)
    engine.scaler.update()
    lr = engine.scheduler.get_last_lr()[0]
    engine.scheduler.step()
    if "param" in faults:
        with torch.no_grad():
            params[0].view(-1)[0] = float("nan")
    finite = torch.stack([loss.detach().isfinite(), grads_ok, _finite(params, loss.device)])
    return loss.detach(), lr, finite


def _finite(tensors: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """Whether every element of ``tensors`` is finite: a 0-dim bool on ``device``, not synchronised.

    CUDA: one fused max-abs over all of them (``torch.nn.utils.get_total_norm``, as gradient clipping
    does: a few kernels, NaN propagates). CPU, where that norm runs tensor by tensor (~24 ms for the
    default model's 2.7M weights on one thread): the sum of their sums (~1 ms), NaN or infinite exactly
    when an element is, barring a sum beyond 3e38, which no run's weights reach before they are lost.
    """
    if not tensors:
        return torch.ones((), dtype=torch.bool, device=device)
    if device.type == "cuda":
        return nn.utils.get_total_norm(tensors, float("inf"), foreach=True).isfinite()
    return torch.stack([t.sum(dtype=torch.float32) for t in tensors]).sum().isfinite()


def _check(ctx: Context, state: RunState, pending: list[Pending], bar: tqdm) -> int | None:
    """The loop's sync point: the non-finite check and stop requests (agreed across ranks), logging.

    Returns the signal number when the job must checkpoint and stop; raises Diverged naming the first
    step whose loss, gradients or updated weights were not finite (no checkpoint was written since).
    """
    if not pending:
        return None
    epoch, steps = state.epoch, ctx.steps_per_epoch
    values = torch.stack([loss for _, _, loss, _, _ in pending]).float().cpu().tolist()
    finite = torch.stack([ok for *_, ok in pending]).cpu()
    bad = not bool(finite.all())
    ctx.guard.announce()
    flags = distributed.all_reduce_max([float(bad), float(ctx.guard.signum or 0)], ctx.device)
    if flags[0]:
        what = f"on another rank, the loss, gradients or weights are not finite (by epoch {epoch + 1}, "
        what += f"step {pending[-1][1]}/{steps})"
        for (_, step, _, _, _), value, ok in zip(pending, values, finite.tolist()):
            if not all(ok):
                names = ("the loss", "the gradients", "the weights after the update")
                parts = [n for n, good in zip(names, ok) if not good]
                listed = " and ".join([", ".join(parts[:-1]), parts[-1]] if len(parts) > 1 else parts)
                what = f"{listed} {'is' if parts == [names[0]] else 'are'} not finite"
                what += f" (loss {value})" if not ok[0] else ""
                what += f" at epoch {epoch + 1}, step {step}/{steps}"
                break
        raise Diverged(_diverged_message(what, state))
    for (global_step, _, _, lr, _), value in zip(pending, values):
        ctx.tracker.log(
            {"trainer/step": global_step, "train/loss": value, "train/lr": lr, "trainer/epoch": epoch}
        )
    bar.set_postfix({"loss": f"{values[-1]:.4f}"})
    if not ctx.bars:
        log.info(
            "epoch %d step %d/%d | loss %.4f | lr %.2e",
            epoch + 1,
            pending[-1][1],
            steps,
            values[-1],
            pending[-1][3],
        )
    return int(flags[1]) or None


def _diverged_message(what: str, state: RunState | Job) -> str:
    """One paragraph: what diverged where, and which checkpoint is kept."""
    state = state.state if isinstance(state, Job) else state
    kept = (
        "no checkpoint was written"
        if state.on_disk == "none"
        else f"the last good checkpoint ({state.on_disk}) is kept"
    )
    return (
        f"Training diverged: {what}. Stopped; {kept}, and no checkpoint or result holds these weights. "
        "Lower train.lr, enable train.grad_clip, or use fp32."
    )


def _agreed_signal(ctx: Context) -> int:
    """The stop request of any rank (a signal number), 0 when none."""
    return int(distributed.all_reduce_max([float(ctx.guard.signum or 0)], ctx.device)[0])


def _end_epoch(
    ctx: Context, engine: Engine, val: Batches | None, state: RunState, losses: list[torch.Tensor]
) -> None:
    """Validate, remember the best epoch, checkpoint, log."""
    epoch = state.epoch
    val_acc = evaluate(engine.model, val, ctx.device, ctx.amp_dtype) if val else None
    total, count = _loss_sums(ctx, losses, state.partial_loss)
    train_loss = total / count if count else float("nan")
    state.partial_loss = [0.0, 0.0]
    if val_acc is not None and (state.best_val_acc is None or val_acc > state.best_val_acc):
        state.best_val_acc, state.best_epoch = val_acc, epoch + 1
    state.epoch, state.step_in_epoch = epoch + 1, 0
    lr = engine.scheduler.get_last_lr()[0]
    # the code that trained this epoch: a resumed run's epochs can come from different revisions, and
    # metrics.json's provenance is only the revision that wrote it
    revision = process_revision()["commit"]
    state.history.append(
        {"epoch": epoch + 1, "train_loss": train_loss, "val_acc": val_acc, "lr": lr, "revision": revision}
    )
    _save(ctx, engine, state)
    state.epochs_done = state.epoch
    ctx.tracker.log(
        {"trainer/epoch": epoch + 1, "epoch/train_loss": train_loss, "epoch/val_acc": val_acc}
        | {"epoch/best_val_acc": state.best_val_acc}
    )
    log.info(
        "epoch %d/%d | train_loss %.4f | val_acc %s (best %s) | checkpoint saved",
        epoch + 1,
        ctx.cfg.train.epochs,
        train_loss,
        _fmt(val_acc),
        _fmt(state.best_val_acc),
    )


def _save(ctx: Context, engine: Engine, state: RunState) -> None:
    """Rank 0 writes the checkpoint (every rank contributes its RNG state)."""
    # gathered as torch.save bytes: all_gather_object cannot pickle the RNG tensors themselves
    blob = io.BytesIO()
    torch.save(checkpoint.rng_state(), blob)
    rngs = [
        torch.load(io.BytesIO(b), weights_only=True) for b in distributed.all_gather_object(blob.getvalue())
    ]
    if ctx.env.is_main:
        _write_checkpoint(ctx, engine, state, rngs)
    state.on_disk = _position(state.epoch, state.step_in_epoch)


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
        "config": OmegaConf.to_container(ctx.cfg, resolve=True),
    }
    checkpoint.save(ctx.run_dir, payload, record)


def _loss_sums(ctx: Context, losses: list[torch.Tensor], carried: list[float]) -> list[float]:
    """[sum, count] of this epoch's losses over all ranks, plus what a mid-epoch checkpoint carried."""
    total = float(torch.stack(losses).float().sum().item()) if losses else 0.0
    s, n = distributed.all_reduce_sum([total, float(len(losses))], ctx.device)
    return [s + carried[0], n + carried[1]]


# ---------------------------------------------------------------------------------------------------
# the record


def _speeds(ctx: Context, state: RunState, model: nn.Module, input_size: int) -> dict[str, float | None]:
    """Training images/s (all ranks together) and inference speed (rank 0 measures it)."""
    images = distributed.all_reduce_sum([state.speed["images"]], ctx.device)[0]
    seconds = distributed.all_reduce_max([state.speed["seconds"]], ctx.device)[0]
    out: dict[str, float | None] = {"train_img_per_s": images / seconds if seconds > 0 else None}
    out |= {"infer_img_per_s": None, "infer_latency_ms": None}
    if ctx.env.is_main:
        cfg = ctx.cfg
        bench_model = rope_ext.fold_for_inference(model) if cfg.eval.fold else model
        out |= benchmark_inference(
            bench_model, input_size, cfg.eval.batch_size, ctx.device, ctx.amp_dtype, cfg.eval.bench_seconds
        )
    distributed.barrier()
    return out


def _run_metrics(
    ctx: Context, state: RunState, model: nn.Module, input_size: int, measured: dict[str, Any], started: float
) -> RunMetrics:
    """metrics.json's record (``rope_ext.metrics.RunMetrics``) of a job started at ``started``."""
    cfg, env, amp_dtype, last = ctx.cfg, ctx.env, ctx.amp_dtype, (state.history or [None])[-1]
    return {
        "schema_version": SCHEMA_VERSION,
        "status": "ok",
        "test_acc": measured["test_acc"],
        # the final model's: test_acc is of the same model (no checkpoint is chosen by validation)
        "val_acc": last["val_acc"] if last else None,
        "best_val_acc": state.best_val_acc,
        "best_epoch": state.best_epoch,
        "test_acc_at": measured["test_acc_at"],
        "train_img_per_s": measured["train_img_per_s"],
        "infer_img_per_s": measured["infer_img_per_s"],
        "infer_latency_ms": measured["infer_latency_ms"],
        "peak_mem_mb": hardware.peak_mem_mb(ctx.device),
        "params": sum(p.numel() for p in model.parameters()),
        "epochs_done": state.epoch,
        "relative_error": rope_ext.relative_property_error(model),
        # the whole model's relativity (rope_ext.encoding.relativity)
        "shift_error": measured["shift_error"],
        "test_acc_shifted": measured["test_acc_shifted"],
        "basis_motion": rope_ext.basis_motion(model),
        "pe": resolved_options(model, cfg.pe),
        "model": cfg.model.name,
        "dataset": cfg.dataset.name,
        "input_size": input_size,
        "seed": cfg.seed,
        "run_id": cfg.run_id,
        "world_size": env.world_size,
        "device": str(ctx.device),
        "precision": str(amp_dtype).replace("torch.", "") if amp_dtype else "fp32",
        "batch_size": cfg.train.batch_size,
        "global_batch_size": cfg.train.batch_size * env.world_size,
        "train_loss": last["train_loss"] if last else None,
        "history": state.history,
        "resumed": state.resumed,
        "wall_s": time.time() - started,
        "provenance": provenance(ctx.device),  # what a bit-for-bit rerun needs: versions, processor, code
    }


def _publish(ctx: Context, metrics: RunMetrics) -> None:
    """metrics.json (replacing an earlier failure.json), the W&B summary, the result table."""
    run_dir = ctx.run_dir
    write_record(run_dir / METRICS_NAME, metrics)
    (run_dir / FAILURE_NAME).unlink(missing_ok=True)  # superseded by this result
    skip = ("schema_version", "history", "pe", "test_acc_at")
    summary = {k: v for k, v in metrics.items() if k not in skip}
    summary |= {f"test_acc_at/{k}": v for k, v in metrics["test_acc_at"].items()}
    ctx.tracker.summary(summary)
    print(f"\nResult ({run_dir}):\n{format_table([row_of(run_dir.name, dict(metrics))])}", flush=True)


def _write_failure(
    run_dir: Path, cfg: DictConfig, env: distributed.DistEnv, error: str, state: RunState
) -> None:
    """failure.json with status "failed" beside the run's results (rank 0; best effort: the config or
    the disk itself may be what failed). A finished run's metrics.json is never touched."""
    if not env.is_main:
        return

    def value(path: str) -> Any:
        try:
            found = select(cfg, path)
            return OmegaConf.to_container(found) if OmegaConf.is_config(found) else found
        except Exception:  # noqa: BLE001
            return None

    try:
        pe = {k: select(cfg, f"pe.{k}") for k in ("name", *OPTION_KEYS)}
    except Exception:  # noqa: BLE001
        pe = {}
    record: FailureRecord = {"status": "failed", "error": error, "epochs_done": state.epochs_done}
    record["pe"] = {k: OmegaConf.to_container(v) if OmegaConf.is_config(v) else v for k, v in pe.items()}
    record |= {"model": value("model.name"), "dataset": value("dataset.name")}
    record |= {"input_size": value("dataset.input_size"), "seed": select(cfg, "seed")}
    record["provenance"] = provenance()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        record["failed_at"] = time.strftime("%Y-%m-%d %H:%M:%S")
        write_record(run_dir / FAILURE_NAME, record)
    except OSError as err:
        log.warning("could not write %s: %s", FAILURE_NAME, err)


# ---------------------------------------------------------------------------------------------------
# small utilities


def faults_from_env() -> Faults:
    """FAULT_ENV parsed (see its comment): {(epoch, step or None for "end"): {kind, ...}}."""
    text = os.environ.get(FAULT_ENV, "").strip()
    faults: Faults = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        kind, _, where = item.partition("@")
        epoch, _, step = where.partition(":")
        if kind not in FAULT_KINDS or not epoch.isdigit() or not (step.isdigit() or step == "end"):
            raise ConfigError(
                f"{FAULT_ENV}={text!r}: {item!r} is not KIND@EPOCH:STEP (STEP a number or 'end', KIND one "
                f"of {', '.join(FAULT_KINDS)}); unset it outside tests"
            )
        faults.setdefault((int(epoch), None if step == "end" else int(step)), set()).add(kind)
    return faults


def _inject(ctx: Context, faults: set[str]) -> None:
    """Send the signals of ``faults`` to this process, as an operator or a scheduler would."""
    for kind in sorted(k for k in faults if k.startswith("SIG")):
        for _ in range(2 if kind == "SIGINT2" else 1):
            os.kill(os.getpid(), getattr(signal, "SIGINT" if kind == "SIGINT2" else kind))


def _position(epoch: int, step_in_epoch: int) -> str:
    return f"{epoch} epoch(s) done" + (f" + {step_in_epoch} step(s)" if step_in_epoch else "")


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def speed_warmup(configured: int, steps: int) -> int:
    """Steps left out of ``train_img_per_s`` at the start of a run whose first epoch here has ``steps``.

    At most half of them, so that a short run (an epoch of fewer steps than configured) is still
    measured: a speed that includes start-up costs beats no speed at all in a sweep table.
    """
    return max(0, min(configured, steps // 2))


def _describe_os_error(err: OSError, run_dir: Path) -> str:
    if isinstance(err, safe_io.WriteError):
        return str(err)
    return (
        f"could not access {err.filename or run_dir} (errno {err.errno} "
        f"{errno.errorcode.get(err.errno or 0, '?')}: {err.strerror})"
    )


def _wandb_names(cfg: DictConfig, run_dir: Path) -> tuple[str, str]:
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        return run_dir.name, cfg.wandb.group or Path(str(hydra_cfg.sweep.dir)).name
    return str(cfg.run_id), cfg.wandb.group or str(cfg.run_id)


def _bar(ctx: Context, **kwargs: Any) -> tqdm:
    """A tqdm bar, or (no bars: not rank 0, or not a terminal) a disabled one whose calls do nothing."""
    return tqdm(disable=not ctx.bars, dynamic_ncols=True, **kwargs)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
