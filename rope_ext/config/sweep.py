"""A sweep's jobs, expanded exactly as Hydra's basic sweeper does: the composed config's
``hydra.sweeper.params`` (what an ``experiment=`` preset declares) followed by the command-line
overrides, parsed by Hydra's ``OverridesParser`` and split into jobs by ``BasicSweeper.split_arguments``.

A sweep has at most ``MAX_JOBS`` jobs: its size is counted from the override grammar (the product of
each sweep's length, ``range(...)`` by arithmetic) before any job is composed, so ``seed=range(0,10000)``
is refused at once rather than after validating thousands of jobs."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from rope_ext.config.compose import CONF, compose_error, composer
from rope_ext.config.hydra_node import check_code, check_paths
from rope_ext.config.rules import validate
from rope_ext.errors import ConfigError

MAX_JOBS = 4096


def list_jobs(overrides: list[str], conf_dir: Path | str = CONF, **sources: Any) -> list[list[str]]:
    """The overrides of every job ``python train.py -m <overrides>`` launches, in launch order; a
    ConfigError when they cannot be parsed or composed, or make more than ``MAX_JOBS`` jobs. ``sources``:
    ``composer``'s ``config_name`` and ``extra_dir``."""
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as err:  # noqa: BLE001  (Hydra's parse error: one paragraph)
        raise compose_error(err, overrides) from None
    check_size(parsed)
    # Hydra composes a multirun's config without its sweep overrides; so do we, to read the preset's params
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    with composer(conf_dir, **sources) as compose_job:
        cfg = compose_job(fixed)
        params = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
        sweep_args = [f"{k}={v}" for k, v in params.items()]
        # the task's own overrides, as Hydra hands them to the sweeper (hydra.* ones configure Hydra)
        sweep_args += [line for line in overrides if line not in hydra_overrides(overrides)]
        loader = GlobalHydra.instance().config_loader()
        try:
            full = OverridesParser.create(config_loader=loader).parse_overrides(sweep_args)
            check_size(full)
            batches = BasicSweeper.split_arguments(full, max_batch_size=None)
        except Exception as err:  # noqa: BLE001
            raise compose_error(err, sweep_args) from None
    return [list(job) for batch in batches for job in batch]


def check_size(parsed: list[Any]) -> None:
    """ConfigError when the parsed overrides make more than ``MAX_JOBS`` jobs (counted, not expanded)."""
    count, sizes = 1, []
    for override in parsed:
        if override.is_sweep_override():
            size = _sweep_length(override.value())
            count *= size
            sizes.append(f"{override.input_line} ({size})")
    if count > MAX_JOBS:
        raise ConfigError(
            f"the sweep {' x '.join(sizes)} makes {count} jobs; allowed: at most {MAX_JOBS} jobs per command "
            "(rope_ext.config.sweep.MAX_JOBS). Split it into several commands."
        )


def _sweep_length(sweep: Any) -> int:
    """How many values a sweep override takes: a choice's list, a range's length by arithmetic (a glob
    is expanded by Hydra's config loader before it is counted: 1 here)."""
    from hydra.core.override_parser.types import ChoiceSweep, RangeSweep

    if isinstance(sweep, ChoiceSweep):
        return len(sweep.list)
    if isinstance(sweep, RangeSweep) and sweep.step:
        return max(0, math.ceil((sweep.stop - sweep.start) / sweep.step))
    return 1


def check_jobs(
    jobs: list[list[str]], conf_dir: Path | str = CONF, *, own: list[str] = (), **sources: Any
) -> list[str | None]:
    """Per job, the ``ConfigError`` its run would stop with (``config.validate`` and the Hydra node's
    rules, ``config.hydra_node``), or None. ``own``: the command's ``hydra.*`` overrides
    (``hydra_overrides``), which apply to every job."""
    problems: list[str | None] = []
    with composer(conf_dir, **sources) as compose_job:
        for job in jobs:
            try:
                check_job(compose_job([*job, *own]), multirun=True)
                problems.append(None)
            except ConfigError as err:
                problems.append(str(err))
    return problems


def hydra_overrides(overrides: list[str]) -> list[str]:
    """The overrides that configure Hydra itself (``hydra.*``): every job of a sweep gets them."""
    return [o for o in overrides if o.lstrip("+~").startswith("hydra.")]


def check_job(cfg: Any, *, multirun: bool) -> None:
    """Every check of one composed job: its values (``validate``) and its Hydra node (``check_hydra_node``)."""
    check_code(cfg)
    validate(cfg, multirun=multirun)
    check_paths(cfg, multirun=multirun)
