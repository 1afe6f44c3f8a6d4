"""The report's rows as a ``wandb.Table`` (and its plots) in each sweep's W&B group.

One W&B report run per group and output directory, however often the report is rerun: its id is kept in
``<out>/wandb_report_ids.json`` and passed with ``resume="allow"`` (as ``rope_ext.tracking`` does for a
training job), so a rerun logs the new table into the same run instead of adding a run to sync."""

from __future__ import annotations

import json
import os
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rope_ext.report.groups import eval_sizes
from rope_ext.report.runs import Run
from rope_ext.report.tables import write_text

__all__ = ["log_to_wandb"]

IDS_NAME = "wandb_report_ids.json"


def _report_ids(out: Path) -> dict[str, str]:
    path = out / IDS_NAME
    try:
        data = json.loads(path.read_text()) if path.is_file() and not path.is_symlink() else {}
    except ValueError:
        data = {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def log_to_wandb(
    runs: Sequence[Run], columns: Sequence[str], out: Path, root: Path, plots: Sequence[Path]
) -> list[str]:
    """Log the report rows as a ``wandb.Table`` to each sweep's group. Never raises: failures warn."""
    mode = os.environ.get("WANDB_MODE", "offline")
    if mode == "disabled":
        return []
    logged = []
    try:
        import wandb

        sweeps: dict[str, list[Run]] = {}
        for run in runs:
            sweeps.setdefault(run.sweep, []).append(run)
        sizes = eval_sizes(runs)
        for sweep, members in sweeps.items():
            cfg_groups = {r.cfg("wandb.group") for r in members if r.cfg("wandb.group")}
            group = (
                sorted(str(g) for g in cfg_groups)[0]
                if cfg_groups
                else (sweep if sweep != "." else root.resolve().name)
            )
            projects = {r.cfg("wandb.project") for r in members if r.cfg("wandb.project")}
            project = sorted(str(p) for p in projects)[0] if projects else "rope-ext"
            data = []
            for run in members:
                row = run.row(sizes, root)
                data.append([row.get(c) for c in columns])
            ids = _report_ids(out)
            run_id = ids.get(group) or uuid.uuid4().hex[:12]
            wb = wandb.init(
                project=project,
                group=group,
                job_type="report",
                name=f"report-{group}",
                id=run_id,
                resume="allow",
                dir=str(out),
                mode=mode,
                reinit="finish_previous",
            )
            if ids.get(group) != wb.id:
                write_text(out / IDS_NAME, json.dumps({**ids, group: wb.id}, indent=1))  # never via a link
            try:
                payload: dict[str, Any] = {"report": wandb.Table(columns=list(columns), data=data)}
                for plot in plots:
                    payload[plot.stem] = wandb.Image(str(plot))
                wb.log(payload)
                logged.append(group)
            finally:
                wb.finish()
    except Exception as exc:  # noqa: BLE001 - W&B must never break the report
        warnings.warn(
            f"report: W&B logging failed ({type(exc).__name__}: {exc}); files are written", stacklevel=2
        )
    return logged
