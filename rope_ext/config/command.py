"""A ``train.py`` command checked before Hydra writes anything: its plugins loaded, its config composed
with Hydra's compose API and validated (every job of a sweep)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rope_ext import plugins
from rope_ext.config.compose import CONF, composer, register_nodes
from rope_ext.config.rules import validate
from rope_ext.config.sweep import list_jobs
from rope_ext.errors import ConfigError
from rope_ext.safety import COMPONENT_ALLOWED, check_component


def check_command(argv: list[str], conf_dir: Path = CONF) -> None:
    """Compose the config of ``python train.py <argv>`` (every job of a sweep) and validate it, raising
    ConfigError; commands that run no job (``--help``, ``--cfg``, another config) are left to Hydra
    (after the plugins the command names are loaded, so that their options exist)."""
    from hydra._internal.utils import get_args_parser

    args = get_args_parser().parse_args(argv)
    plugins.load_all(plugins.from_overrides(args.overrides))
    register_nodes(conf_dir)  # pe/<name>, dataset/<name> of the plugins, for Hydra's own run too
    if args.help or args.hydra_help or args.info or args.shell_completion or args.cfg:
        return
    if args.config_name or args.config_path or args.config_dir or args.experimental_rerun:
        return
    overrides = list(args.overrides)
    if not args.multirun:
        with composer(conf_dir) as compose_job:
            validate(compose_job(overrides))
        return
    jobs = list_jobs(overrides, conf_dir)
    own = [o for o in overrides if o.lstrip("+~").startswith("hydra.")]
    with composer(conf_dir) as compose_job:
        for i, job in enumerate(jobs):
            try:
                cfg = compose_job([*job, *own])
                validate(cfg, multirun=True)
                check_path("hydra.sweep.subdir", cfg.hydra.sweep.subdir)
            except ConfigError as err:
                raise ConfigError(f"job #{i} of the sweep's {len(jobs)} ({' '.join(job)}): {err}") from None


def check_path(key: str, value: Any) -> None:
    """A relative path below its parent: every component a safe directory name (no ``..``)."""
    text = str(value)
    try:
        if text.startswith(("/", "~")):
            raise ConfigError(text)
        for part in text.split("/"):
            check_component(key, part)
    except ConfigError:
        raise ConfigError.bad_value(
            key, text, f"a relative path, each component {COMPONENT_ALLOWED}", "it names the job directory"
        ) from None
