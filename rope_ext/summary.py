"""Result tables for a run and a sweep, and the Hydra callback that names and summarises sweeps.

``SweepCallback`` (``hydra.callbacks.sweep`` in ``conf/config.yaml``):

* ``on_multirun_start``: gives the sweep a directory named after its own overrides
  (``multirun/<overrides>``, or ``multirun/<run_id>``) and names each job directory after the values
  that vary across the sweep, so rerunning the same sweep command lands in the same directories and
  resumes; the names are fixed by adding Hydra overrides that every job (also in submitit's workers)
  composes with.
* ``on_multirun_end``: prints one table of every job's metrics.json, lists the jobs that failed with
  their error, and exits with status 1 when any did (the others' results stay where they are).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict, read_write

from rope_ext.config import slug

log = logging.getLogger(__name__)

COLUMNS = (
    ("run", "run"),
    ("pe", "pe"),
    ("block", "block"),
    ("status", "status"),
    ("test_acc", "test_acc"),
    ("best val", "best_val_acc"),
    ("epochs", "epochs_done"),
    ("train img/s", "train_img_per_s"),
    ("infer img/s", "infer_img_per_s"),
    ("latency ms", "infer_latency_ms"),
    ("peak MB", "peak_mem_mb"),
    ("params", "params"),
    ("rel. err", "relative_error"),
)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10000 else str(value)
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e6):
            return f"{value:.1e}"
        return f"{value:.2f}"
    return str(value)


def row_of(name: str, metrics: dict[str, Any]) -> dict[str, Any]:
    pe = metrics.get("pe") or {}
    return {
        "run": name,
        "pe": pe.get("name"),
        "block": pe.get("block"),
        **{k: metrics.get(k) for _, k in COLUMNS if k not in ("run", "pe", "block")},
    }


def format_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table (Markdown pipe syntax) of result rows."""
    header = [title for title, _ in COLUMNS]
    body = [[_cell(r.get(key)) for _, key in COLUMNS] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(header)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(b, widths)) + " |" for b in body]
    return "\n".join(lines)


def sweep_rows(sweep_dir: Path) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """Rows of every job under ``sweep_dir`` and (job, error) of the jobs that failed or left nothing."""
    rows, failures = [], []
    for cfg_path in sorted(sweep_dir.glob("*/.hydra/config.yaml")):
        job_dir = cfg_path.parent.parent
        metrics_path = job_dir / "metrics.json"
        try:
            metrics = json.loads(metrics_path.read_text())
        except (OSError, ValueError) as err:
            metrics = {"status": "failed", "error": f"no readable metrics.json ({type(err).__name__})"}
        rows.append(row_of(job_dir.name, metrics))
        if metrics.get("status") != "ok":
            failures.append((job_dir.name, str(metrics.get("error") or metrics.get("status"))))
    return rows, failures


class SweepCallback(Callback):
    """Stable sweep/job directories and the end-of-sweep table (see the module docstring)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra.core.override_parser.overrides_parser import OverridesParser

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
        sweep_dir = Path(str(config.hydra.sweep.dir))
        rows, failures = sweep_rows(sweep_dir)
        print(f"\nSweep {sweep_dir} ({len(rows)} jobs):\n{format_table(rows)}", flush=True)
        if failures:
            print(
                f"\n{len(failures)} of {len(rows)} jobs FAILED (the others' results are kept):",
                file=sys.stderr,
            )
            for job, error in failures:
                print(f"  {sweep_dir / job}: {error}", file=sys.stderr)
            sys.stderr.flush()
            raise SystemExit(1)
