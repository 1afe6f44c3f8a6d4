"""``report.csv`` (one row per run) and ``report.md`` (every group of seeds, the statistics, the failed
and missing runs), and ``write_report``, which writes everything the report consists of."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rope_ext import safe_io
from rope_ext.report.arms import (
    NO_MARGINS,
    Margins,
    arm_statistics,
    history_rows,
    resolve_baselines,
    resolve_margins,
    select_arms,
    write_history_csv,
    write_runs_csv,
    write_stats_csv,
)
from rope_ext.report.convergence import mean_curve, still_rising
from rope_ext.report.groups import Group, arm_name, compute_ratios, eval_sizes, group_runs
from rope_ext.report.plots import PLOT_FILES, write_plots
from rope_ext.report.runs import PE_OPTIONS, RATIO_SUFFIX, SPEEDS, Run, find_runs
from rope_ext.report.speed import pooled_ratio
from rope_ext.report.stats_md import statistics_markdown
from rope_ext.report.tables import cell, csv_table, markdown_table, mean_std, ratio_cell, write_text
from rope_ext.report.wandb_log import IDS_NAME, log_to_wandb
from rope_ext.run.speed import RATIO_KEYS, RATIO_NOTE

__all__ = ["CSV_COLUMNS", "write_csv", "write_markdown", "write_report"]

CSV_COLUMNS = ["run_dir", "sweep", "arm", "status", "error", "variant", *PE_OPTIONS]
CSV_COLUMNS += ["model", "dataset", "input_size", "batch_size", "seed"]
CSV_COLUMNS += ["test_acc", "val_acc", "best_val_acc", "best_epoch", "relative_error"]
CSV_COLUMNS += ["shift_error", "test_acc_shifted"]  # null (empty) for a model without rotary layers
CSV_COLUMNS += [c for speed in SPEEDS for c in (speed, speed + RATIO_SUFFIX)]
CSV_COLUMNS += [k + end for k in RATIO_KEYS.values() for end in ("", "_low", "_high")] + ["speed_unreliable"]
CSV_COLUMNS += ["peak_mem_mb", "params", "epochs_done", "overrides"]


def write_csv(runs: Sequence[Run], path: Path, root: Path) -> list[str]:
    """``report.csv``: one row per run, failed and missing ones included; returns its columns."""
    sizes = eval_sizes(runs)
    columns = CSV_COLUMNS + [f"test_acc_at_{s}" for s in sizes]
    shift = ("shift_error", "test_acc_shifted")
    rows = ({**run.row(sizes, root), **{k: run.metrics.get(k) for k in shift}} for run in runs)
    csv_table(path, columns, rows)
    return columns


def write_markdown(
    runs: Sequence[Run],
    groups: Sequence[Group],
    path: Path,
    root: Path,
    stat_lines: Sequence[str] = (),
    skipped: Sequence[tuple[Path, str]] = (),
) -> None:
    """``report.md``: ``stat_lines``, every group as mean ± std, the failed and missing runs, the plots,
    the run directories that could not be read (``skipped``: path, why)."""
    sizes = eval_sizes(runs)
    sweeps = sorted({g.first.sweep for g in groups})
    show_sweep = len(sweeps) > 1
    show_other = any(g.other for g in groups)
    header = ["sweep"] if show_sweep else []
    header += ["arm", "variant", "N", "impl", "mixed", "dims", "model", "dataset", "input"]
    header += ["other"] if show_other else []
    header += ["seeds", "seed values", "end of training", "test acc %", "val acc %", "rel. error"]
    header += ["shift error", "shifted acc %"]
    header += [f"acc@{s} %" for s in sizes]
    header += [
        "train img/s",
        "train time ×none",
        "infer img/s",
        "infer time ×none",
        "latency ms",
        "latency ×none",
        "job peak MB",
        "params",
    ]
    rows = []
    for g in groups:
        r = g.first
        row = [r.sweep] if show_sweep else []
        row += [
            arm_name(g),
            r.variant,
            cell(r.pe("block")),
            cell(r.pe("impl")) if r.variant != "none" else "",
            cell(r.pe("mixed")) if r.variant != "none" else "",
            cell(r.pe("dims")) if r.variant != "none" else "",
            cell(r.field_value("model")),
            cell(r.field_value("dataset")),
            cell(r.field_value("input_size")),
        ]
        row += [g.other] if show_other else []
        seeds = ",".join(str(run.field_value("seed")) for run in g.runs)
        row += [
            str(len(g.runs)),
            seeds,
            _end_of_training(g),
            mean_std(g.values("test_acc")),
            mean_std(g.values("val_acc")),
            mean_std(g.values("relative_error"), 3),
            mean_std(g.values("shift_error"), 3),
            mean_std(g.values("test_acc_shifted")),
        ]
        for size in sizes:
            row.append(mean_std(run.acc_at(size) for run in g.runs))
        row += [
            mean_std(g.values("train_img_per_s"), 0),
            ratio_cell(*pooled_ratio(g.runs, "train") or (None,)),
            mean_std(g.values("infer_img_per_s"), 0),
            ratio_cell(*pooled_ratio(g.runs, "infer") or (None,)),
            mean_std(g.values("infer_latency_ms"), 2),
            ratio_cell(*pooled_ratio(g.runs, "latency") or (None,)),
            mean_std(g.values("peak_mem_mb"), 0),
            cell(r.metrics.get("params")),
        ]
        rows.append(row)
    bad = [run for run in runs if run.status != "ok"]
    counts = {s: sum(run.status == s for run in runs) for s in ("ok", "interrupted", "failed", "missing")}
    said = ", ".join(f"{n} {s}" for s, n in counts.items() if n or s == "ok")
    text = [
        f"# Report: {root.name or root}",
        "",
        f"{len(runs)} runs: {said}. Accuracy is top-1 % on the test split; "
        "mean ± sample std over the seeds listed (`seeds`: how many; `end of training`: `still rising` "
        "where the validation accuracy was still climbing when the budget ended, docs/statistics.md). "
        f"{RATIO_NOTE} Over seeds: the median of the runs' medians [smallest, largest round of any]. "
        "`img/s` and `ms` are absolute: on a shared machine they move with its load. `rel. error` is the "
        "measured relative-property error (0 for exact encodings; the `lie_block` control breaks it). "
        "`shift error` and `shifted acc %`: the whole model under a one-patch shift of the positions. "
        "`acc@S` evaluates at an S-pixel input. `n/a`: no run of the group measured it (e.g. the shift of "
        "a model without rotary layers).",
        "",
        *stat_lines,
        "## All groups (mean ± sample std)",
        "",
        markdown_table(header, rows) if rows else "No finished runs.",
        "",
        "## Missing, failed or interrupted runs",
        "",
    ]
    if bad:
        for run in bad:
            ov = " ".join(run.overrides)
            again = (
                " (stopped before finishing; rerun the same command to resume)"
                if run.status == "interrupted"
                else ""
            )
            text.append(
                f"- `{run.relpath(root)}` ({run.status}{': ' + ov if ov else ''}): {run.error}{again}"
            )
    else:
        text.append("None.")
    text.append("")
    if skipped:
        text += ["## Run directories that could not be read (left out)", ""]
        text += [f"- `{_rel(p, root)}`: {why}" for p, why in skipped] + [""]
    plots = [p for p in PLOT_FILES if (path.parent / p).is_file()]
    if plots:
        text += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    write_text(path, "\n".join(text))


def _end_of_training(g: Group) -> str:
    """``still rising`` / ``converged`` by the arm's mean validation curve, ``n/a`` without curves."""
    curves = [[h.get("val_acc") for h in r.metrics.get("history") or []] for r in g.runs]
    if not any(curves):
        return "n/a"
    return "still rising" if still_rising(mean_curve(curves)) else "converged"


def single_seed_lines(groups: Sequence[Group]) -> list[str]:
    """report.md's statistics section where no arm has two seeds: what is missing and how to get it."""
    return [
        "## Statistics",
        "",
        "1 seed per arm: no confidence intervals, tests or verdicts (they need at least 2 seeds per arm, "
        "paired by seed). Add seeds to the sweep, e.g. `seed=0,1,2`, and report again."
        if groups
        else "No finished runs.",
        "",
    ]


REPORT_FILES = ("report.csv", "report.md", "stats.csv", "runs.csv", "history.csv", IDS_NAME)


def refuse_links(out_dir: Path) -> None:
    """``safe_io.UnsafePathError`` naming the first of the report's files (or their temporary files) in
    ``out_dir`` that is a symbolic link: the report never writes through one."""
    for name in (*REPORT_FILES, *PLOT_FILES):
        for path in (out_dir / name, safe_io.tmp_path(out_dir / name)):
            safe_io.refuse_link(path)


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix() if path != root else "."


def write_report(
    root: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    wandb_log: bool = True,
    baseline: str | None = None,
    margins: Margins = NO_MARGINS,
    arms: Sequence[str] = (),
) -> dict[str, Any]:
    """Write ``report.csv``, ``stats.csv``, ``runs.csv``, ``history.csv``, ``report.md`` and the plots for
    the runs under ``root``; return a summary. ``margins``: the equivalence margins where the runs recorded none
    (``arms.resolve_margins``); ``arms``: report only these arms and the baseline (``arms.select_arms``).

    Run directories whose files cannot be used are left out and listed (``skipped``). Raises
    ``FileNotFoundError`` (no runs), ``NotADirectoryError`` (``out`` is a file), ``arms.BaselineError`` or
    ``arms.MarginError`` before anything is written."""
    root = Path(root)
    skipped: list[tuple[Path, str]] = []
    runs = find_runs(root, skipped=skipped)
    if not runs:
        why = (
            f"; {len(skipped)} could not be read: " + "; ".join(w for _, w in skipped[:3]) if skipped else ""
        )
        raise FileNotFoundError(
            f"report: DIR={str(root)!r} holds no readable run directories (none with run.json or "
            f".hydra/config.yaml){why}"
        )
    out_dir = Path(out) if out is not None else root
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(
            f"report: --out {str(out_dir)!r} is a file; name a directory (created when missing)"
        )
    compute_ratios(runs)
    groups = group_runs(runs)
    if arms:
        groups = select_arms(groups, arms, baseline)
        kept = {id(r) for g in groups for r in g.runs}
        runs = [r for r in runs if id(r) in kept]
    bases = resolve_baselines(groups, baseline)  # an unknown --baseline stops here, nothing written
    resolve_margins(groups, margins)  # so does a bad or contradicting margin
    refuse_links(out_dir)  # so does a link planted where a file will be written
    out_dir.mkdir(parents=True, exist_ok=True)
    columns = write_csv(runs, out_dir / "report.csv", root)
    stat_rows, run_rows, info = arm_statistics(groups, baseline, margins)
    write_stats_csv(stat_rows, out_dir / "stats.csv")
    write_runs_csv(run_rows, out_dir / "runs.csv")
    write_history_csv(history_rows(groups), out_dir / "history.csv")
    base_groups = [g for g in bases.values() if g is not None]
    plots = write_plots(runs, groups, out_dir, base_groups, root.resolve().name)
    several = any(len(g.runs) > 1 for g in groups)
    stat_lines = statistics_markdown(stat_rows, info) if several else single_seed_lines(groups)
    write_markdown(runs, groups, out_dir / "report.md", root, stat_lines, skipped)
    logged = log_to_wandb(runs, columns, out_dir, root, plots) if wandb_log else []
    written = [out_dir / name for name in ("report.md", "report.csv", "stats.csv", "runs.csv", "history.csv")]
    written += plots + ([out_dir / IDS_NAME] if logged and (out_dir / IDS_NAME).is_file() else [])
    return {
        "files": written,
        "single_seed": not several,
        "runs": len(runs),
        "ok": sum(r.status == "ok" for r in runs),
        "bad": [str(r.path) for r in runs if r.status != "ok"],
        "skipped": [(str(p), why) for p, why in skipped],
        "groups": len(groups),
        "csv": out_dir / "report.csv",
        "stats_csv": out_dir / "stats.csv",
        "runs_csv": out_dir / "runs.csv",
        "history_csv": out_dir / "history.csv",
        "stats": stat_rows,
        "md": out_dir / "report.md",
        "plots": plots,
        "wandb_groups": logged,
    }
