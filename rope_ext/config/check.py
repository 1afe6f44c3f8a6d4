"""The generic schema checker: every key of a config is a key of ``rope_ext.schema.Config`` (the option's
own class where a group's options differ), every value what its field allows (type, choices, range,
finite). Works on a composed DictConfig and on a plain dict; errors are ``ConfigError`` naming key,
value and what is allowed (with the closest known key for a typo)."""

from __future__ import annotations

import dataclasses
import difflib
import types
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from rope_ext import schema
from rope_ext.errors import ConfigError
from rope_ext.util import is_int, is_number, select


def _keys(node: Any) -> list[str]:
    return [str(k) for k in node] if isinstance(node, DictConfig | Mapping) else []


def plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _base_type(tp: Any) -> tuple[Any, bool]:
    """(type without ``| None``, whether None is allowed)."""
    args = getattr(tp, "__args__", ())
    if isinstance(tp, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return tp, False


def allowed(f: dataclasses.Field) -> str:
    """What a field allows, in words."""
    tp, nullable = _base_type(f.type)
    is_list = getattr(tp, "__origin__", None) is list
    words = _kind(tp.__args__[0] if is_list else tp, f.metadata)
    if f.metadata.get("choices"):
        words = ", ".join(map(str, f.metadata["choices"]))
    if is_list:
        words = f"a list, each item {words}"
    return words + (", or null" if nullable else "")


def _kind(tp: Any, meta: Mapping[str, Any]) -> str:
    if tp is bool:
        return "true or false"
    if tp is str:
        return "a non-empty string"
    bounds = []
    if meta.get("ge") is not None:
        bounds.append(f">= {_num(meta['ge'])}")
    if meta.get("gt") is not None:
        bounds.append(f"> {_num(meta['gt'])}")
    if meta.get("le") is not None:
        bounds.append(f"<= {_num(meta['le'])}")
    if meta.get("lt") is not None:
        bounds.append(f"< {_num(meta['lt'])}")
    noun = "an integer" if tp is int else "a finite number" if tp is float else "a value"
    return noun + (" " + " and ".join(bounds) if bounds else "")


def _num(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def _scalar_ok(tp: Any, value: Any, meta: Mapping[str, Any]) -> bool:
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = is_int(value)
    elif tp is float:
        ok = is_number(value)
    elif tp is str:
        ok = isinstance(value, str) and value != ""  # an empty string is no value (null is the default)
    else:
        return True
    if ok and meta.get("choices") is not None:
        ok = value in meta["choices"]
    if ok and tp in (int, float):
        ge, gt, le, lt = (meta.get(k) for k in ("ge", "gt", "le", "lt"))
        ok = (
            (ge is None or value >= ge)
            and (gt is None or value > gt)
            and (le is None or value <= le)
            and (lt is None or value < lt)
        )
    return ok


UNRESOLVED = object()


def get(node: Any, name: str) -> Any:
    """``node[name]``, or ``UNRESOLVED`` for a ``${hydra:...}`` value of a config composed without its
    Hydra node (a tool's or a test's): Hydra fills those in for a run."""
    if not isinstance(node, DictConfig | Mapping):
        return None
    try:
        return node.get(name)
    except InterpolationResolutionError as err:
        if "HydraConfig was not set" in str(err):
            return UNRESOLVED
        raise


def _check_node(node: Any, cls: type, prefix: str) -> None:
    """Every value of ``node`` is what its field of ``cls`` allows."""
    for f in dataclasses.fields(cls):
        _check_field(f"{prefix}{f.name}", f, get(node, f.name))


def _check_field(path: str, f: dataclasses.Field, value: Any) -> None:
    """``value`` is what field ``f`` allows (a nested dataclass checked key by key)."""
    if value is UNRESOLVED:
        return
    tp, nullable = _base_type(f.type)
    if value is None:
        if not nullable:
            raise ConfigError.bad_value(path, value, allowed(f))
        return
    inner = schema.dataclass_of(tp)
    if inner is not None:
        if not isinstance(value, DictConfig | Mapping):
            raise ConfigError.bad_value(path, plain(value), f"a mapping with keys {', '.join(_names(inner))}")
        _check_node(value, inner, path + ".")
    elif getattr(tp, "__origin__", None) is list:
        if not isinstance(value, ListConfig | list | tuple):
            raise ConfigError.bad_value(path, plain(value), allowed(f))
        for item in value:
            if not _scalar_ok(tp.__args__[0], item, f.metadata):
                raise ConfigError.bad_value(path, plain(value), allowed(f))
    elif not _scalar_ok(tp, value, f.metadata):
        raise ConfigError.bad_value(path, value, allowed(f))


def _find_unknown(node: Any, cls: type, prefix: str, out: list[tuple[str, Any, list[str]]]) -> None:
    """(dotted key, value, the keys its node allows) of every key under ``node`` not in ``cls``."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in _keys(node):
        f = fields.get(name)
        if f is None:
            out.append((f"{prefix}{name}", get(node, name), [f"{prefix}{k}" for k in fields]))
            continue
        inner = schema.dataclass_of(_base_type(f.type)[0])
        value = get(node, name) if inner is not None else None
        if isinstance(value, DictConfig | Mapping):
            _find_unknown(value, inner, f"{prefix}{name}.", out)


def _names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def unknown_keys(
    found: list[tuple[str, Any, list[str]]], typed: Mapping[str, str] | None = None
) -> ConfigError:
    """One paragraph naming every unknown key, its value (as typed, when given) and the closest known key."""
    parts, allowed_keys = [], []
    for key, value, known in found:
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else "no similar key"
        shown = str(typed[key]) if typed and key in typed else repr(plain(value))
        parts.append(f"{key}={shown} ({hint})")
        allowed_keys += [k for k in known if k not in allowed_keys]
    plural = "s" if len(found) > 1 else ""
    return ConfigError(
        f"unknown key{plural} {'; '.join(parts)}; allowed: the keys of rope_ext/schema.py "
        f"({', '.join(allowed_keys)}). Unknown keys are refused rather than silently ignored."
    )


def check_keys(cfg: Any) -> None:
    """Every key of the config is a key of ``rope_ext.schema.Config`` (Hydra's ``+key=value`` adds keys
    OmegaConf's struct mode lets through); one ConfigError names them all (works on a plain dict too)."""
    unknown: list[tuple[str, Any, list[str]]] = []
    top_node = {k: get(cfg, k) for k in _keys(cfg) if k not in schema.OPTION_SCHEMAS and k != "hydra"}
    _find_unknown(top_node, schema.Config, "", unknown)
    for group_name, options in schema.OPTION_SCHEMAS.items():
        node = get(cfg, group_name)
        if isinstance(node, DictConfig | Mapping) and select(node, "name") in options:
            _find_unknown(node, options[node["name"]], group_name + ".", unknown)
    if unknown:
        raise unknown_keys(unknown)


def check_values(cfg: Any) -> None:
    """Every value against its field of ``rope_ext.schema.Config``: type, choices, range, finite."""
    for f in dataclasses.fields(schema.Config):
        value = get(cfg, f.name)
        if value is UNRESOLVED:
            continue
        cls = schema.dataclass_of(f.type)
        if cls is None:
            _check_field(f.name, f, value)
            continue
        options = schema.OPTION_SCHEMAS.get(f.name)
        if options is not None:
            name = select(value, "name")
            if name not in options:
                extra = " (or a plugin's: plugins=[...])" if f.name == "dataset" else ""
                raise ConfigError.bad_value(f"{f.name}.name", name, ", ".join(options) + extra)
            cls = options[name]
        _check_node(value, cls, f.name + ".")
