"""The training job behind ``train.py``: read it top to bottom.

``run_job(cfg)`` checks the config, builds data and model, resumes from the run directory's checkpoint,
trains with warm-up + cosine LR, evaluates every epoch, checkpoints atomically at every epoch end (and
on SIGTERM/SIGUSR), then evaluates at several input sizes, measures inference speed and writes
``metrics.json``. Bad input stops it before any work with one paragraph naming key, value and what is
allowed. A failing job writes ``failure.json`` beside its results (``metrics.json`` is only written by a
finished run and never replaced by a failure); in a multirun it returns, so the sweep goes on; a single
run exits non-zero. The run directory is locked (``rope_ext.safety.RunLock``) while a job uses it.
"""

from __future__ import annotations

import errno
import io
import json
import logging
import math
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from torch import nn

import rope_ext
from rope_ext import checkpoint, distributed, safety
from rope_ext.checkpoint import CheckpointError, CheckpointWriteError
from rope_ext.config import ConfigError, eval_sizes, pe_options, select, timm_kwargs, validate
from rope_ext.data import build_datasets
from rope_ext.loader import Batches, BatchTransform
from rope_ext.preemption import Interrupted, SignalGuard
from rope_ext.relativity import shift_metrics
from rope_ext.rotary import OPTION_KEYS
from rope_ext.strict import check_keys
from rope_ext.summary import format_table, row_of
from rope_ext.tracking import Tracker
from rope_ext.vit import CheckpointFileError

log = logging.getLogger(__name__)

EXIT_CONFIG, EXIT_NONFINITE, EXIT_IO = 2, 3, 4
FAILURE_NAME = "failure.json"


# The loop's progress, saved with every checkpoint and restored on resume.
PROGRESS_KEYS = ("epoch", "step_in_epoch", "global_step", "best_val_acc", "best_epoch", "history", "speed")
PROGRESS_KEYS += ("partial_loss",)


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


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
    progress: dict[str, Any] = {}
    try:
        safety.check_run_dir(run_dir, cfg.get("run_id"), multirun=multirun)
        metrics = train(cfg, run_dir, env, tracker, progress)
        return metrics["val_acc"] if metrics.get("val_acc") is not None else metrics["test_acc"]
    except (ConfigError, CheckpointError) as err:
        kind = "Invalid configuration" if isinstance(err, ConfigError) else "Refusing the checkpoint"
        log.error("%s: %s Nothing was trained.", kind, err)
        if not isinstance(err, safety.RunDirBusy):  # the directory is another live process's
            _write_failure(run_dir, cfg, env, f"{kind}: {err}", progress)
        if multirun:
            return None
        raise SystemExit(EXIT_CONFIG) from None
    except OSError as err:  # disk full, read-only output: one paragraph, no traceback
        what = (
            str(err)
            if isinstance(err, CheckpointWriteError)
            else (
                f"could not access {err.filename or run_dir} (errno {err.errno} "
                f"{errno.errorcode.get(err.errno or 0, '?')}: {err.strerror})"
            )
        )
        log.error(
            "I/O error: %s. Free space or fix the permissions (output: %s), then rerun the same command: "
            "it resumes from the last checkpoint.",
            what,
            run_dir,
        )
        _write_failure(run_dir, cfg, env, f"{type(err).__name__}: {err}", progress)
        tracker.finish(exit_code=EXIT_IO)
        if multirun:
            return None
        raise SystemExit(EXIT_IO) from None
    except NonFiniteLoss as err:
        log.error("%s", err)
        _write_failure(run_dir, cfg, env, str(err), progress)
        tracker.finish(exit_code=EXIT_NONFINITE)
        if multirun:
            return None
        raise SystemExit(EXIT_NONFINITE) from None
    except Interrupted as err:
        log.warning("%s", err)
        _write_failure(run_dir, cfg, env, str(err), progress)
        tracker.finish(exit_code=128 + err.signum)
        distributed.shutdown()
        progress["guard"].hand_over(err.signum)  # submitit: requeue and exit
        raise SystemExit(128 + err.signum) from None
    except Exception as err:
        log.exception("job failed")
        _write_failure(run_dir, cfg, env, f"{type(err).__name__}: {err}", progress)
        if multirun:
            return None
        raise
    finally:
        tracker.finish()
        distributed.shutdown()
        if "lock" in progress:
            progress["lock"].release()


def train(
    cfg: DictConfig, run_dir: Path, env: distributed.DistEnv, tracker: Tracker, progress: dict[str, Any]
) -> dict[str, Any]:
    started = time.time()
    # 1. check everything that can be checked before doing any work
    validate(cfg)
    safety.validate_values(cfg, multirun=HydraConfig.get().mode == RunMode.MULTIRUN)
    check_keys(cfg, HydraConfig.get().runtime.choices)  # typos are refused, not ignored
    device = _pick_device(cfg.hardware, env)
    amp_dtype = _amp_dtype(cfg.hardware.precision, device)
    if cfg.hardware.devices * cfg.hardware.nodes > 1 and not env.enabled:
        log.warning(
            "hardware.devices=%d, hardware.nodes=%d but this process runs alone: start it with "
            "torchrun --nproc_per_node=%d or a submitit launcher (launcher=submitit_local|slurm) for DDP",
            cfg.hardware.devices,
            cfg.hardware.nodes,
            cfg.hardware.devices,
        )
    if cfg.hardware.threads:
        torch.set_num_threads(int(cfg.hardware.threads))

    # 2. data and model (still nothing written)
    splits = build_datasets(cfg.dataset)
    _warn_small_subset(cfg, splits)
    _seed(cfg.seed)  # the same initial weights on every rank
    model = _build_model(cfg, splits.num_classes)
    patch = int(model.patch_embed.patch_size[0])
    input_size = int(cfg.dataset.input_size)
    sizes = eval_sizes(input_size, patch, cfg.eval.input_sizes)
    for key, size in [("dataset.input_size", input_size)] + [("eval.input_sizes", s) for s in sizes]:
        if size % patch:
            raise ConfigError.bad_value(key, size, f"multiples of the patch size {patch}")
    distributed.init(env, device)
    _seed(cfg.seed + 1 + env.rank)  # augmentation differs across ranks
    model.to(device)

    train_tf = BatchTransform(
        input_size,
        cfg.dataset.mean,
        cfg.dataset.std,
        train=True,
        crop_padding=select(cfg.dataset, "augment.crop_padding", 0),
        hflip=select(cfg.dataset, "augment.hflip", False),
    )
    in_memory = bool(select(cfg.dataset, "in_memory", True))
    workers = _num_workers(select(cfg.dataset, "num_workers", 0), device, env)
    loader_args = dict(device=device, rank=env.rank, world_size=env.world_size, in_memory=in_memory)
    train_batches = Batches(
        splits.train,
        batch_size=cfg.train.batch_size,
        transform=train_tf,
        train=True,
        seed=cfg.seed,
        num_workers=workers,
        **loader_args,
    )
    test_batches = Batches(
        splits.test,
        batch_size=cfg.eval.batch_size,
        transform=_eval_transform(cfg, input_size),
        train=False,
        num_workers=workers,
        **loader_args,
    )
    # validation: what model and learning-rate selection read (every epoch); the test split is evaluated
    # once, at the end, and selects nothing
    val_batches = (
        Batches(
            splits.val,
            batch_size=cfg.eval.batch_size,
            transform=_eval_transform(cfg, input_size),
            train=False,
            num_workers=workers,
            **loader_args,
        )
        if splits.val is not None
        else None
    )
    steps_per_epoch = train_batches.num_batches
    if steps_per_epoch == 0:
        raise ConfigError(f"the train set of dataset={cfg.dataset.name} is empty on rank {env.rank}")

    optimizer = _build_optimizer(model, cfg)
    scheduler = _build_scheduler(optimizer, cfg, steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.train.label_smoothing)

    # 3. lock the run directory (rank 0; all ranks stop when it is taken), then resume from its
    # checkpoint (refused when corrupt or trained with other settings)
    lock = progress["lock"] = safety.RunLock(run_dir)
    busy = None
    if env.is_main:
        try:
            lock.acquire()
        except safety.RunDirBusy as err:
            busy = err
    if distributed.all_reduce_max([float(busy is not None)], device)[0]:
        raise busy or safety.RunDirBusy(f"the run directory {run_dir} is in use by another process")
    fingerprint = _fingerprint(cfg, splits.num_classes)
    state: dict[str, Any] = {"epoch": 0, "step_in_epoch": 0, "global_step": 0}
    state.update(best_val_acc=None, best_epoch=None)
    state.update(history=[], speed={"images": 0.0, "seconds": 0.0}, partial_loss=[0.0, 0.0])
    ckpt = checkpoint.load(run_dir, fingerprint) if cfg.train.resume else None
    if ckpt is None and not cfg.train.resume and (run_dir / checkpoint.CKPT_NAME).exists():
        log.warning(
            "train.resume=false: ignoring %s, it is overwritten at the next save", checkpoint.CKPT_NAME
        )
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        for key in PROGRESS_KEYS:
            state[key] = ckpt[key]
        if scheduler.base_lrs[0] != cfg.train.lr:
            log.warning(
                "train.lr is %g, the checkpoint's %g: the schedule goes on with the new peak",
                cfg.train.lr,
                scheduler.base_lrs[0],
            )
            scheduler.base_lrs = [cfg.train.lr] * len(scheduler.base_lrs)
            for group in optimizer.param_groups:
                group["initial_lr"] = cfg.train.lr
                group["lr"] = cfg.train.lr * scheduler.lr_lambdas[0](scheduler.last_epoch)
        rngs = ckpt["rng"]
        if len(rngs) == env.world_size:
            checkpoint.set_rng_state(rngs[env.rank])
        else:
            log.warning(
                "checkpoint from %d processes, now %d: RNG streams reseeded", len(rngs), env.world_size
            )
        log.info(
            "Resuming from %s: %d of %d epochs done%s, best val_acc %s",
            run_dir / checkpoint.CKPT_NAME,
            state["epoch"],
            cfg.train.epochs,
            f" + {state['step_in_epoch']} steps" if state["step_in_epoch"] else "",
            _fmt(state["best_val_acc"]),
        )
        del ckpt
    progress.update(epochs_done=state["epoch"], resumed=state["epoch"] > 0 or state["step_in_epoch"] > 0)

    # 4. engines: DDP when there are several processes, torch.compile when asked
    raw_model = model
    if env.enabled:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if cfg.hardware.compile:
        model = torch.compile(model)

    # 5. W&B (rank 0), one run per job
    if env.is_main and cfg.wandb.mode != "disabled":
        name, group = _wandb_names(cfg, run_dir)
        tracker.start(
            mode=cfg.wandb.mode,
            run_dir=run_dir,
            project=cfg.wandb.project,
            entity=cfg.wandb.entity,
            group=group,
            name=name,
            config=OmegaConf.to_container(cfg, resolve=True),
            tags=list(cfg.wandb.tags),
            init_timeout=cfg.wandb.init_timeout,
            resuming=progress["resumed"],
        )
    log.info(
        "%s | pe=%s | %s %s | %d params | %s x %d process(es), batch %d each | %d epochs of %d steps -> %s",
        cfg.model.name,
        cfg.pe.name,
        cfg.dataset.name,
        input_size,
        sum(p.numel() for p in raw_model.parameters()),
        device,
        env.world_size,
        cfg.train.batch_size,
        cfg.train.epochs,
        steps_per_epoch,
        run_dir,
    )

    # 6. the loop
    guard = SignalGuard()
    progress["guard"] = guard
    bars = _Bars(enabled=env.is_main and sys.stderr.isatty())
    first_epoch_here = True
    with guard, bars:
        bars.epochs(total=cfg.train.epochs, initial=state["epoch"])
        for epoch in range(state["epoch"], cfg.train.epochs):
            skip = state["step_in_epoch"]
            train_batches.set_epoch(epoch, skip=skip)
            model.train()
            losses: list[torch.Tensor] = []  # this epoch's losses, still on the device
            pending: list[tuple[int, torch.Tensor, float]] = []  # (step, loss, lr) not yet checked/logged
            images = 0
            timer_start = None if first_epoch_here else _now(device)
            warmup = (
                speed_warmup(cfg.train.speed_warmup_steps, steps_per_epoch - skip) if first_epoch_here else 0
            )
            bars.steps(total=steps_per_epoch, initial=skip, desc=f"epoch {epoch + 1}")
            step = skip
            for i, (x, y) in enumerate(train_batches):
                if i == warmup and timer_start is None:
                    timer_start = _now(device)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    loss = criterion(model(x), y)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if cfg.train.grad_clip:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                lr = scheduler.get_last_lr()[0]
                scheduler.step()
                step += 1
                state["global_step"] += 1
                loss = loss.detach()
                losses.append(loss)
                pending.append((state["global_step"], loss, lr))
                if timer_start is not None:
                    images += x.shape[0]
                bars.advance()
                last = step == steps_per_epoch
                # the sync point: every log_every steps (ranks agree on it); alone, right after a signal
                if len(pending) >= cfg.train.log_every or last or (guard.requested and not env.enabled):
                    stop = _check(pending, guard, device, epoch, step, steps_per_epoch, state, tracker, bars)
                    pending = []
                    if stop is not None:
                        state["step_in_epoch"] = step
                        state["partial_loss"] = _loss_sums(losses, device, state["partial_loss"], env)
                        _save(run_dir, state, raw_model, optimizer, scheduler, scaler, fingerprint, cfg, env)
                        raise Interrupted(stop, f"at epoch {epoch + 1} step {step}/{steps_per_epoch}")
            if timer_start is not None:
                seconds = _now(device) - timer_start
                state["speed"]["images"] += images
                state["speed"]["seconds"] += seconds
            first_epoch_here = False

            # end of epoch: evaluate, remember, checkpoint
            val_acc = evaluate(raw_model, val_batches, device, amp_dtype) if val_batches else None
            total, count = _loss_sums(losses, device, state["partial_loss"], env)
            train_loss = total / count if count else float("nan")
            state["partial_loss"] = [0.0, 0.0]
            if val_acc is not None and (state["best_val_acc"] is None or val_acc > state["best_val_acc"]):
                state["best_val_acc"], state["best_epoch"] = val_acc, epoch + 1
            state["epoch"], state["step_in_epoch"] = epoch + 1, 0
            state["history"].append(
                {
                    "epoch": epoch + 1,
                    "train_loss": train_loss,
                    "val_acc": val_acc,
                    "lr": scheduler.get_last_lr()[0],
                }
            )
            _save(run_dir, state, raw_model, optimizer, scheduler, scaler, fingerprint, cfg, env)
            progress["epochs_done"] = state["epoch"]
            tracker.log(
                {"trainer/epoch": epoch + 1, "epoch/train_loss": train_loss, "epoch/val_acc": val_acc}
                | {"epoch/best_val_acc": state["best_val_acc"]}
            )
            bars.epoch_done()
            log.info(
                "epoch %d/%d | train_loss %.4f | val_acc %s (best %s) | checkpoint saved",
                epoch + 1,
                cfg.train.epochs,
                train_loss,
                _fmt(val_acc),
                _fmt(state["best_val_acc"]),
            )

        # a signal after the last step's sync point: the final checkpoint is saved, stop like any other
        # interruption (exit 128+signal); the rerun resumes with every epoch done and only evaluates
        late = int(distributed.all_reduce_max([float(guard.signum or 0)], device)[0])
        if late:
            raise Interrupted(late, "after the last epoch (before the final evaluation)")

    # 7. final evaluation: resolution extrapolation, inference speed, the relative property
    test_acc_at = {}
    for size in sizes:
        redrawn = splits.test_at(size) if size != input_size else None
        batches = test_batches
        if redrawn is not None:
            batches = Batches(
                redrawn,
                batch_size=cfg.eval.batch_size,
                transform=_eval_transform(cfg, size),
                train=False,
                num_workers=workers,
                **loader_args,
            )
        else:
            batches.transform = _eval_transform(cfg, size)
        test_acc_at[str(size)] = evaluate(raw_model, batches, device, amp_dtype)
    test_batches.transform = _eval_transform(cfg, input_size)
    test_acc = (
        test_acc_at[str(input_size)]
        if str(input_size) in test_acc_at
        else evaluate(raw_model, test_batches, device, amp_dtype)
    )
    shift = shift_metrics(
        raw_model, test_batches, lambda: evaluate(raw_model, test_batches, device, amp_dtype), test_acc
    )
    speed = distributed.all_reduce_sum([state["speed"]["images"]], device)[0]
    seconds = distributed.all_reduce_max([state["speed"]["seconds"]], device)[0]
    infer = {"infer_img_per_s": None, "infer_latency_ms": None}
    if env.is_main:
        bench_model = rope_ext.fold_for_inference(raw_model) if cfg.eval.fold else raw_model
        infer = benchmark_inference(
            bench_model, input_size, cfg.eval.batch_size, device, amp_dtype, cfg.eval.bench_seconds
        )
    distributed.barrier()
    metrics: dict[str, Any] = {
        "status": "ok",
        "test_acc": test_acc,
        # the final model's: test_acc is of the same model (no checkpoint is chosen by validation)
        "val_acc": state["history"][-1]["val_acc"] if state["history"] else None,
        "best_val_acc": state["best_val_acc"],
        "best_epoch": state["best_epoch"],
        "test_acc_at": test_acc_at,
        "train_img_per_s": speed / seconds if seconds > 0 else None,
        **infer,
        "peak_mem_mb": _peak_mem_mb(device),
        "params": sum(p.numel() for p in raw_model.parameters()),
        "epochs_done": state["epoch"],
        "relative_error": rope_ext.relative_property_error(raw_model),
        **shift,  # shift_error, test_acc_shifted: the whole model's relativity (rope_ext.relativity)
        "pe": resolved_pe(cfg.pe, raw_model),
        "model": cfg.model.name,
        "dataset": cfg.dataset.name,
        "input_size": input_size,
        "seed": cfg.seed,
        "run_id": cfg.run_id,
        "world_size": env.world_size,
        "device": str(device),
        "precision": str(amp_dtype).replace("torch.", "") if amp_dtype else "fp32",
        "batch_size": cfg.train.batch_size,
        "global_batch_size": cfg.train.batch_size * env.world_size,
        "train_loss": state["history"][-1]["train_loss"] if state["history"] else None,
        "history": state["history"],
        "resumed": progress["resumed"],
        "wall_s": time.time() - started,
    }
    if env.is_main:
        _write_json(run_dir / "metrics.json", metrics)
        (run_dir / FAILURE_NAME).unlink(missing_ok=True)  # superseded by this result
        summary = {k: v for k, v in metrics.items() if k not in ("history", "pe", "test_acc_at")}
        summary |= {f"test_acc_at/{k}": v for k, v in test_acc_at.items()}
        tracker.summary(summary)
        print(f"\nResult ({run_dir}):\n{format_table([row_of(run_dir.name, metrics)])}", flush=True)
    return metrics


# ---------------------------------------------------------------------------------------------------
# pieces of the loop


@torch.no_grad()
def evaluate(
    model: nn.Module, batches: Batches, device: torch.device, amp_dtype: torch.dtype | None
) -> float:
    """Top-1 accuracy (%) over the whole split, summed over ranks."""
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=device)
    total = 0
    for x, y in batches:
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(x)
        correct += (logits.argmax(-1) == y).sum()
        total += y.shape[0]
    model.train(was_training)
    correct_all, total_all = distributed.all_reduce_sum([float(correct.item()), float(total)], device)
    return 100.0 * correct_all / max(total_all, 1.0)


@torch.no_grad()
def benchmark_inference(
    model: nn.Module,
    input_size: int,
    batch_size: int,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    seconds: float,
) -> dict[str, float]:
    """Throughput at ``batch_size`` and median batch-1 latency, each measured for about ``seconds``."""
    model.eval()

    def timed(x: torch.Tensor, min_iters: int) -> list[float]:
        for _ in range(2):  # warm-up
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                model(x)
        times: list[float] = []
        begin = _now(device)
        while len(times) < min_iters or sum(times) < seconds:
            t0 = _now(device)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                model(x)
            times.append(_now(device) - t0)
            if _now(device) - begin > 10 * max(seconds, 0.1) and len(times) >= min_iters:
                break
        return times

    big = timed(torch.randn(batch_size, 3, input_size, input_size, device=device), min_iters=3)
    one = sorted(timed(torch.randn(1, 3, input_size, input_size, device=device), min_iters=5))
    return {
        "infer_img_per_s": batch_size * len(big) / sum(big),
        "infer_latency_ms": 1000.0 * one[len(one) // 2],
    }


def _check(
    pending: list[tuple[int, torch.Tensor, float]],
    guard: SignalGuard,
    device: torch.device,
    epoch: int,
    step: int,
    steps_per_epoch: int,
    state: dict[str, Any],
    tracker: Tracker,
    bars: _Bars,
) -> int | None:
    """The loop's sync point: NaN/inf check and stop requests (agreed across ranks), logging.

    Returns the signal number when the job must checkpoint and stop, raises NonFiniteLoss.
    """
    values = torch.stack([loss for _, loss, _ in pending]).float().cpu().tolist()
    bad = not all(math.isfinite(v) for v in values)
    flags = distributed.all_reduce_max([float(bad), float(guard.signum or 0)], device)
    if flags[0]:
        done = state["epoch"]
        raise NonFiniteLoss(
            f"loss is not finite ({[v for v in values if not math.isfinite(v)][:1] or 'on another rank'}) "
            f"at epoch {epoch + 1}, step {step}/{steps_per_epoch}: stopped. The last good checkpoint "
            f"({done} epoch(s) done) is kept. Lower train.lr, enable train.grad_clip, or use fp32."
        )
    for (global_step, _, lr), value in zip(pending, values):
        tracker.log(
            {"trainer/step": global_step, "train/loss": value, "train/lr": lr, "trainer/epoch": epoch}
        )
    bars.postfix(loss=values[-1])
    if not bars.enabled:
        log.info(
            "epoch %d step %d/%d | loss %.4f | lr %.2e",
            epoch + 1,
            step,
            steps_per_epoch,
            values[-1],
            pending[-1][2],
        )
    return int(flags[1]) or None


def _save(
    run_dir: Path,
    state: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    fingerprint: dict[str, Any],
    cfg: DictConfig,
    env: distributed.DistEnv,
) -> None:
    """Rank 0 writes the checkpoint (every rank contributes its RNG state)."""
    # gathered as torch.save bytes: all_gather_object cannot pickle the RNG tensors themselves
    blob = io.BytesIO()
    torch.save(checkpoint.rng_state(), blob)
    rngs = [
        torch.load(io.BytesIO(b), weights_only=True) for b in distributed.all_gather_object(blob.getvalue())
    ]
    if not env.is_main:
        return
    payload = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": rngs,
        **{k: state[k] for k in PROGRESS_KEYS},
    }
    record = {
        "epoch": state["epoch"],
        "step_in_epoch": state["step_in_epoch"],
        "global_step": state["global_step"],
        "best_val_acc": state["best_val_acc"],
        "fingerprint": fingerprint,
        "fingerprint_format": 2,
        "saved_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    checkpoint.save(run_dir, payload, record)


def _loss_sums(
    losses: list[torch.Tensor], device: torch.device, carried: list[float], env: distributed.DistEnv
) -> list[float]:
    """[sum, count] of this epoch's losses over all ranks, plus what a mid-epoch checkpoint carried."""
    total = float(torch.stack(losses).float().sum().item()) if losses else 0.0
    s, n = distributed.all_reduce_sum([total, float(len(losses))], device)
    return [s + carried[0], n + carried[1]]


# ---------------------------------------------------------------------------------------------------
# construction


def _pick_device(hardware: DictConfig, env: distributed.DistEnv) -> torch.device:
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


def _amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError.bad_value("hardware.precision", precision, "fp32 or bf16 on the CPU")
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[precision]


def _num_workers(configured: Any, device: torch.device, env: distributed.DistEnv) -> int:
    if configured == "auto":
        if device.type != "cuda":
            return 0
        per_process = (
            len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        )
        return max(0, min(8, per_process // max(1, torch.cuda.device_count()) - 1))
    return int(configured)


def _seed(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _build_model(cfg: DictConfig, num_classes: int) -> nn.Module:
    """``rope_ext.create_vit``; its ValueErrors become ConfigErrors naming the Hydra keys."""
    kwargs = timm_kwargs(cfg.model)
    checkpoint_path = cfg.model.checkpoint
    if checkpoint_path is not None and not Path(str(checkpoint_path)).is_file():
        raise ConfigError.bad_value(
            "model.checkpoint", checkpoint_path, "null or an existing .pth/.safetensors file"
        )
    try:
        return rope_ext.create_vit(
            cfg.model.arch,
            pe=cfg.pe.name,
            num_classes=num_classes,
            img_size=int(cfg.dataset.input_size),
            pe_options=pe_options(cfg.pe) if cfg.pe.name != "none" else None,
            pretrained=bool(cfg.model.pretrained),
            checkpoint=checkpoint_path,
            **kwargs,
        )
    except CheckpointFileError as err:
        raise ConfigError(f"model.checkpoint={str(checkpoint_path)!r} is refused: {err}") from None
    except RuntimeError as err:
        if cfg.model.pretrained:
            raise ConfigError(
                f"model.pretrained=true for model={cfg.model.name} ({cfg.model.arch}) but the weights cannot be "
                f"fetched: {err}. Allowed offline: model.pretrained=true with model.checkpoint=/path/to/weights "
                "(a local .pth/.safetensors), or model.pretrained=false."
            ) from None
        raise
    except (ValueError, TypeError) as err:
        raise ConfigError(
            f"model={cfg.model.name} with pe={cfg.pe.name} rejected these settings: {err} "
            f"(pe.* keys: {pe_options(cfg.pe)}; model keys: {kwargs})."
        ) from None


def _build_optimizer(model: nn.Module, cfg: DictConfig) -> torch.optim.Optimizer:
    """timm's optimizer factory. No weight decay on biases, norms, the model's no_weight_decay()
    and the rotary parameters: frequencies and bases are position parameters like timm's pos_embed
    (Heo et al. exclude their freqs too), and decay would pull every basis towards Q = I."""
    from timm.optim import create_optimizer_v2, param_groups_weight_decay

    opt = cfg.optimizer
    kwargs: dict[str, Any] = {}
    name = opt.name
    if name in ("adam", "adamw"):
        kwargs.update(betas=tuple(opt.betas), eps=opt.eps)
    elif name == "sgd":
        kwargs["momentum"] = opt.momentum
        name = "sgd" if opt.nesterov else "momentum"
    no_decay = {*model.no_weight_decay(), "*.rope.*"}
    groups = param_groups_weight_decay(model, opt.weight_decay, no_weight_decay_list=no_decay)
    return create_optimizer_v2(groups, opt=name, lr=cfg.train.lr, weight_decay=opt.weight_decay, **kwargs)


def _build_scheduler(optimizer: torch.optim.Optimizer, cfg: DictConfig, steps_per_epoch: int) -> Any:
    """Per-step linear warm-up from ~0 to train.lr, then cosine decay to train.min_lr."""
    total = max(1, cfg.train.epochs * steps_per_epoch)
    warmup = min(total, int(round(cfg.train.warmup_epochs * steps_per_epoch)))
    floor = min(1.0, cfg.train.min_lr / cfg.train.lr)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _eval_transform(cfg: DictConfig, size: int) -> BatchTransform:
    return BatchTransform(size, cfg.dataset.mean, cfg.dataset.std, train=False)


def _fingerprint(cfg: DictConfig, num_classes: int) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: every key that changes the trajectory."""
    return checkpoint.fingerprint_of(OmegaConf.to_container(cfg, resolve=True), num_classes)


def _warn_small_subset(cfg: DictConfig, splits: Any) -> None:
    subset = select(cfg.dataset, "subset")
    if subset is not None and (len(splits.train) < subset or len(splits.test) < subset):
        log.warning(
            "dataset.subset=%d is larger than dataset=%s (%d train, %d test images): all of them are used",
            subset,
            cfg.dataset.name,
            len(splits.train),
            len(splits.test),
        )


def resolved_pe(pe: DictConfig, model: nn.Module) -> dict[str, Any]:
    """The ``pe`` settings as the model uses them (package defaults filled in)."""
    out = {k: pe.get(k) for k in ("name", *OPTION_KEYS)}
    if isinstance(out.get("augment"), DictConfig):
        out["augment"] = OmegaConf.to_container(out["augment"])
    rope = next(
        (m.rope for m in model.modules() if hasattr(m, "rope") and isinstance(m.rope, nn.Module)), None
    )
    if rope is not None:
        for key in ("block", "impl", "mixed", "dims", "theta", "learnable", "init", "coords", "layout_of"):
            value = getattr(rope, key, None)
            if value is not None:
                out[key] = value
        if out["name"] == "lie_block":
            out["learnable"] = True
    return out


def _wandb_names(cfg: DictConfig, run_dir: Path) -> tuple[str, str]:
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        return run_dir.name, cfg.wandb.group or Path(str(hydra_cfg.sweep.dir)).name
    return str(cfg.run_id), cfg.wandb.group or str(cfg.run_id)


# ---------------------------------------------------------------------------------------------------
# small utilities


def speed_warmup(configured: int, steps: int) -> int:
    """Steps left out of ``train_img_per_s`` at the start of a run whose first epoch here has ``steps``.

    At most half of them, so that a short run (an epoch of fewer steps than configured) is still
    measured: a speed that includes start-up costs beats no speed at all in a sweep table.
    """
    return max(0, min(configured, steps // 2))


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _peak_mem_mb(device: torch.device) -> float:
    """GPU: peak memory allocated by torch; CPU: the process's peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(data, indent=1, default=str))
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def _write_failure(
    run_dir: Path, cfg: DictConfig, env: distributed.DistEnv, error: str, progress: dict[str, Any]
) -> None:
    """failure.json with status "failed" beside the run's results (rank 0; best effort: the config or
    the disk itself may be what failed). A finished run's metrics.json is never touched."""
    if not env.is_main:
        return
    try:
        pe = {
            k: select(cfg, f"pe.{k}")
            for k in ("name", "block", "impl", "mixed", "dims", "theta", "learnable", "init")
        }
    except Exception:  # noqa: BLE001
        pe = {}
    data = {"status": "failed", "error": error, "pe": pe, "epochs_done": progress.get("epochs_done", 0)}
    for key, path in (
        ("model", "model.name"),
        ("dataset", "dataset.name"),
        ("input_size", "dataset.input_size"),
    ):
        try:
            data[key] = select(cfg, path)
        except Exception:  # noqa: BLE001
            data[key] = None
    data["seed"] = select(cfg, "seed")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        data["failed_at"] = time.strftime("%Y-%m-%d %H:%M:%S")
        _write_json(run_dir / FAILURE_NAME, data)
    except OSError as err:
        log.warning("could not write %s: %s", FAILURE_NAME, err)


class _Bars:
    """tqdm bars for epochs and steps when stderr is a terminal; nothing otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._epochs: Any = None
        self._steps: Any = None
        self._redirect: Any = None

    def __enter__(self) -> _Bars:
        if self.enabled:
            from tqdm.contrib.logging import logging_redirect_tqdm

            self._redirect = logging_redirect_tqdm()
            self._redirect.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        for bar in (self._steps, self._epochs):
            if bar is not None:
                bar.close()
        if self._redirect is not None:
            self._redirect.__exit__(*exc)

    def epochs(self, total: int, initial: int) -> None:
        if self.enabled:
            from tqdm import tqdm

            self._epochs = tqdm(total=total, initial=initial, desc="epochs", position=0, dynamic_ncols=True)

    def steps(self, total: int, initial: int, desc: str) -> None:
        if self.enabled:
            from tqdm import tqdm

            if self._steps is not None:
                self._steps.close()
            self._steps = tqdm(
                total=total, initial=initial, desc=desc, position=1, leave=False, dynamic_ncols=True
            )

    def advance(self) -> None:
        if self._steps is not None:
            self._steps.update(1)

    def postfix(self, **values: float) -> None:
        if self._steps is not None:
            self._steps.set_postfix({k: f"{v:.4f}" for k, v in values.items()})

    def epoch_done(self) -> None:
        if self._epochs is not None:
            self._epochs.update(1)
