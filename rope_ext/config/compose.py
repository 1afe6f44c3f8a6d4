"""Hydra plumbing: where ``conf/`` is, the OmegaConf resolvers it uses, the ConfigStore nodes generated
from the registries (``pe/<name>`` per encoding, ``dataset/<name>`` per dataset without a YAML file, the
schema's nodes), and ``composer``: a job's config composed with Hydra's compose API, its errors as one
``ConfigError`` paragraph naming key, value and what is allowed."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rope_ext import schema
from rope_ext.config.check import allowed, unknown_keys
from rope_ext.config.help import register as register_help
from rope_ext.config.pe import encoding_names
from rope_ext.config.rules import one_line
from rope_ext.data import registry as datasets
from rope_ext.errors import ConfigError

# The one place that knows where conf/ is: inside the package (a link to the repository's conf/ in a
# checkout; the copied files in an installed package, pyproject's package-data)
CONF = Path(__file__).resolve().parent.parent / "conf"


SLUG_MAX = 100  # characters of a directory name made from overrides
# after the kept pairs of a cut name, before the hash of the whole text: Hydra's override grammar refuses
# "=" inside a value, so "<pair>,...=<hash>" cannot be read as a longer value of the last pair (as
# "pe.block=2,3,...<hash>" would be: one more sweep value) and "...=<hash>" is no override either
CUT_MARK = ",...="
# where one key=value pair of Hydra's override_dirname ends: a comma before the next key (a value may
# hold commas, e.g. eval.input_sizes=[16,20])
PAIR_END = re.compile(r",(?=[+~]*[A-Za-z_][\w./@+-]*=)")


def slug(text: Any) -> str:
    """A directory name from an override string: safe characters only, at most ``SLUG_MAX`` characters.

    A longer name keeps the whole ``key=value`` pairs that fit, then ``,...=`` and 10 hex digits of the
    sha1 of the whole text (``pe.block=2,3,seed=0,...=3f9a1c0b2d``): no pair is cut, and the hash cannot
    be read as a value (``CUT_MARK``). A first pair too long to keep whole keeps its key
    (``model.checkpoint,...=<hash>``)."""
    text = "" if text is None else str(text)
    safe = _safe(text) or "default"
    if len(safe) <= SLUG_MAX:
        return safe
    tail = CUT_MARK + hashlib.sha1(text.encode()).hexdigest()[:10]
    kept: list[str] = []
    for pair in filter(None, (_safe(p) for p in PAIR_END.split(text))):
        if len(",".join([*kept, pair])) + len(tail) > SLUG_MAX:
            break
        kept.append(pair)
    if not kept:
        kept = [_safe(text.split("=", 1)[0])[: SLUG_MAX - len(tail)]]
    return ",".join(kept) + tail


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=,+\-]+", "_", text).strip("_.")


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("rope_ext.slug"):
        OmegaConf.register_new_resolver("rope_ext.slug", slug)
    if not OmegaConf.has_resolver("rope_ext.unnamed_keys"):
        OmegaConf.register_new_resolver("rope_ext.unnamed_keys", schema.unnamed_keys)
    register_help()  # rope_ext.config_groups: the groups --help lists


def register_nodes(conf_dir: Path = CONF) -> None:
    """Store in Hydra's ConfigStore what the registries know (again after plugins register more): the
    schema (with every dataset's option class), ``pe/<name>`` for every encoding (they set only
    ``name``: the options and defaults are the schema's) and ``dataset/<name>`` for every dataset that
    has no ``conf/dataset/<name>.yaml`` (the YAML files carry the values users edit)."""
    from hydra.core.config_store import ConfigStore

    schema.register()
    store = ConfigStore.instance()
    for name in encoding_names():
        store.store(group="pe", name=name, node={"name": name})
    for name in datasets.names():
        if not (Path(conf_dir) / "dataset" / f"{name}.yaml").is_file():
            node = {"defaults": [f"/schema/dataset/{name}@_here_"], "name": name, **datasets.get(name).node}
            store.store(group="dataset", name=name, node=node)


register_resolvers()
register_nodes()


@contextmanager
def composer(
    conf_dir: Path | str = CONF, *, config_name: str = "config", extra_dir: Path | str | None = None
) -> Iterator[Any]:
    """A function composing a job's full config (``hydra`` node included) from its overrides with Hydra's
    compose API, as ``@hydra.main`` would; it sets ``HydraConfig`` so ``${hydra:...}`` resolves. Errors of
    composition (unknown key, wrong type, no such option, unparsable override) become ConfigErrors.

    ``conf_dir``, ``config_name`` and ``extra_dir`` are the primary config directory (a path or
    ``pkg://``), the config's name and an additional directory searched first, as train.py's
    ``--config-path``, ``--config-name`` and ``--config-dir`` set them (``command.config_sources``)."""
    from hydra.core.hydra_config import HydraConfig

    if not str(conf_dir).startswith("pkg://"):
        register_nodes(Path(conf_dir))  # what plugins registered since the import

    def compose_job(overrides: list[str]) -> DictConfig:
        from hydra import compose

        try:
            cfg = compose(config_name, overrides=list(overrides), return_hydra_config=True)
        except Exception as err:  # noqa: BLE001  (Hydra's and OmegaConf's errors: one paragraph each)
            raise compose_error(err, overrides) from None
        HydraConfig.instance().set_config(cfg)
        return cfg

    try:
        with _initialized(conf_dir, extra_dir):
            yield compose_job
    except Exception as err:  # noqa: BLE001
        if isinstance(err, ConfigError):
            raise
        raise compose_error(err, []) from None


@contextmanager
def _initialized(conf_dir: Path | str, extra_dir: Path | str | None) -> Iterator[None]:
    """Hydra's global state set up as ``hydra.initialize_config_dir`` does, with ``--config-dir``'s
    directory placed in the search path where ``@hydra.main`` places it; restored afterwards."""
    from hydra import version
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.config_search_path import SearchPathQuery
    from hydra.initialize import get_gh_backup, restore_gh_from_backup

    backup = get_gh_backup()
    version.setbase("1.3")
    primary = str(conf_dir) if str(conf_dir).startswith("pkg://") else str(Path(conf_dir).resolve())
    search_path = create_config_search_path(primary)
    if extra_dir is not None:
        search_path.prepend("command-line", f"file://{Path(extra_dir).resolve()}", SearchPathQuery("schema"))
    try:
        Hydra.create_main_hydra2(task_name="train", config_search_path=search_path)
        yield
    finally:
        restore_gh_from_backup(backup)


def compose_error(err: BaseException, overrides: list[str]) -> ConfigError:
    """Hydra's or OmegaConf's composition error as one paragraph naming key, value and what is allowed."""
    from hydra.errors import MissingConfigException, OverrideParseException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

    cause = err.__cause__ or err.__context__
    if isinstance(err, OverrideParseException):
        return ConfigError(
            f"the override {err.override!r} cannot be parsed ({one_line(err)}); allowed: key=value in "
            "Hydra's override grammar (quote values with brackets or commas)."
        )
    if isinstance(err, MissingConfigException) and err.missing_cfg_file:
        group, _, option = str(err.missing_cfg_file).rpartition("/")
        # Hydra lists only a group's top-level options; presets live in subfolders (experiment=study/x)
        options = list(err.options or [])
        if not options and group and (CONF / group).is_dir():
            found = [p.relative_to(CONF / group).with_suffix("") for p in (CONF / group).rglob("*.yaml")]
            # arms and tuned learning rates are added to a preset (+experiment/arm=...), not chosen as one
            options = [str(p) for p in found if p.parts[0] not in ("arm", "tuned")]
        if options:
            more = " (or a module's that plugins=[...] loads)" if group in ("pe", "dataset") else ""
            return ConfigError.bad_value(
                group or "config", option, ", ".join(sorted(options)) + more, "no such option"
            )
    if isinstance(cause, ValidationError | ConfigKeyError | ConfigAttributeError) and cause.full_key:
        key = re.sub(r"\[\d+\]$", "", str(cause.full_key))
        given = {o.lstrip("+~").split("=", 1)[0]: o.split("=", 1)[-1] for o in overrides if "=" in o}
        value = given.get(key)
        if value is None:
            found = re.search(r"Value '(.*?)'", str(cause))
            value = found.group(1) if found else "?"
        known = {k.path: k for k in schema.all_keys()}
        if isinstance(cause, ValidationError) and key in known:
            return ConfigError.bad_value(key, value, allowed(known[key].field))
        parent = key.rpartition(".")[0]
        siblings = [k for k in known if k.rpartition(".")[0] == parent]
        return unknown_keys([(key, None, siblings)], {key: value})
    return ConfigError(f"{one_line(err)}.")
