"""The Hydra node of a composed config, checked as data before Hydra acts on it.

Hydra instantiates every ``_target_`` of ``hydra.callbacks``, ``hydra.launcher`` and ``hydra.sweeper``,
hands ``hydra.job_logging`` to ``logging.config.dictConfig`` (whose ``()``, ``class`` and ``ext://``
values import and call), exports ``hydra.job.env_set`` and writes below the paths its keys name. On a
shared cluster a config file found on a search path, or one override, would then run code or write
anywhere, so a run accepts only:

* ``_target_`` (anywhere in the config): the project's own, ``ALLOWED_TARGETS``;
* logging factories: ``LOGGING_FACTORIES``; ``ext://`` values: ``ext://sys.stdout``/``ext://sys.stderr``;
  a handler's ``filename``: the run's own log, ``TRAIN_LOG`` (inside the run directory);
* ``hydra.job.env_set``: empty (environment variables such as ``LD_PRELOAD`` or ``PYTHONPATH`` run code);
* paths (the rule of ``run_id``, ``rope_ext.safety.check_component``, for every component):
  ``hydra.run.dir`` is ``outputs/<components>``, ``hydra.sweep.dir`` is ``multirun/<components>``,
  ``hydra.sweep.subdir`` and ``hydra.output_subdir`` are relative components, ``hydra.job.name`` is one.
"""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from rope_ext.errors import ConfigError
from rope_ext.safety import COMPONENT_ALLOWED, check_component

ALLOWED_TARGETS = frozenset(
    {
        "rope_ext.summary.SweepCallback",
        "rope_ext.launch.SlurmMemory",
        "rope_ext.launch.SlurmStates",
        "hydra._internal.core_plugins.basic_launcher.BasicLauncher",
        "hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
        "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher",
        "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
    }
)
LOGGING_FACTORIES = frozenset({"logging.StreamHandler", "logging.FileHandler", "logging.Formatter"})
EXT_STREAMS = frozenset({"ext://sys.stdout", "ext://sys.stderr"})
TRAIN_LOG = "${hydra.runtime.output_dir}/${hydra.job.name}.log"
RUN_ROOT, SWEEP_ROOT = "outputs", "multirun"


def check_hydra_node(cfg: Any, *, multirun: bool) -> None:
    """Raise ConfigError unless the composed config (with its ``hydra`` node) is data the harness accepts
    (the module docstring's rules)."""
    check_code(cfg)
    check_paths(cfg, multirun=multirun)


def check_code(cfg: Any) -> None:
    """Nothing in the config makes Hydra or ``logging`` import or run anything but the harness's own."""
    tree = OmegaConf.to_container(cfg, resolve=False) if OmegaConf.is_config(cfg) else cfg
    _check_targets(tree, "")
    hydra = tree.get("hydra") or {}
    for node in ("job_logging", "hydra_logging"):
        _check_logging(hydra.get(node) or {}, f"hydra.{node}")
    env_set = (hydra.get("job") or {}).get("env_set") or {}
    if env_set:
        key = next(iter(env_set))
        raise ConfigError.bad_value(
            f"hydra.job.env_set.{key}",
            env_set[key],
            "no hydra.job.env_set (set variables in the shell or the launcher's setup)",
            "an environment variable such as LD_PRELOAD or PYTHONPATH runs code in the job",
        )


def _check_targets(node: Any, path: str) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{key}" if path else str(key)
            if key == "_target_" and value not in ALLOWED_TARGETS:
                raise ConfigError.bad_value(
                    where,
                    value,
                    ", ".join(sorted(ALLOWED_TARGETS)),
                    "configuration is data: only the harness's own launchers, sweeper and callbacks are "
                    "instantiated",
                )
            _check_targets(value, where)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _check_targets(value, f"{path}[{i}]")


def _check_logging(node: Any, path: str) -> None:
    """``logging.config.dictConfig`` imports ``class``/``()``/``ext://`` values and opens ``filename``."""
    if isinstance(node, list):
        for i, value in enumerate(node):
            _check_logging(value, f"{path}[{i}]")
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        where = f"{path}.{key}"
        if key in ("()", "class") and value not in LOGGING_FACTORIES:
            raise ConfigError.bad_value(where, value, ", ".join(sorted(LOGGING_FACTORIES)), "it is imported")
        if isinstance(value, str) and value.startswith("ext://") and value not in EXT_STREAMS:
            raise ConfigError.bad_value(where, value, ", ".join(sorted(EXT_STREAMS)), "it is imported")
        if key == "filename" and value != TRAIN_LOG:
            raise ConfigError.bad_value(
                where, value, TRAIN_LOG, "the log is written inside the run directory"
            )
        _check_logging(value, where)


def check_paths(cfg: Any, *, multirun: bool) -> None:
    """Every Hydra key that names a path: relative, safe components, below ``outputs/``/``multirun/``."""
    hydra = cfg["hydra"]
    check_path("hydra.job.name", _resolved(hydra, "job.name"), parts=1)
    subdir = _resolved(hydra, "output_subdir", nullable=True)
    if subdir is not None:
        check_path("hydra.output_subdir", subdir)
    if multirun:
        check_path("hydra.sweep.dir", _resolved(hydra, "sweep.dir"), root=SWEEP_ROOT)
        check_path("hydra.sweep.subdir", _resolved(hydra, "sweep.subdir"))
    else:
        check_path("hydra.run.dir", _resolved(hydra, "run.dir"), root=RUN_ROOT)


def _resolved(hydra: Any, key: str, *, nullable: bool = False) -> Any:
    try:
        value = OmegaConf.select(hydra, key, throw_on_resolution_failure=True)
    except Exception as err:  # noqa: BLE001  (an interpolation Hydra fills in only when the job runs)
        raise ConfigError.bad_value(
            f"hydra.{key}",
            OmegaConf.select(hydra, key, throw_on_resolution_failure=False),
            "a path known before the run starts",
            f"{' '.join(str(err).split()[:12])}",
        ) from None
    if value is None and not nullable:
        raise ConfigError.bad_value(f"hydra.{key}", value, "a path")
    return value


def check_path(key: str, value: Any, *, root: str | None = None, parts: int | None = None) -> None:
    """A relative path of safe components (``rope_ext.safety.check_component``: no ``..``, no absolute
    path, at most 255 characters each); below ``root/`` when given; of exactly ``parts`` components when
    given."""
    text = str(value)
    components = text.split("/")
    allowed = f"a relative path, each component {COMPONENT_ALLOWED}"
    if root is not None:
        allowed = f"{root}/<name>[/<name>...], each name {COMPONENT_ALLOWED}"
    if parts == 1:
        allowed = COMPONENT_ALLOWED
    try:
        if text.startswith(("/", "~")) or (parts is not None and len(components) != parts):
            raise ConfigError(text)
        if root is not None and (components[0] != root or len(components) < 2):
            raise ConfigError(text)
        for part in components:
            check_component(key, part)
    except ConfigError:
        raise ConfigError.bad_value(
            key, text, allowed, "it names where the run's files are written"
        ) from None
