"""A committed report recomputed from its own rows: ``python -m rope_ext.report --from-rows FOLDER``.

A committed report (``experiments/results/<study>/``) keeps the rows its statistics come from (runs.csv:
one per run and evaluation size; history.csv: the learning curves; report.csv: one per run) but not the
run directories. This recomputes stats.csv and report.md's statistics section from those rows with the
current statistics, and rewrites runs.csv and history.csv in the current columns: what the rows do not
hold (the runs' provenance, when they were written before it was kept) stays empty, and report.md says
that the report was recomputed from the committed rows. report.csv, the groups table and the plots are
kept as committed.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

from rope_ext import stats
from rope_ext.report.arms import (
    Margins,
    statistics_from_rows,
    write_history_csv,
    write_runs_csv,
    write_stats_csv,
)
from rope_ext.report.convergence import mean_curve, still_rising
from rope_ext.report.plots import chance_level
from rope_ext.report.stats_md import statistics_markdown
from rope_ext.report.tables import csv_text, write_text

__all__ = ["RECOMPUTED_NOTE", "report_from_rows"]

RECOMPUTED_NOTE = (
    "Recomputed from the committed rows (runs.csv, history.csv, report.csv) by "
    "`python -m rope_ext.report --from-rows {folder}`: the run directories are not on this machine and "
    "the committed rows never held the runs' provenance, so runs.csv's revision, dirty, start and end "
    "time, processor, threads, versions and weights columns (and history.csv's revision) are empty: "
    "unknown, not measured here."
)
_STATS_START = "## Comparisons with the baseline"
_NUMBER = re.compile(r"-?\d+")


def _value(text: str) -> Any:
    """A CSV cell as the report wrote it: "" None, True/False, int, float, else the (unescaped) text."""
    if text == "":
        return None
    if text in ("True", "False"):
        return text == "True"
    if _NUMBER.fullmatch(text):
        return int(text)
    try:
        return float(text)
    except ValueError:
        return csv_text(text)


def _read(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return [{k: _value(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def _mean(values: list[Any]) -> float | None:
    return stats.mean_ci(values).mean


def report_from_rows(folder: str | Path) -> dict[str, Any]:
    """Recompute the report in ``folder`` from its rows (module docstring); returns a summary. Raises
    ``FileNotFoundError`` when ``folder`` holds no runs.csv."""
    folder = Path(folder)
    run_rows = _read(folder / "runs.csv")
    if not run_rows:
        raise FileNotFoundError(f"report: --from-rows {str(folder)!r} holds no runs.csv rows to recompute")
    per_run = {(r.get("arm"), r.get("seed")): r for r in _read(folder / "report.csv")}
    curves: dict[tuple[str, str], dict[int, list[Any]]] = {}
    history = _read(folder / "history.csv")
    for h in history:
        curves.setdefault((h["table"], h["arm"]), {}).setdefault(h["seed"], []).append(h["val_acc"])
    info: dict[str, dict[str, Any]] = {}
    arms: dict[tuple[str, str], dict[str, Any]] = {}
    seen: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for r in run_rows:
        r["chance"] = chance_level(per_run.get((r["arm"], r["seed"]), {}).get("dataset"))
        seen.setdefault((r["table"], r["arm"]), {}).setdefault(r["seed"], r)
        meta = info.setdefault(
            r["table"], {"name": r["table"], "baseline": r["baseline"] or "", "sizes": set()}
        )
        meta["sizes"].add(r["size"])
        meta.setdefault("train" if not r["extrap"] else "extrap", r["margin"])
    for meta in info.values():
        meta["margins"] = Margins(meta.pop("train", None), meta.pop("extrap", None))
        meta["sizes"] = sorted(meta["sizes"])
    for (table, arm), seeds in seen.items():
        runs = [per_run.get((arm, s), {}) for s in seeds]
        first = next(iter(seeds.values()))
        arms[(table, arm)] = {
            "lr": first["lr"],
            "command": first["command"],
            "val_acc_mean": _mean([r["val_acc"] for r in seeds.values()]),
            "test_acc_shifted_mean": _mean([r.get("test_acc_shifted") for r in runs]),
            "shift_error_mean": _mean([r.get("shift_error") for r in runs]),
            "not_converged": still_rising(mean_curve(list(curves.get((table, arm), {}).values()))),
        }
    stat_rows = statistics_from_rows(run_rows, info, arms)
    write_stats_csv(stat_rows, folder / "stats.csv")
    write_runs_csv(run_rows, folder / "runs.csv")
    if history:
        write_history_csv(history, folder / "history.csv")
    _rewrite_markdown(folder, statistics_markdown(stat_rows, info))
    return {"stats": stat_rows, "md": folder / "report.md"}


def _rewrite_markdown(folder: Path, stat_lines: list[str]) -> None:
    """report.md with its statistics section replaced by ``stat_lines`` and the recomputation said."""
    path = folder / "report.md"
    text = path.read_text() if path.is_file() else f"# Report: {folder.name}\n\n## All groups\n"
    lines = text.split("\n")
    note = RECOMPUTED_NOTE.format(folder=folder.as_posix())
    lines = [line for line in lines if not line.startswith("Recomputed from the committed rows")]
    start = next((i for i, line in enumerate(lines) if line.startswith(_STATS_START)), None)
    end = next((i for i, line in enumerate(lines) if line.startswith("## All groups")), len(lines))
    if start is None:
        start = end
    head = lines[:start]
    while head and head[-1] == "":
        head.pop()
    write_text(path, "\n".join([*head, "", note, "", *stat_lines, *lines[end:]]))
