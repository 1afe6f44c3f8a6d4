"""Weights & Biases: one run per job, rank 0 only, and never the reason a training run fails.

Offline by default: the run directory sits under the job's output directory (``<run dir>/wandb/``) and
``wandb sync <run dir>/wandb/offline-run-*`` uploads it later. One W&B run per job, however often it
is resumed or re-evaluated: the run id is kept in ``<run dir>/wandb_id.txt`` (in every mode) and each
start passes it with ``resume="allow"``. Offline, a restart still opens a new directory
(``offline-run-<time>-<id>-1``, ...) but with the same id, and ``wandb sync`` uploads the directories of
one id into that one run, in order of start time. When an online start fails (no
network, bad key, server down: bounded by ``wandb.init_timeout``) the run continues as an offline W&B run
with the same id in the same directory and a warning says how to upload it (``wandb sync``), so no
metric is lost. Any other W&B error (full disk, ...) is logged as a warning and the tracker turns itself
off: W&B never stops training. Tested with wandb 0.31.
"""

from __future__ import annotations

import logging
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ID_NAME = "wandb_id.txt"
_ID = re.compile(r"[a-z0-9]{8,64}")  # W&B ids: lowercase letters and digits


def job_run_id(run_dir: Path) -> str:
    """The job's W&B run id: the one in ``<run dir>/wandb_id.txt``, else a new one (written by ``start``
    once W&B accepted it)."""
    path = Path(run_dir) / ID_NAME
    if path.is_file() and not path.is_symlink():
        text = path.read_text().strip()
        if _ID.fullmatch(text):
            return text
    # wandb.util.generate_id is gone in wandb 0.31
    return uuid.uuid4().hex[:12]


def _write_id(run_dir: Path, run_id: str) -> None:
    """``wandb_id.txt``, never through a symlink planted in the run directory."""
    fd = os.open(Path(run_dir) / ID_NAME, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w") as fh:
        fh.write(run_id)


class Tracker:
    """A thin wrapper over ``wandb`` whose methods do nothing when disabled or after a W&B failure."""

    def __init__(self) -> None:
        self.run: Any = None

    @property
    def active(self) -> bool:
        return self.run is not None

    def start(
        self,
        *,
        mode: str,
        run_dir: Path,
        project: str,
        entity: str | None,
        group: str,
        name: str,
        config: dict[str, Any],
        tags: list[str],
        init_timeout: float,
        resuming: bool,
    ) -> None:
        if mode == "disabled":
            return
        try:
            import wandb

            run_id = job_run_id(run_dir)
            args = dict(
                project=project,
                entity=entity,
                group=group,
                name=name,
                config=config,
                tags=list(tags) or None,
                dir=str(run_dir),
                job_type="train",
            )
            try:
                self.run = wandb.init(
                    **args,
                    id=run_id,
                    resume="allow",
                    mode=mode,
                    settings=wandb.Settings(init_timeout=init_timeout, console="off", silent=True),
                )
            except Exception as err:  # noqa: BLE001
                if mode != "online":
                    raise
                self.run = self._offline_fallback(wandb, args, run_id, err)
            _write_id(run_dir, self.run.id)
            self.run.define_metric("train/*", step_metric="trainer/step")
            self.run.define_metric("epoch/*", step_metric="trainer/epoch")
            log.info(
                "W&B %s run %s (group %s, name %s)%s in %s",
                "offline" if getattr(self.run, "offline", False) else mode,
                self.run.id,
                group,
                name,
                ", resuming" if resuming else "",
                getattr(self.run, "dir", run_dir),
            )
        except Exception as err:  # noqa: BLE001 - W&B must never stop training
            self._fail("start", err)

    @staticmethod
    def _offline_fallback(wandb: Any, args: dict[str, Any], run_id: str, err: BaseException) -> Any:
        """The online start failed: the same run (same id) offline in the run directory."""
        run = None
        for attempt in range(4):
            wandb.teardown()  # the service still holds the failed run's id; it may take a moment to go
            # the last attempt takes a fresh id: then `wandb sync` uploads a new run, but nothing is lost
            try:
                run = wandb.init(
                    **args,
                    id=run_id if attempt < 3 else uuid.uuid4().hex[:12],
                    mode="offline",
                    settings=wandb.Settings(console="off", silent=True),
                )
                break
            except Exception:  # noqa: BLE001
                if attempt == 3:
                    raise
                time.sleep(1.0 + attempt)
        where = Path(getattr(run, "dir", args["dir"])).parent
        log.warning(
            "W&B online start failed (%s: %s); logging to the offline run %s instead. Upload it when "
            "W&B is reachable: wandb sync %s",
            type(err).__name__,
            str(err).splitlines()[0] if str(err) else "",
            where,
            where,
        )
        return run

    def log(self, data: dict[str, Any]) -> None:
        if self.run is None:
            return
        try:
            self.run.log(data)
        except Exception as err:  # noqa: BLE001
            self._fail("log", err)

    def summary(self, data: dict[str, Any]) -> None:
        if self.run is None:
            return
        try:
            for key, value in data.items():
                self.run.summary[key] = value
        except Exception as err:  # noqa: BLE001
            self._fail("summary", err)

    def finish(self, exit_code: int = 0) -> None:
        if self.run is None:
            return
        run, self.run = self.run, None
        try:
            run.finish(exit_code=exit_code)
        except Exception as err:  # noqa: BLE001
            log.warning("W&B finish failed (%s); the local files may be incomplete", err)

    def _fail(self, what: str, err: BaseException) -> None:
        log.warning(
            "W&B %s failed (%s: %s); training goes on without W&B. Offline runs need no network: "
            "wandb.mode=offline (or WANDB_MODE=offline).",
            what,
            type(err).__name__,
            err,
        )
        run, self.run = self.run, None
        if run is not None:
            try:
                run.finish(exit_code=1)
            except Exception:  # noqa: BLE001
                pass
