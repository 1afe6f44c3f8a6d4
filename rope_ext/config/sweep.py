"""A sweep's jobs, expanded exactly as Hydra's basic sweeper does: the composed config's
``hydra.sweeper.params`` (what an ``experiment=`` preset declares) followed by the command-line
overrides, parsed by Hydra's ``OverridesParser`` and split into jobs by ``BasicSweeper.split_arguments``."""

from __future__ import annotations

from pathlib import Path

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from rope_ext.config.compose import CONF, compose_error, composer
from rope_ext.config.rules import validate
from rope_ext.errors import ConfigError


def list_jobs(overrides: list[str], conf_dir: Path = CONF) -> list[list[str]]:
    """The overrides of every job ``python train.py -m <overrides>`` launches, in launch order; a
    ConfigError when they cannot be parsed or composed."""
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
    problems: list[str | None] = []
    with composer(conf_dir) as compose_job:
        for job in jobs:
            try:
                validate(compose_job(job), multirun=True)
                problems.append(None)
            except ConfigError as err:
                problems.append(str(err))
    return problems
