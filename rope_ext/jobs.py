"""List the jobs a multirun would launch, without running any: ``python -m rope_ext.jobs [overrides]``.

``python train.py -m ... --cfg job`` is refused by Hydra and ``--cfg job`` alone shows one job, so a
sweep's size was only known once it ran. This command expands a sweep exactly as Hydra's basic sweeper
does (``rope_ext.config.sweep``), after loading the modules ``plugins=[...]`` names. It prints the number of jobs and each job's overrides::

    python -m rope_ext.jobs experiment=original/sweep_arms
    python -m rope_ext.jobs pe=axial_block pe.block=2,3,4,5,6 seed=0,1
    python -m rope_ext.jobs --check pe.block=2,3,7      # also runs train.py's checks on every job
"""

from __future__ import annotations

import argparse
import os
import sys

from rope_ext import plugins
from rope_ext.config import ConfigError, check_jobs, list_jobs  # also registers the schema and the resolvers


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m rope_ext.jobs",
        description="Print the jobs `python train.py -m <overrides>` would launch, without running them.",
    )
    ap.add_argument("overrides", nargs="*", help="the overrides you would give train.py -m")
    ap.add_argument(
        "--check",
        action="store_true",
        help="also compose every job and run the checks train.py runs first (exit 2 if any job would stop)",
    )
    args = ap.parse_args(argv)
    try:
        plugins.load_all(plugins.from_overrides(args.overrides))  # their pe/dataset options exist
        jobs = list_jobs(args.overrides)
        problems = check_jobs(jobs) if args.check else [None] * len(jobs)
    except ConfigError as err:
        print(f"python -m rope_ext.jobs: {err}", file=sys.stderr)
        return 2
    print(f"{len(jobs)} job{'s' if len(jobs) != 1 else ''}: python train.py -m {' '.join(args.overrides)}")
    for i, (job, problem) in enumerate(zip(jobs, problems)):
        print(f"#{i} {' '.join(job)}" + (f"\n   refused: {problem}" if problem else ""))
    if any(problems):
        print(f"{sum(map(bool, problems))} of {len(jobs)} jobs would stop before training.")
        return 2
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # `python -m rope_ext.jobs ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        sys.exit(0)
