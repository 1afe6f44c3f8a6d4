"""A user's own encodings and datasets, with no edit of the package: modules named by the top-level key
``plugins=[...]`` (dotted module names or ``.py`` paths) or by the environment variable
``ROPE_EXT_MODULES`` (``os.pathsep``-separated), imported before Hydra composes the config so that the
ConfigStore nodes ``pe/<name>`` and ``dataset/<name>`` they add exist. Importing a module runs its
``register(...)`` calls (``rope_ext.data.registry``, the encoding registry).

The entry points (``train.py``, ``python -m rope_ext.jobs``, ``--help``) read ``plugins=`` from the
command line first; the modules loaded are added to ``ROPE_EXT_MODULES`` so that processes a launcher
starts (submitit, SLURM: they inherit the environment) import them again, under the same module names,
when this module is imported, i.e. before a pickled config that names their classes is read. The job
itself loads its config's ``plugins`` again before building.
"""

from __future__ import annotations

import os
from pathlib import Path

from rope_ext.encoding import registry
from rope_ext.errors import ConfigError

ENV = registry.ENV_VAR  # ROPE_EXT_MODULES
KEY = "plugins"


def load(spec: str) -> str:
    """Import one plugin once per process, through the encoding registry's loader (one loader: a module
    that registers encodings and datasets is imported once, under one name); returns its module name.
    ConfigError naming it when it cannot be imported."""
    try:
        registry.load_module(spec, origin=f"{KEY}=[{spec}]")
    except ValueError as err:
        raise ConfigError(f"{err}.") from None
    name = module_name(spec)
    _ORIGINS.setdefault(name, str(Path(spec).expanduser().resolve()) if _is_path(spec) else spec)
    return name


def module_name(spec: str) -> str:
    """The name a plugin is imported under (the registry's: a ``.py`` path's from its resolved path)."""
    return registry._module_name_for(Path(spec).expanduser().resolve()) if _is_path(spec) else spec


def _is_path(spec: str) -> bool:
    return spec.endswith(".py") or os.sep in spec or bool(os.altsep and os.altsep in spec)


# module name -> the spec it was loaded from (a .py path's module is not importable by its name)
_ORIGINS: dict[str, str] = {}


def origin_of(module: str) -> str:
    """What ``load`` takes to import ``module`` again in another process."""
    return _ORIGINS.get(module, module)


def load_all(specs: list[str] | tuple[str, ...]) -> list[str]:
    """Import every plugin and record it in ``ROPE_EXT_MODULES`` for the processes this one starts."""
    names = [load(str(spec)) for spec in specs]
    known = [s for s in os.environ.get(ENV, "").split(os.pathsep) if s]
    added = [str(s) for s in specs if str(s) not in known]
    if added:
        os.environ[ENV] = os.pathsep.join(known + added)
    return names


def from_overrides(overrides: list[str]) -> list[str]:
    """The modules a command's ``plugins=...`` override names (every value of a sweep over it)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    mine = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] == KEY and "=" in o]
    if not mine:
        return []
    specs: list[str] = []
    for override in OverridesParser.create().parse_overrides(mine):
        values = list(override.sweep_iterator()) if override.is_sweep_override() else [override.value()]
        for value in values:
            specs += (
                [str(v) for v in value] if isinstance(value, list) else [] if value is None else [str(value)]
            )
    return list(dict.fromkeys(specs))


def load_env() -> list[str]:
    """Import the modules ``ROPE_EXT_MODULES`` names."""
    return [load(s) for s in os.environ.get(ENV, "").split(os.pathsep) if s]


load_env()
