"""``train``: one job from its typed settings to metrics.json, read top to bottom.

Check what can be checked, build data, model, optimiser and schedule, lock the run directory and resume
from its checkpoint, train (warm-up + cosine LR, evaluation and an atomic checkpoint at every epoch end,
a checkpoint on SIGTERM/SIGUSR1/SIGUSR2/SIGINT too), evaluate at several input sizes, measure inference
speed and write ``metrics.json``.
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

from tqdm.contrib.logging import logging_redirect_tqdm

from rope_ext import checkpoint, safety
from rope_ext.run import hardware, hooks
from rope_ext.run.build import build_data_and_model, build_engine, compiled_for_evaluation, parallel
from rope_ext.run.distributed import DistEnv
from rope_ext.run.evaluation import final_evaluation
from rope_ext.run.loop import run_epochs
from rope_ext.run.records import publish, run_metrics, speeds, start_tracking
from rope_ext.run.settings import Settings, record_of
from rope_ext.run.state import Context, Job, lock, resume
from rope_ext.tracking.provenance import process_revision
from rope_ext.tracking.records import RUN_NAME, RunMetrics, record_run
from rope_ext.tracking.wandb_run import Tracker


def train(
    settings: Settings, run_dir: Path, env: DistEnv, tracker: Tracker, job: Job | None = None
) -> RunMetrics:
    """Run the job of ``settings`` in ``run_dir`` and return its metrics (written to metrics.json by rank 0).

    ``job`` is shared with the caller, who reads its state (epochs done) when this raises.
    """
    config = settings.config
    job = job if job is not None else Job(safety.RunLock(run_dir), settings=settings)
    state = job.state
    started = time.time()
    process_revision()  # the code this process loaded: a commit made during a long sweep is not it
    # 1. where it computes (the config was checked by run_job before anything else)
    step_hooks = hooks.from_env()  # None unless the debug hook's variable is set (tests)
    device, amp_dtype = hardware.setup(config.hardware, env)
    hardware.reset_peak_mem(device)  # peak_mem_mb is this job's, not an earlier job's of the process

    # 2. data, model, optimiser and schedule (still nothing written)
    data, model = build_data_and_model(config, settings.rope, env, device)
    num_classes = data.splits.num_classes
    engine = build_engine(config, model, data.train.num_batches, device, amp_dtype, num_classes)
    fingerprint = checkpoint.fingerprint_of(settings.configured, num_classes)
    bars = env.is_main and sys.stderr.isatty()
    ctx = Context(
        settings,
        run_dir,
        env,
        device,
        amp_dtype,
        tracker,
        job.guard,
        fingerprint,
        data.train.num_batches,
        bars,
        step_hooks,
    )

    # 3. lock the run directory, resume from its checkpoint (refused when corrupt or of other settings)
    lock(ctx, job.lock)
    resume(ctx, engine, state)
    if env.is_main and (not state.resumed or not (run_dir / RUN_NAME).exists()):
        # the run's own identity for the readers: Hydra rewrites .hydra/ at every attempt, refused ones too
        record_run(run_dir, record_of(config), settings.overrides)
    engine.net = parallel(model, env, device, config.hardware.compile)
    engine.evaluator = compiled_for_evaluation(model, config.hardware.compile)
    start_tracking(ctx, state, data, model)

    # 4. the loop: an epoch of updates, then validation and a checkpoint
    with job.guard, logging_redirect_tqdm() if bars else contextlib.nullcontext():
        run_epochs(ctx, engine, data, state)

    # 5. final evaluation: resolution extrapolation, the relative property, speed
    with job.guard.stopping_at_once("during the final evaluation"):
        final = final_evaluation(
            model, data.test_at, data.input_size, data.sizes, device, amp_dtype, engine.evaluator
        )
        speed = speeds(ctx, state, model, data.input_size)
        metrics = run_metrics(ctx, state, model, data.input_size, final | speed, started)

    # 6. the record: the job is complete, a time limit from here on neither stops nor requeues it
    # (run_job restores the handlers when it returns)
    job.guard.finishing()
    if env.is_main:
        publish(ctx, metrics)
    return metrics
