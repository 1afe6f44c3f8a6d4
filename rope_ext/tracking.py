"""Weights & Biases: one run per job, rank 0 only, and never the reason a training run fails.

Offline by default: the run directory sits under the job's output directory (``<run dir>/wandb/``) and
``wandb sync <run dir>/wandb/offline-run-*`` uploads it later. Online, the run id is kept in
``<run dir>/wandb_id.txt`` so a resumed job continues the same W&B run; offline, W&B starts a new
offline run on resume, which joins the same group under the same name. When an online start fails (no
network, bad key, server down: bounded by ``wandb.init_timeout``) the run continues as an offline W&B run
with the same id in the same directory and a warning says how to upload it (``wandb sync``), so no
metric is lost. Any other W&B error (full disk, ...) is logged as a warning and the tracker turns itself
off: W&B never stops training. Tested with wandb 0.31.
"""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


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

            id_file = Path(run_dir) / "wandb_id.txt"
            run_id = None
            if mode == "online":
                # W&B ids: lowercase letters and digits (wandb.util.generate_id is gone in wandb 0.31)
                run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:12]
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
                    resume="allow" if run_id else None,
                    mode=mode,
                    settings=wandb.Settings(init_timeout=init_timeout, console="off", silent=True),
                )
            except Exception as err:  # noqa: BLE001
                if mode != "online":
                    raise
                self.run = self._offline_fallback(wandb, args, run_id, err)
            if mode == "online":
                id_file.write_text(self.run.id)
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
    def _offline_fallback(wandb: Any, args: dict[str, Any], run_id: str | None, err: BaseException) -> Any:
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
