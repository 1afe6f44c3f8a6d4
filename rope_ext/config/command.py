"""A ``train.py`` command checked before Hydra writes anything: its plugins loaded, its overrides read as
data (no interpolation in a value, no key given twice, a bounded sweep), its config composed with Hydra's
compose API from the same sources Hydra reads (``--config-path``, ``--config-name``, ``--config-dir``,
``hydra.searchpath``) and validated (every job of a sweep, its Hydra node included), and what Hydra is
about to write checked for links and a writable disk (``rope_ext.safety.check_before_hydra``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from rope_ext import plugins
from rope_ext.config.compose import CONF, compose_error, composer, register_nodes
from rope_ext.config.hydra_node import check_path
from rope_ext.config.sweep import check_job, hydra_overrides, list_jobs
from rope_ext.errors import ConfigError
from rope_ext.safety import HYDRA_FILES, check_before_hydra

__all__ = ["check_command", "check_overrides", "check_path", "config_sources"]

# the directory --config-path is relative to: the module that declares @hydra.main
APP_DIR = Path(__file__).resolve().parent.parent


def check_command(argv: list[str], conf_dir: Path = CONF) -> None:
    """Check ``python train.py <argv>`` completely (module docstring), raising ConfigError (its
    ``RunDirUnwritable`` subclass, exit 4, when the disk cannot be written); commands that run no job
    (``--help``, ``--cfg``, ``--info``) are left to Hydra after the plugins they name are loaded."""
    from hydra._internal.utils import get_args_parser

    args = get_args_parser().parse_args(argv)
    if args.experimental_rerun:
        raise ConfigError.bad_value(
            "--experimental-rerun",
            args.experimental_rerun,
            "rerunning the same command (it resumes from the run's checkpoint)",
            "Hydra unpickles the file it names, which runs code",
        )
    plugins.load_all(plugins.from_overrides(args.overrides))
    register_nodes(conf_dir)  # pe/<name>, dataset/<name> of the plugins, for Hydra's own run too
    if args.help or args.hydra_help or args.info or args.shell_completion or args.cfg:
        return
    overrides = list(args.overrides)
    check_overrides(overrides)
    sources = config_sources(args, conf_dir)
    if args.multirun or _mode_is_multirun(overrides, sources):
        _check_sweep(overrides, sources)
        return
    with composer(**sources) as compose_job:
        cfg = compose_job(overrides)
    check_job(cfg, multirun=False)
    _check_files(cfg, Path(str(cfg.hydra.run.dir)))


def _mode_is_multirun(overrides: list[str], sources: dict[str, Any]) -> bool:
    """``hydra.mode=MULTIRUN`` (a preset's or an override's) makes a command without ``-m`` a sweep; Hydra
    reads it from the config composed without the sweep overrides, as here."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    with composer(**sources) as compose_job:
        cfg = compose_job([o.input_line for o in parsed if not o.is_sweep_override()])
    return str(cfg.hydra.mode) == "RunMode.MULTIRUN"


def config_sources(args: Any, conf_dir: Path | str = CONF) -> dict[str, Any]:
    """``composer``'s arguments for the config ``--config-path``, ``--config-name`` and ``--config-dir``
    select, as ``@hydra.main`` resolves them (a relative ``--config-path`` from the app's module)."""
    primary: Path | str = conf_dir
    if args.config_path is not None:
        given = str(args.config_path)
        primary = given if given.startswith("pkg://") or Path(given).is_absolute() else APP_DIR / given
    if args.config_dir is not None and not Path(args.config_dir).is_dir():
        raise ConfigError.bad_value("--config-dir", args.config_dir, "an existing directory of config files")
    return {"conf_dir": primary, "config_name": args.config_name or "config", "extra_dir": args.config_dir}


# Resolvers a command-line value may call: they read the job's own config (a sweep's job directory named
# by its values, hydra.sweep.subdir=b${pe.block}); any other (now, oc.env, oc.decode, ...) reads the clock
# or the environment, so the same command would mean something else on a rerun.
ALLOWED_RESOLVERS = frozenset({"hydra", "rope_ext.slug"})
RESOLVER_CALL = re.compile(r"\$\{\s*([\w.]+)\s*:")


def check_overrides(overrides: list[str]) -> None:
    """Command-line values are data: no resolver but ``ALLOWED_RESOLVERS`` (``run_id=${now:%H}`` would
    name a new run every hour, ``${oc.env:...}`` copies the environment into the record; a plain
    ``${key}`` reference to the config is deterministic and allowed), and no key given twice (Hydra would
    keep the last one silently)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as err:  # noqa: BLE001  (Hydra's parse error: one paragraph)
        raise compose_error(err, overrides) from None
    seen: dict[str, str] = {}
    for override in parsed:
        line = override.input_line
        key, _, value = line.partition("=")
        called = [name for name in RESOLVER_CALL.findall(value) if name not in ALLOWED_RESOLVERS]
        if called:
            raise ConfigError.bad_value(
                key.lstrip("+~"),
                value,
                "a value without resolvers (${key} references to the config and the "
                f"{', '.join(sorted(ALLOWED_RESOLVERS))} resolvers only)",
                f"the {called[0]} resolver reads the clock or the environment: the same command would mean "
                "something else on a rerun",
            )
        name = override.get_key_element().lstrip("+~")
        if name in seen:
            raise ConfigError(
                f"{name} is given twice ({seen[name]!r} and {line!r}); allowed: each key once. Hydra would "
                "keep the last silently."
            )
        seen[name] = line


def _check_sweep(overrides: list[str], sources: dict[str, Any]) -> None:
    """Every job of the sweep composed and checked, then what Hydra writes for it (links, disk)."""
    jobs = list_jobs(overrides, **sources)
    own = hydra_overrides(overrides)
    with composer(**sources) as compose_job:
        for i, job in enumerate(jobs):
            try:
                cfg = compose_job([*job, *own])
                check_job(cfg, multirun=True)
                sweep_dir = Path(str(cfg.hydra.sweep.dir))
                _check_files(cfg, sweep_dir / str(cfg.hydra.sweep.subdir), sweep_dir)
            except ConfigError as err:
                raise type(err)(f"job #{i} of the sweep's {len(jobs)} ({' '.join(job)}): {err}") from None


def _check_files(cfg: Any, run_dir: Path, sweep_dir: Path | None = None) -> None:
    """The run directory, ``.hydra/`` and its files and the log: no links, a writable disk."""
    files = [f"{cfg.hydra.job.name}.log"]
    subdir = cfg.hydra.output_subdir
    if subdir is not None:
        files += [f"{subdir}/", *(f"{subdir}/{name}" for name in HYDRA_FILES)]
    if sweep_dir is not None:
        check_before_hydra(sweep_dir, ["multirun.yaml"])
    check_before_hydra(run_dir, files)
