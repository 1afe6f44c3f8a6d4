"""Result tables for a run and a sweep, and the Hydra callback that names and summarises sweeps.

``SweepCallback`` (``hydra.callbacks.sweep`` in ``conf/config.yaml``):

* ``on_multirun_start``: gives the sweep a directory named after its own overrides
  (``multirun/<overrides>``, or ``multirun/<run_id>``) and names each job directory after the values
  that vary across the sweep, so rerunning the same sweep command lands in the same directories and
  resumes; the names are fixed by adding Hydra overrides that every job (also in submitit's workers)
  composes with.
* ``on_multirun_end``: prints one table of every job's result (``end``: ``rising`` for a run whose
  validation accuracy was still climbing when its budget ended, ``rope_ext.report.convergence``, and a
  line saying its comparison is not converged) and the command that reports on the sweep
  (``python -m rope_ext.report <sweep dir>``), lists the jobs that the user stopped (``interrupted``,
  resumable) apart from the ones that failed, and exits with status 1 when any job did not finish or
  when no job succeeded (a sweep with no job is no success either).

A job's state (``rope_ext.tracking.records.job_result``): ``ok`` when its ``metrics.json`` (written only by a finished run) is
newer than its ``failure.json``; ``interrupted`` when the newer failure.json records a user stop;
``failed`` when the failure is newer or there is no result, saying when an earlier ``ok`` result is kept
beside the failure. ``on_multirun_start`` also refuses launcher values
that Hydra's launcher would otherwise turn into a traceback (exit 2, nothing written).
"""

from __future__ import annotations

import logging
import shlex
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict, read_write

from rope_ext.config import slug
from rope_ext.report.convergence import still_rising
from rope_ext.report.runs import find_runs, interrupted_or
from rope_ext.report.tables import cell, markdown_table, ratio_cell
from rope_ext.run.speed import KINDS, RATIO_NOTE
from rope_ext.tracking.records import job_result

log = logging.getLogger(__name__)

COLUMNS = (
    ("run", "run"),
    ("pe", "pe"),
    ("block", "block"),
    ("status", "status"),
    ("test_acc", "test_acc"),
    ("best val", "best_val_acc"),
    ("epochs", "epochs_done"),
    ("end", "end"),
    ("train img/s", "train_img_per_s"),
    ("infer img/s", "infer_img_per_s"),
    ("latency ms", "infer_latency_ms"),
    # time over the plain twin's, median [smallest, largest round] (rope_ext.run.speed)
    ("train ×none", "train_x_none"),
    ("infer ×none", "infer_x_none"),
    ("latency ×none", "latency_x_none"),
    ("job peak MB", "peak_mem_mb"),
    ("params", "params"),
    ("rel. err", "relative_error"),
)


def row_of(name: str, metrics: dict[str, Any]) -> dict[str, Any]:
    """The summary row of one run called ``name`` from its record (``metrics.json`` or ``failure.json``)."""
    pe = metrics.get("pe") or {}
    row = {
        "run": name,
        "pe": pe.get("name"),
        "block": pe.get("block"),
        **{k: metrics.get(k) for _, k in COLUMNS if k not in ("run", "pe", "block")},
    }
    speed = metrics.get("speed_vs_none") if isinstance(metrics.get("speed_vs_none"), dict) else {}
    for kind in KINDS:
        ratio = speed.get(kind) if isinstance(speed.get(kind), dict) else {}
        median, low, high = (ratio.get(k) for k in ("median", "low", "high"))
        row[f"{kind}_x_none"] = ratio_cell(median, low, high, bool(ratio.get("unreliable")), missing="-")
    row["speed_unreliable"] = metrics.get("speed_unreliable")
    return row


def speed_note(rows: list[dict[str, Any]]) -> str | None:
    """The line under a table that says what its ratio columns are, and names its flagged runs."""
    flagged = [str(r["run"]) for r in rows if r.get("speed_unreliable")]
    if not any(r.get("train_x_none") not in (None, "-") for r in rows):
        return None
    said = f" Flagged here: {', '.join(flagged)}." if flagged else ""
    return RATIO_NOTE + said


def format_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table (Markdown pipe syntax, padded to line up in a terminal) of result rows."""
    body = [[_cell(r.get(key)) for _, key in COLUMNS] for r in rows]
    return markdown_table([title for title, _ in COLUMNS], body, pad=True)


def _cell(value: Any) -> str:
    # wide ints grouped and large floats scientific: the summary's columns are narrow
    return cell(value, missing="-", sci_below=1e-3, sci_from=1e6, group_from=10000)


def sweep_rows(sweep_dir: Path) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """Rows of every job under ``sweep_dir`` and (job, error) of the jobs that failed or left nothing."""
    rows, failures = [], []
    for run in find_runs(sweep_dir, jobs_only=True) if sweep_dir.is_dir() else []:
        # the latest attempt counts (a failure after an ok result is reported), as in the report
        result = job_result(run.path)
        result = {**result, "status": interrupted_or(str(result.get("status") or "failed"), run.failure)}
        row = row_of(run.path.name, result)
        row["end"] = _end_of_training(result)
        rows.append(row)
        if result.get("status") != "ok":
            failures.append((run.path.name, str(result.get("error") or result.get("status"))))
    return rows, failures


def _end_of_training(result: dict[str, Any]) -> str | None:
    """``rising`` when the run's validation accuracy was still climbing at its end (convergence rule)."""
    if result.get("status") != "ok":
        return None
    curve = [h.get("val_acc") for h in result.get("history") or [] if isinstance(h, dict)]
    return "rising" if still_rising(curve) else None


def _check_launcher(config: DictConfig) -> None:
    """The sweep's config, before Hydra's launcher reads it (exit 2 with one paragraph). ``train.py``
    checked every job before Hydra started; this guards sweeps started another way."""
    from rope_ext.config import ConfigError, validate

    try:
        validate(config, multirun=True)
    except ConfigError as err:
        log.error("Invalid configuration: %s Nothing was run.", err)
        raise SystemExit(2) from None


class SweepCallback(Callback):
    """Stable sweep/job directories and the end-of-sweep table (see the module docstring)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Check the launcher's values; fix the sweep and job directory names (module docstring)."""
        from hydra.core.override_parser.overrides_parser import OverridesParser

        _check_launcher(config)
        hydra_cfg = config.hydra
        parsed = OverridesParser.create().parse_overrides(list(hydra_cfg.overrides.task))
        constant = [o.get_key_element() for o in parsed if not o.is_sweep_override()]
        run_id = next((str(o.value()) for o in parsed if o.get_key_element() == "run_id"), None)
        exclude = list(dict.fromkeys([*hydra_cfg.job.config.override_dirname.exclude_keys, *constant]))
        extra = [
            "hydra.job.config.override_dirname.exclude_keys=[" + ",".join(f"'{k}'" for k in exclude) + "]"
        ]
        user_dir = any(
            o.startswith(("hydra.sweep.dir=", "++hydra.sweep.dir=")) for o in hydra_cfg.overrides.hydra
        )
        if not user_dir:
            sweep_dir = "multirun/" + slug(run_id if run_id else hydra_cfg.job.override_dirname)
            extra.append(f"hydra.sweep.dir='{sweep_dir}'")
            with read_write(hydra_cfg), open_dict(hydra_cfg):
                hydra_cfg.sweep.dir = sweep_dir
        with read_write(hydra_cfg), open_dict(hydra_cfg):
            hydra_cfg.overrides.hydra.extend(extra)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Print every job's result and the report command; list the failed jobs and exit 1 when there are
        any, or when no job succeeded."""
        sweep_dir = Path(str(config.hydra.sweep.dir))
        rows, failures = sweep_rows(sweep_dir)
        print(f"\nSweep {sweep_dir} ({len(rows)} job{'' if len(rows) == 1 else 's'}):", flush=True)
        if rows:
            print(format_table(rows), flush=True)
            note = speed_note(rows)
            if note:
                print(f"\n{note}", flush=True)
        rising = [r["run"] for r in rows if r.get("end") == "rising"]
        if rising:
            print(
                f"\nStill rising at the end (end = rising: best validation epoch in the last fifth of the "
                f"budget and >= 1.5 points gained over it): {', '.join(rising)}. Their comparison with the "
                "others is not converged: more epochs (train.epochs=...) would change it.",
                flush=True,
            )
        if len(failures) < len(rows):
            print(f"\nNext: python -m rope_ext.report {shlex.quote(str(sweep_dir))}", flush=True)
        if not rows:
            print(f"\nno job of the sweep left a result in {sweep_dir}", file=sys.stderr, flush=True)
            raise SystemExit(1)
        stopped = {r["run"] for r in rows if r.get("status") == "interrupted"}
        if stopped:
            # a user's Ctrl-C, a preemption or a time limit with no requeue left: the checkpoint is kept
            reasons = {job: error for job, error in failures if job in stopped}
            print(
                f"\n{len(stopped)} of {len(rows)} jobs were stopped before finishing (interrupted, resumable: "
                "rerun the same command):\n"
                + "\n".join(f"  {job}: {reasons.get(job) or 'interrupted'}" for job in sorted(stopped)),
                file=sys.stderr,
            )
        failed = [(job, error) for job, error in failures if job not in stopped]
        if failed:
            print(
                f"\n{len(failed)} of {len(rows)} jobs FAILED (a failure never replaces a job's earlier "
                "ok metrics.json: it is written to failure.json beside it):",
                file=sys.stderr,
            )
            for job, error in failed:
                print(f"  {sweep_dir / job}: {error}", file=sys.stderr)
        sys.stderr.flush()
        if failures:  # a sweep with jobs left to run or failed is not a success
            raise SystemExit(1)
