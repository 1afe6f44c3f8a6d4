"""The command line of the report: ``python -m rope_ext.report DIR [--out OUT] [--no-wandb] [--baseline ARM]
[--arms A,B] [--margin M] [--margin-extrap M]``, or ``python -m rope_ext.report --from-rows FOLDER`` to
recompute a committed report from its rows (``rope_ext.report.rows``)."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rope_ext import safe_io
from rope_ext.report.arms import MARGIN_KEYS, BaselineError, MarginError, Margins
from rope_ext.report.write import write_report

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Write the report of ``DIR``; print a short summary, the files written and report.md's path. Exit
    status 2 when DIR holds no readable runs, ``--out`` is a file or holds a link where a report file goes,
    ``--baseline`` or ``--arms`` names no arm (``--baseline`` several of one table) or a margin is not a
    number > 0, differs between runs of one table or contradicts the runs' recorded one; 4 when the output
    cannot be written."""
    parser = argparse.ArgumentParser(
        prog="python -m rope_ext.report",
        description="Tabulate and plot the runs of a sweep (or a whole outputs/ directory).",
    )
    parser.add_argument("dir", help="a multirun sweep directory, a run directory, or outputs/")
    parser.add_argument(
        "--from-rows",
        action="store_true",
        help="DIR is a committed report folder (runs.csv, history.csv, report.csv): recompute its statistics "
        "from those rows, the run directories being gone",
    )
    parser.add_argument("--out", default=None, help="where to write the report (default: DIR)")
    parser.add_argument("--no-wandb", action="store_true", help="do not log the table to W&B")
    parser.add_argument(
        "--baseline",
        default=None,
        help="the arm every other arm is compared with: its name as the report shows it (pe.block=2, an "
        "experiment/arm name such as axial2_complex), key=value overrides that single it out, or a variant "
        "label (axial_block N=2 fast); default: none (APE) when present. Unknown: exit 2 listing the arms",
    )
    parser.add_argument(
        "--arms",
        default=None,
        help="comma-separated arms (named as for --baseline) to report with the baseline, the rest of DIR "
        "left out: planned contrasts get their own Holm family. Unknown: exit 2 listing the arms",
    )
    parser.add_argument(
        "--margin",
        type=float,
        default=None,
        help="equivalence margin in accuracy points at the training size, for runs that recorded no "
        f"{MARGIN_KEYS['train']} (one they recorded wins; a different value here exits 2)",
    )
    parser.add_argument(
        "--margin-extrap",
        type=float,
        default=None,
        help=f"the same at every other evaluation size (runs' {MARGIN_KEYS['extrap']})",
    )
    args = parser.parse_args(argv)
    if args.from_rows:
        # a committed report is recomputed in place, with the baseline and arms its rows record
        given = [f"--{k}" for k in ("out", "baseline", "arms") if getattr(args, k, None)]
        if given:
            print(
                f"report: --from-rows recomputes DIR in place; {', '.join(given)} cannot be used with it",
                file=sys.stderr,
            )
            return 2
        return _from_rows(args.dir)
    try:
        summary = write_report(
            args.dir,
            args.out,
            wandb_log=not args.no_wandb,
            baseline=args.baseline,
            margins=Margins(args.margin, args.margin_extrap),
            arms=[a for a in (args.arms or "").split(",") if a],
        )
    except (
        FileNotFoundError,
        NotADirectoryError,
        BaselineError,
        MarginError,
        safe_io.UnsafePathError,
    ) as exc:
        print(exc, file=sys.stderr)
        return 2
    except OSError as exc:  # the output cannot be written (permissions, disk full)
        print(f"report: cannot write the report: {exc}", file=sys.stderr)
        return 4
    _print_summary(summary)
    return 0


def _print_summary(summary: dict[str, Any]) -> None:
    """A few lines for the terminal: runs, arms, verdicts, every file written, where report.md is."""
    verdicts = Counter(r.get("verdict_holm") for r in summary["stats"] if r.get("verdict_holm"))
    print(f"{summary['runs']} runs ({summary['ok']} ok) in {summary['groups']} arms.")
    if summary["single_seed"]:
        print(
            "1 seed per arm: no statistics; add seeds (e.g. seed=0,1,2) for confidence intervals and tests."
        )
    elif verdicts:
        print("Verdicts (each comparison alone, Holm): " + ", ".join(f"{n} {v}" for v, n in verdicts.items()))
    names = [Path(p).name for p in summary["files"]]
    logged = summary["wandb_groups"]
    wandb = f" and a W&B run per group ({', '.join(logged)})" if logged else ""
    print(f"wrote {', '.join(names)} in {Path(summary['md']).parent}{wandb}")
    print(f"report: {summary['md']}")
    if summary["skipped"]:
        print(
            f"{len(summary['skipped'])} run directories could not be read and were left out:", file=sys.stderr
        )
        for path, why in summary["skipped"]:
            print(f"  {path}: {why}", file=sys.stderr)
    if summary["bad"]:
        print(
            f"{len(summary['bad'])} missing, failed or interrupted runs (listed in report.md)",
            file=sys.stderr,
        )


def _from_rows(folder: str) -> int:
    from rope_ext.report.rows import report_from_rows

    try:
        summary = report_from_rows(folder)
    except FileNotFoundError as exc:
        print(exc, file=sys.stderr)
        return 2
    except safe_io.UnsafePathError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"recomputed stats.csv, runs.csv, history.csv and report.md's statistics from the rows in {folder}")
    print(f"report: {summary['md']}")
    return 0
