"""What a run tells the world: W&B (rank 0, one run per job), the job's description line, speeds,
``metrics.json`` with its result table, and ``failure.json`` (``rope_ext.tracking.records``)."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

from torch import nn

import rope_ext
from rope_ext.encoding.spec import OPTION_KEYS, RopeSpec
from rope_ext.encoding.vit import resolved_options
from rope_ext.run import distributed, hardware
from rope_ext.run.build import Data
from rope_ext.run.settings import record_of
from rope_ext.run.speed import RATIO_KEYS, Shape, flat_ratios, measure_speed, plain_twin
from rope_ext.run.state import Context, RunState
from rope_ext.schema import Config
from rope_ext.summary import format_table, row_of, speed_note
from rope_ext.tracking.provenance import iso_utc, provenance
from rope_ext.tracking.records import (
    FAILURE_NAME,
    METRICS_NAME,
    SCHEMA_VERSION,
    FailureRecord,
    FailureStatus,
    RunMetrics,
    write_record,
)

log = logging.getLogger(__name__)


def start_tracking(ctx: Context, state: RunState, data: Data, model: nn.Module) -> None:
    """W&B (rank 0, one run per job) and the job's one-line description."""
    config, run_dir = ctx.config, ctx.run_dir
    wandb = config.wandb
    if ctx.env.is_main and wandb.mode != "disabled":
        ctx.tracker.start(
            mode=wandb.mode,
            run_dir=run_dir,
            project=wandb.project,
            entity=wandb.entity,
            group=wandb.group or (ctx.settings.sweep if ctx.settings.multirun else str(config.run_id)),
            name=run_dir.name if ctx.settings.multirun else str(config.run_id),
            config=record_of(config),
            tags=list(wandb.tags),
            init_timeout=wandb.init_timeout,
            resuming=state.resumed,
        )
    log.info(
        "%s | pe=%s | %s %s | %d params | %s x %d process(es), batch %d each | %d epochs of %d steps -> %s",
        config.model.name,
        config.pe.name,
        config.dataset.name,
        data.input_size,
        sum(p.numel() for p in model.parameters()),
        ctx.device,
        ctx.env.world_size,
        config.train.batch_size,
        config.train.epochs,
        ctx.steps_per_epoch,
        run_dir,
    )


def speeds(ctx: Context, state: RunState, model: nn.Module, input_size: int) -> dict[str, Any]:
    """Training images/s (all ranks together), and (rank 0 measures them) inference speed and the
    ratios to a plain ViT of the same shape (``rope_ext.run.speed``: ``speed_vs_none``, its medians as
    ``*_vs_none`` and ``speed_unreliable``); None where not measured."""
    images = distributed.all_reduce_sum([state.speed["images"]], ctx.device)[0]
    seconds = distributed.all_reduce_max([state.speed["seconds"]], ctx.device)[0]
    out: dict[str, Any] = {"train_img_per_s": images / seconds if seconds > 0 else None}
    out |= {"infer_img_per_s": None, "infer_latency_ms": None, "speed_vs_none": None}
    if ctx.env.is_main:
        config, evaluation = ctx.config, ctx.config.eval
        bench_model = rope_ext.fold_for_inference(model) if evaluation.fold else model
        num_classes = int(model.num_classes)
        plain = plain_twin(config.model, num_classes, input_size, ctx.device).to(ctx.device)
        shape = Shape(input_size, config.train.batch_size, evaluation.batch_size, num_classes)
        absolute, record = measure_speed(
            model, bench_model, plain, shape, ctx.device, ctx.amp_dtype, evaluation.bench_seconds
        )
        out |= absolute | {"speed_vs_none": record}
    distributed.barrier()
    return out | flat_ratios(out["speed_vs_none"])


def run_metrics(
    ctx: Context, state: RunState, model: nn.Module, input_size: int, measured: dict[str, Any], started: float
) -> RunMetrics:
    """metrics.json's record (``rope_ext.tracking.records.RunMetrics``) of a job started at ``started``."""
    config, env, amp_dtype, last = ctx.config, ctx.env, ctx.amp_dtype, (state.history or [None])[-1]
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
        # rotary time over a plain ViT's, interleaved in this process (rope_ext.run.speed)
        **{key: measured[key] for key in RATIO_KEYS.values()},
        "speed_unreliable": measured["speed_unreliable"],
        "speed_vs_none": measured["speed_vs_none"],
        "peak_mem_mb": hardware.peak_mem_mb(ctx.device),
        "params": sum(p.numel() for p in model.parameters()),
        "epochs_done": state.epoch,
        "relative_error": rope_ext.relative_property_error(model),
        # the whole model's relativity (rope_ext.encoding.relativity)
        "shift_error": measured["shift_error"],
        "test_acc_shifted": measured["test_acc_shifted"],
        "basis_motion": rope_ext.basis_motion(model),
        "pe": resolved_options(model, dataclasses.asdict(config.pe)),
        "model": config.model.name,
        "dataset": config.dataset.name,
        "input_size": input_size,
        "seed": config.seed,
        "run_id": config.run_id,
        "world_size": env.world_size,
        "device": str(ctx.device),
        "precision": str(amp_dtype).replace("torch.", "") if amp_dtype else "fp32",
        "batch_size": config.train.batch_size,
        "global_batch_size": config.train.batch_size * env.world_size,
        "train_loss": last["train_loss"] if last else None,
        "history": state.history,
        "resumed": state.resumed,
        "wall_s": time.time() - started,
        "started_at": iso_utc(started),
        "finished_at": iso_utc(time.time()),
        # what a bit-for-bit rerun needs: versions, processor, code, starting weights
        "provenance": provenance(ctx.device, weights=config.model.checkpoint),
    }


def publish(ctx: Context, metrics: RunMetrics) -> None:
    """metrics.json (replacing an earlier failure.json), the W&B summary, the result table."""
    run_dir = ctx.run_dir
    write_record(run_dir / METRICS_NAME, metrics)
    (run_dir / FAILURE_NAME).unlink(missing_ok=True)  # superseded by this result
    skip = ("schema_version", "history", "pe", "test_acc_at")
    summary = {k: v for k, v in metrics.items() if k not in skip}
    summary |= {f"test_acc_at/{k}": v for k, v in metrics["test_acc_at"].items()}
    ctx.tracker.summary(summary)
    row = row_of(run_dir.name, dict(metrics))
    note = speed_note([row])
    print(f"\nResult ({run_dir}):\n{format_table([row])}" + (f"\n\n{note}" if note else ""), flush=True)


def write_failure(
    run_dir: Path,
    identity: dict[str, Any],
    env: distributed.DistEnv,
    error: str,
    state: RunState,
    status: FailureStatus = "failed",
) -> None:
    """failure.json beside the run's results (rank 0; best effort: the disk itself may be what failed):
    ``status`` "failed", or "interrupted" for a stop that a rerun resumes; ``identity`` from
    ``identity_of``. A finished run's metrics.json is never touched."""
    if not env.is_main:
        return
    record: FailureRecord = {"status": status, "error": error, "epochs_done": state.epochs_done}
    record |= identity
    record["provenance"] = provenance()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        record["failed_at"] = time.strftime("%Y-%m-%d %H:%M:%S")
        write_record(run_dir / FAILURE_NAME, record)
    except OSError as err:
        log.warning("could not write %s: %s", FAILURE_NAME, err)


def identity_of(config: Config | None, rope: RopeSpec | None = None) -> dict[str, Any]:
    """A run's identity for failure.json: the encoding (as resolved by ``rope`` where the config was
    valid, else as configured), model, dataset, size, seed; nulls when the config could not be read."""
    if config is None:
        return {"pe": {}, "model": None, "dataset": None, "input_size": None, "seed": None}
    if rope is not None:
        pe = {"name": rope.name, **rope.options()}
    else:
        pe = {k: v for k, v in dataclasses.asdict(config.pe).items() if k in ("name", *OPTION_KEYS)}
    return {
        "pe": pe,
        "model": config.model.name,
        "dataset": config.dataset.name,
        "input_size": config.dataset.input_size,
        "seed": config.seed,
    }
