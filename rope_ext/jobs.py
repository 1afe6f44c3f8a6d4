"""List the jobs a multirun would launch, without running any: ``python -m rope_ext.jobs [overrides]``.

``python train.py -m ... --cfg job`` is refused by Hydra and ``--cfg job`` alone shows one job, so a
sweep's size was only known once it ran. This module expands a sweep exactly as Hydra's basic sweeper
does: the composed config's ``hydra.sweeper.params`` (what an ``experiment=`` preset declares) followed
by the command-line overrides, parsed by Hydra's ``OverridesParser`` and split into jobs by
``BasicSweeper.split_arguments``. It prints the number of jobs and each job's overrides::

    python -m rope_ext.jobs experiment=original/sweep_arms
    python -m rope_ext.jobs pe=axial_block pe.block=2,3,4,5,6 seed=0,1
    python -m rope_ext.jobs --check pe.block=2,3,7      # also runs train.py's checks on every job
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from rope_ext.config import CONF  # also registers the schema and the resolvers conf/config.yaml uses


def list_jobs(overrides: list[str], conf_dir: Path = CONF) -> list[list[str]]:
    """The overrides of every job ``python train.py -m <overrides>`` launches, in launch order; a
    ConfigError when they cannot be parsed or composed."""
    from rope_ext.config import compose_error, composer

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as err:  # noqa: BLE001  (Hydra's parse error: one paragraph)
        raise compose_error(err, overrides) from None
    # Hydra composes a multirun's config without its sweep overrides; so do we, to read the preset's params
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    with composer(conf_dir) as compose_job:
        cfg = compose_job(fixed)
        params = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
        sweep_args = [f"{k}={v}" for k, v in params.items()]
        # the task's own overrides, as Hydra hands them to the sweeper (hydra.* ones configure Hydra)
        sweep_args += [line for line in overrides if not line.lstrip("+~").startswith("hydra.")]
        loader = GlobalHydra.instance().config_loader()
        try:
            full = OverridesParser.create(config_loader=loader).parse_overrides(sweep_args)
            batches = BasicSweeper.split_arguments(full, max_batch_size=None)
        except Exception as err:  # noqa: BLE001
            raise compose_error(err, sweep_args) from None
    return [list(job) for batch in batches for job in batch]


def check_jobs(jobs: list[list[str]], conf_dir: Path = CONF) -> list[str | None]:
    """Per job, the ``ConfigError`` its run would stop with (``config.validate``), or None."""
    from rope_ext.config import ConfigError, composer, validate

    problems: list[str | None] = []
    with composer(conf_dir) as compose_job:
        for job in jobs:
            try:
                validate(compose_job(job), multirun=True)
                problems.append(None)
            except ConfigError as err:
                problems.append(str(err))
    return problems


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
    from rope_ext.config import ConfigError

    try:
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
