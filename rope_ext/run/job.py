"""``run_job``: the Hydra task behind ``train.py``. It types the config, runs ``train`` and turns what
stops it into an exit code and a record.

Bad input stops the job before any work with one paragraph naming key, value and what is allowed (exit
2; a refused checkpoint too). Divergence or a failed linear solve: exit 3, the last good checkpoint
kept. I/O errors (disk full, read-only, links): exit 4. A signal (Ctrl-C, a time limit, preemption)
checkpoints and exits 128 + signal, handing the signal to submitit, which requeues. Every stop writes
``failure.json`` beside the run's results (``metrics.json`` is only written by a finished run and never
replaced by a failure) with status "failed", or "interrupted" where a rerun of the same command resumes.
In a multirun a failed job returns, so the sweep goes on; a single run exits non-zero. The run directory
is locked (``rope_ext.safety.RunLock``) while a job uses it.
"""

from __future__ import annotations

import errno
import logging
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from rope_ext import safe_io, safety
from rope_ext.checkpoint import CheckpointError
from rope_ext.errors import ConfigError
from rope_ext.run import distributed
from rope_ext.run.loop import Diverged, diverged_message
from rope_ext.run.preemption import Interrupted, interrupted_before_training
from rope_ext.run.records import identity_of, write_failure
from rope_ext.run.settings import Settings, as_config, typed_config
from rope_ext.run.state import Job, first_line
from rope_ext.run.training import train
from rope_ext.schema import SlurmConfig
from rope_ext.tracking.records import FailureStatus
from rope_ext.tracking.wandb_run import Tracker

log = logging.getLogger(__name__)

# A refused checkpoint (corrupt, of other settings, or whose values cannot be what a run saved: wrong
# types or shapes, an epoch beyond its history, non-finite weights) is bad input: EXIT_CONFIG, like a bad
# config, with nothing trained. EXIT_IO: the run's files cannot be written (disk full, read-only, links).
EXIT_CONFIG, EXIT_NONFINITE, EXIT_IO = 2, 3, 4


def settings_of(cfg: DictConfig, env: distributed.DistEnv) -> Settings:
    """The job's typed settings from Hydra's composed ``cfg`` and its runtime (overrides, sweep)."""
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    configured = OmegaConf.to_container(cfg, resolve=True)  # before typing: as the command composed it
    config, rope = typed_config(cfg, multirun=multirun, world_size=env.world_size, warn=env.is_main)
    overrides = [str(o) for o in hydra_cfg.overrides.task]
    sweep = Path(str(hydra_cfg.sweep.dir)).name if multirun else None
    return Settings(config, rope, configured, overrides, sweep)


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

    def stop(error: str, exit_code: int, status: FailureStatus = "failed") -> None:
        """failure.json, W&B told the exit code; a single run exits with it, a multirun goes on."""
        write_failure(run_dir, _identity(job, cfg), env, error, job.state, status)
        tracker.finish(exit_code=exit_code)
        if multirun and status == "failed":
            return None
        raise SystemExit(exit_code) from None

    try:
        safety.check_run_dir(run_dir, multirun=multirun)
        job.settings = settings_of(cfg, env)
        metrics = train(job.settings, run_dir, env, tracker, job)
        return metrics["val_acc"] if metrics.get("val_acc") is not None else metrics["test_acc"]
    except (ConfigError, CheckpointError) as err:
        kind = "Invalid configuration" if isinstance(err, ConfigError) else "Refusing the checkpoint"
        log.error("%s: %s Nothing was trained.", kind, err)
        if not isinstance(err, safety.RunDirBusy):  # the directory is another live process's
            write_failure(run_dir, _identity(job, cfg), env, f"{kind}: {err}", job.state)
        if multirun:
            return None
        raise SystemExit(EXIT_CONFIG) from None
    except OSError as err:  # disk full, read-only output, a planted link: one paragraph, no traceback
        _log_os_error(err, run_dir)
        return stop(f"{type(err).__name__}: {err}", EXIT_IO)
    except Diverged as err:
        log.error("%s", err)
        return stop(str(err), EXIT_NONFINITE)
    except torch.linalg.LinAlgError as err:  # outside the loop (final evaluation): the same cause
        what = f"the final evaluation's linear solve failed ({first_line(err)})"
        message = diverged_message(what, job.state)
        log.error("%s", message)
        return stop(message, EXIT_NONFINITE)
    except KeyboardInterrupt:  # Ctrl-C outside the training loop, where nothing needs saving
        message = interrupted_before_training(job.state.on_disk)
        log.warning("%s", message)
        return stop(message, 130, "interrupted")
    except Interrupted as err:
        return _interrupted(err, job, cfg, run_dir, env, tracker, multirun)
    except Exception as err:
        log.exception("job failed")
        write_failure(run_dir, _identity(job, cfg), env, f"{type(err).__name__}: {err}", job.state)
        if multirun:
            return None
        raise
    finally:
        tracker.finish()
        distributed.shutdown()
        job.lock.release()
        job.guard.restore()  # after the record and W&B's finish: ``SignalGuard.finishing``


def _interrupted(
    err: Interrupted,
    job: Job,
    cfg: DictConfig,
    run_dir: Path,
    env: distributed.DistEnv,
    tracker: Tracker,
    multirun: bool,
) -> None:
    """A signal that checkpointed: record it as interrupted (resumable) and hand the signal over
    (submitit requeues and exits); exit 128 + signal."""
    log.warning("%s", err)
    write_failure(run_dir, _identity(job, cfg), env, str(err), job.state, "interrupted")
    tracker.finish(exit_code=128 + err.signum)
    distributed.shutdown()
    try:
        job.guard.hand_over(err.signum)  # submitit: requeue and exit
    except Exception as refused:  # submitit did not requeue (time-outs beyond launcher.max_num_timeout)
        launcher = job.settings.config.launcher if job.settings else None
        limit = launcher.max_num_timeout if isinstance(launcher, SlurmConfig) else None
        error = f"{err}; not requeued (launcher.max_num_timeout={limit}): {refused}"
        log.error("%s", error)
        write_failure(run_dir, _identity(job, cfg), env, error, job.state, "interrupted")
        if multirun:
            return None
    raise SystemExit(128 + err.signum) from None


def _identity(job: Job, cfg: DictConfig) -> dict[str, Any]:
    """failure.json's identity of the run: from its settings, else (a refused config) from the config
    as composed, where it can be read at all."""
    if job.settings is not None:
        return identity_of(job.settings.config, job.settings.rope)
    try:
        return identity_of(as_config(cfg))
    except Exception:  # noqa: BLE001 - best effort: the config itself is what failed
        return identity_of(None)


def _log_os_error(err: OSError, run_dir: Path) -> None:
    if isinstance(err, safe_io.UnsafePathError):
        log.error("Unsafe run directory: %s.", err)
        return
    log.error(
        "I/O error: %s. Free space or fix the permissions (output: %s), then rerun the same "
        "command: it resumes from the last checkpoint.",
        _describe_os_error(err, run_dir),
        run_dir,
    )


def _describe_os_error(err: OSError, run_dir: Path) -> str:
    if isinstance(err, safe_io.WriteError):
        return str(err)
    return (
        f"could not access {err.filename or run_dir} (errno {err.errno} "
        f"{errno.errorcode.get(err.errno or 0, '?')}: {err.strerror})"
    )
