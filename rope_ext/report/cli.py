"""The command line of the report: ``python -m rope_ext.report DIR [--out OUT] [--no-wandb] [--baseline ARM]``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from rope_ext.report.write import write_report

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Write the report of ``DIR``; print report.md. Exit status 2 when DIR holds no runs."""
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
        help="the arm every other arm is compared with (an experiment/arm name such as axial2_complex, or a "
        "variant label); default: none (APE) when present",
    )
    args = parser.parse_args(argv)
    try:
        summary = write_report(args.dir, args.out, wandb_log=not args.no_wandb, baseline=args.baseline)
    except FileNotFoundError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(Path(summary["md"]).read_text())
    print(f"wrote {summary['csv']}, {summary['md']} and {len(summary['plots'])} plots", file=sys.stderr)
    if summary["bad"]:
        print(f"{len(summary['bad'])} missing or failed runs (listed in report.md)", file=sys.stderr)
    return 0
