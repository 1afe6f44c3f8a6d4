"""List the jobs a multirun would launch, without running any: ``python -m rope_ext.jobs [overrides]``.

``python train.py -m ... --cfg job`` is refused by Hydra and ``--cfg job`` alone shows one job, so a
sweep's size was only known once it ran. This command expands a sweep exactly as Hydra's basic sweeper
does (``rope_ext.config.sweep``), after loading the modules ``plugins=[...]`` names. It prints the number
of jobs, the sweep directory they will write (``sweep_directory``) and each job's overrides::

    python -m rope_ext.jobs experiment=original/sweep_arms
    python -m rope_ext.jobs pe=axial_block pe.block=2,3,4,5,6 seed=0,1
    python -m rope_ext.jobs --check pe.block=2,3,7      # also runs train.py's checks on every job
"""

from __future__ import annotations

import argparse
import os
import sys

from rope_ext import plugins
from rope_ext.config import CONF, ConfigError, check_jobs, composer, list_jobs, slug  # + the resolvers
from rope_ext.config.sweep import hydra_overrides


def sweep_directory(overrides: list[str]) -> str:
    """The directory ``python train.py -m <overrides>`` writes its jobs under, as
    ``rope_ext.summary.SweepCallback`` names it when the multirun starts: ``hydra.sweep.dir`` where the
    command sets it, else ``multirun/<run_id>`` or ``multirun/<the sweep's overrides>`` (``slug``)."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.types import RunMode

    with composer(CONF):
        loader = GlobalHydra.instance().config_loader()
        hydra_cfg = loader.load_configuration("config", list(overrides), RunMode.MULTIRUN).hydra
        if any(o.startswith(("hydra.sweep.dir=", "++hydra.sweep.dir=")) for o in hydra_cfg.overrides.hydra):
            return str(hydra_cfg.sweep.dir)
        parsed = OverridesParser.create().parse_overrides(list(hydra_cfg.overrides.task))
        run_id = next((str(o.value()) for o in parsed if o.get_key_element() == "run_id"), None)
        return "multirun/" + slug(run_id if run_id else hydra_cfg.job.override_dirname)


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
        problems = check_jobs(jobs, own=hydra_overrides(args.overrides)) if args.check else [None] * len(jobs)
        sweep_dir = sweep_directory(args.overrides)
    except ConfigError as err:
        print(f"python -m rope_ext.jobs: {err}", file=sys.stderr)
        return 2
    print(f"{len(jobs)} job{'s' if len(jobs) != 1 else ''}: python train.py -m {' '.join(args.overrides)}")
    print(f"sweep directory: {sweep_dir}/")
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
