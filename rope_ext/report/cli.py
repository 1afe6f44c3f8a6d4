"""The command line of the report: ``python -m rope_ext.report DIR [--out OUT] [--no-wandb] [--baseline ARM]
[--arms A,B] [--margin M] [--margin-extrap M]``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from rope_ext.report.arms import MARGIN_KEYS, BaselineError, MarginError, Margins
from rope_ext.report.write import write_report

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Write the report of ``DIR``; print report.md. Exit status 2 when DIR holds no readable runs, ``--out``
    is a file, ``--baseline`` or ``--arms`` names no arm (``--baseline`` several of one table) or a margin
    is not a number > 0, differs between runs of one table or contradicts the runs' recorded one; 4 when
    the output cannot be written."""
    parser = argparse.ArgumentParser(
        prog="python -m rope_ext.report",
        description="Tabulate and plot the runs of a sweep (or a whole outputs/ directory).",
    )
    parser.add_argument("dir", help="a multirun sweep directory, a run directory, or outputs/")
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
    try:
        summary = write_report(
            args.dir,
            args.out,
            wandb_log=not args.no_wandb,
            baseline=args.baseline,
            margins=Margins(args.margin, args.margin_extrap),
            arms=[a for a in (args.arms or "").split(",") if a],
        )
    except (FileNotFoundError, NotADirectoryError, BaselineError, MarginError) as exc:
        print(exc, file=sys.stderr)
        return 2
    except OSError as exc:  # the output cannot be written (permissions, disk full)
        print(f"report: cannot write the report: {exc}", file=sys.stderr)
        return 4
    print(Path(summary["md"]).read_text())
    print(f"wrote {summary['csv']}, {summary['md']} and {len(summary['plots'])} plots", file=sys.stderr)
    if summary["skipped"]:
        print(
            f"{len(summary['skipped'])} run directories could not be read and were left out:", file=sys.stderr
        )
        for path, why in summary["skipped"]:
            print(f"  {path}: {why}", file=sys.stderr)
    if summary["bad"]:
        print(f"{len(summary['bad'])} missing or failed runs (listed in report.md)", file=sys.stderr)
    return 0
