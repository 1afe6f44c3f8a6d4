"""Guards of the run directory: where it may be, who may write it, and the values checked before it is.

* ``check_component``: a ``run_id`` (and every directory name a sweep derives) is one path component of
  letters, digits and ``._=,+-``, never ``.``/``..``/empty, so a run stays inside ``outputs/``
  (``multirun/``). ``check_argv`` applies it to the command line before Hydra creates any directory.
* ``RunLock``: an exclusive ``fcntl.flock`` on ``<run dir>/.lock`` (released by the OS when the process
  dies; opened without following links, ``rope_ext.safe_io``); a second process on the same directory
  is refused naming the PID that holds it.
* ``validate_values``: value checks of known keys that ``config.validate`` leaves out (model shape,
  dropout rates, optimizer, workers, threads, launcher), each a ``ConfigError`` naming key, value and
  what is allowed, before any work starts.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from rope_ext import safe_io
from rope_ext.config import ConfigError, select

log = logging.getLogger(__name__)

COMPONENT = re.compile(r"[A-Za-z0-9._=,+\-]+")
COMPONENT_ALLOWED = "one path component of letters, digits and ._=,+- (not '.', '..' or empty)"
LOCK_NAME = ".lock"


class RunDirBusy(ConfigError):
    """Another live process holds the run directory's lock (no failure record is written for it)."""


def check_component(key: str, value: Any) -> None:
    """Raise ConfigError unless ``value`` is a safe single directory name."""
    text = "" if value is None else str(value)
    if not COMPONENT.fullmatch(text) or text in (".", ".."):
        raise ConfigError.bad_value(key, value, COMPONENT_ALLOWED, "it names the run directory")


def check_argv(argv: list[str]) -> None:
    """``run_id=`` overrides on the command line, checked before Hydra creates the run directory."""
    for arg in argv:
        match = re.fullmatch(r"\+{0,2}run_id=(.*)", arg, flags=re.S)
        if match is None:
            continue
        value = match.group(1).strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        check_component("run_id", value)


def check_run_dir(run_dir: Path, run_id: Any, *, multirun: bool) -> None:
    """``run_id`` and the job directory's own name are single safe components: with the run directory
    templates of ``conf/config.yaml`` (``outputs/${run_id}``, ``multirun/<sweep>/<job>``) that keeps
    every run inside ``outputs/`` or ``multirun/``."""
    check_component("run_id", run_id)
    if multirun:
        check_component("hydra.sweep.subdir", Path(run_dir).name)


class RunLock:
    """An exclusive lock on a run directory, held until ``release`` or the process's death."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise RunDirBusy naming the process that holds it."""
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = safe_io.open_nofollow(self.path, os.O_RDWR | os.O_CREAT)  # a planted link: UnsafePathError
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise RunDirBusy(
                f"the run directory {self.path.parent} is in use by process {holder} (it holds "
                f"{self.path}); wait for it to finish or stop it, or pick another run_id. Nothing was "
                "changed."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the last descriptor releases the flock


# ---------------------------------------------------------------------------------------------------
# values


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_num(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_int(cfg: DictConfig, key: str, minimum: int, *, nullable: bool = False, also: tuple = ()) -> None:
    value = select(cfg, key)
    if (value is None and nullable) or value in also:
        return
    if not _is_int(value) or value < minimum:
        extra = "".join(f", {a}" for a in also) + (", null" if nullable else "")
        raise ConfigError.bad_value(key, value, f"an integer >= {minimum}{extra}")


def _in_range(cfg: DictConfig, key: str, low: float, high: float, *, low_open: bool = False) -> None:
    value = select(cfg, key)
    if value is None:
        return
    ok = _is_num(value) and (value > low if low_open else value >= low) and value < high
    if not ok:
        raise ConfigError.bad_value(key, value, f"a number in {'(' if low_open else '['}{low}, {high})")


def validate_values(cfg: DictConfig, *, multirun: bool = False) -> None:
    """Value checks of known keys beyond ``config.validate`` (see the module docstring)."""
    model = cfg.model
    if select(model, "arch") is not None:
        import timm

        if not isinstance(model.arch, str) or not timm.is_model(model.arch):
            raise ConfigError.bad_value(
                "model.arch",
                model.arch,
                "a timm VisionTransformer name, e.g. vit_tiny_patch16_224 (timm.list_models('vit_*'))",
            )
    for key in ("patch_size", "embed_dim", "depth", "num_heads"):
        if key in model and model[key] is not None:
            check_int(cfg, f"model.{key}", 1)
    embed, heads = select(model, "embed_dim"), select(model, "num_heads")
    if embed is not None and heads is not None and embed % heads:
        raise ConfigError.bad_value(
            "model.embed_dim",
            embed,
            f"a multiple of model.num_heads={heads}",
            "each head gets an equal share",
        )
    if select(model, "mlp_ratio") is not None:
        _in_range(cfg, "model.mlp_ratio", 0, float("inf"), low_open=True)
    for key in ("drop_rate", "drop_path_rate", "attn_drop_rate", "proj_drop_rate", "pos_drop_rate"):
        _in_range(cfg, f"model.{key}", 0, 1)

    check_int(cfg, "train.epochs", 1)
    lr, min_lr = select(cfg, "train.lr"), select(cfg, "train.min_lr")
    if _is_num(lr) and _is_num(min_lr) and min_lr > lr:
        raise ConfigError.bad_value("train.min_lr", min_lr, f"a number in [0, train.lr={lr}]")

    opt = cfg.optimizer
    if select(opt, "weight_decay") is not None:
        _in_range(cfg, "optimizer.weight_decay", 0, float("inf"))
    if select(opt, "eps") is not None:
        _in_range(cfg, "optimizer.eps", 0, float("inf"), low_open=True)
    if select(opt, "momentum") is not None:
        _in_range(cfg, "optimizer.momentum", 0, 1)
    betas = select(opt, "betas")
    if betas is not None:
        plain = OmegaConf.to_container(betas) if isinstance(betas, ListConfig) else betas
        if not (
            isinstance(plain, list) and len(plain) == 2 and all(_is_num(b) and 0 <= b < 1 for b in plain)
        ):
            raise ConfigError.bad_value("optimizer.betas", plain, "two numbers in [0, 1), e.g. [0.9, 0.999]")

    check_int(cfg, "hardware.threads", 1, nullable=True)
    check_int(cfg, "dataset.num_workers", 0, also=("auto",))

    launcher = select(cfg, "launcher")
    if launcher is not None:
        for key, minimum in (
            ("timeout_min", 1),
            ("mem_gb", 1),
            ("max_num_timeout", 0),
            ("signal_delay_s", 0),
            ("array_parallelism", 1),
        ):
            if key in launcher:
                check_int(cfg, f"launcher.{key}", minimum, nullable=True)
        if "cpus_per_task" in launcher:
            check_int(cfg, "launcher.cpus_per_task", 1, nullable=True)
        name = select(launcher, "name")
        if name not in (None, "local") and not multirun:
            log.warning(
                "launcher=%s applies to multiruns (python train.py -m ...): this single run runs "
                "locally, in this process",
                name,
            )
