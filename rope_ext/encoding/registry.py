"""The encodings, by name: each one registers itself with its layer class and its traits.

An encoding is one module that builds an ``EncodingInfo`` and calls ``register`` on import. The
built-in ones are the modules of ``rope_ext.encoding.encodings``; a user's own module is loaded by
``load_module`` (a dotted module name or a ``.py`` path), by the ``ROPE_EXT_MODULES`` environment
variable (specs separated by ``os.pathsep``) or by an installed package's entry point in the group
``rope_ext.encodings``. All three are read once, on the first question asked of the registry
(``get``, ``names``, ...). Everything that lists encodings (validation, ``make_rope``, the
benchmark, the arm generator, the tests, the encodings table in docs/encodings.md) reads them here.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import os
import pkgutil
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path

ENV_VAR = "ROPE_EXT_MODULES"
ENTRY_POINT_GROUP = "rope_ext.encodings"
BUILTIN_PACKAGE = "rope_ext.encoding.encodings"
# Frequency bases: a mixed plane has a frequency vector over the axes, so a smaller base spreads
# its initial frequencies as Heo et al.'s RoPE-Mixed does.
THETA, THETA_MIXED = 100.0, 10.0


@dataclass(frozen=True)
class Accepts:
    """What one encoding's options may be. ``block``: fixed N, or None for any N in 2..head_dim
    (default ``default_block``); ``impls``: allowed impls, the first the default; ``theta`` /
    ``theta_mixed``: the default frequency base without / with ``mixed=True``."""

    block: int | None
    impls: tuple[str, ...]
    mixed: bool  # `mixed=True` accepted
    layout_of: bool  # `layout_of` accepted (with block 2)
    learnable_false: bool  # `learnable=False` accepted
    default_block: int = 2
    theta: float = THETA
    theta_mixed: float = THETA_MIXED


@dataclass(frozen=True)
class Variant:
    """One configuration of an encoding that a tool includes: ``label`` names it (the benchmark
    expands ``{block}`` over its ``--blocks`` for encodings of any block size); ``options`` are the
    encoding's options (``arm_variants``: dotted config keys, ``pe.*`` and ``model.*``); ``note``
    says what it is (the arm files' comment); ``fold``: the benchmark times ``fold_for_inference``
    of the model (inference only)."""

    label: str
    options: Mapping[str, object] = field(default_factory=dict)
    note: str = ""
    fold: bool = False


@dataclass(frozen=True)
class EncodingInfo:
    """An encoding and its traits.

    ``layer``: the rotary layer class (a ``RotaryLayer`` subclass, built as
    ``layer(spec, head_dim=, num_heads=)``), None for ``none``. Traits: ``rotary``;
    ``exact_relative``: R(p_i)ᵀR(p_j) depends on p_j − p_i alone for any parameter values;
    ``learned_basis``: blocks of N > 2 carry a learned basis Q; ``folds``: that basis folds into the
    q/k projection for inference (``fold_for_inference``). ``accepts``: its options (None for
    ``none``, which takes none). ``bench_variants`` / ``arm_variants`` / ``table_variants``: what
    ``rope_ext.bench``, ``experiments/make_arms.py`` and the relativity table include. ``order``:
    where it sorts in tables and reports (ties keep registration order).
    """

    name: str
    layer: type | None
    summary: str
    rotary: bool = True
    exact_relative: bool = True
    learned_basis: bool = False
    folds: bool = False
    accepts: Accepts | None = None
    bench_variants: tuple[Variant, ...] = ()
    arm_variants: tuple[Variant, ...] = ()
    table_variants: tuple[Variant, ...] = ()
    order: int = 100


_lock = threading.RLock()
_infos: dict[str, EncodingInfo] = {}
_builtins_loaded = False
_env_loaded: str | None = None
_loaded_modules: dict[str, list[str]] = {}


def _check_info(info: EncodingInfo) -> None:
    if not isinstance(info, EncodingInfo):
        raise TypeError(f"register(info): info must be an EncodingInfo, got {type(info).__name__}")
    if not isinstance(info.name, str) or not info.name.isidentifier():
        raise ValueError(
            f"EncodingInfo.name={info.name!r} is not allowed; allowed values: a Python identifier"
        )
    if info.rotary != (info.layer is not None) or info.rotary != (info.accepts is not None):
        raise ValueError(
            f"EncodingInfo {info.name!r}: a rotary encoding has a layer and accepts; 'none'-like ones neither"
        )
    if info.accepts is not None and not info.accepts.impls:
        raise ValueError(
            f"EncodingInfo {info.name!r}: accepts.impls is empty; allowed: 'fast' and/or 'matrix'"
        )


def register(info: EncodingInfo) -> EncodingInfo:
    """Add ``info`` to the registry and return it. A name already registered is refused."""
    _check_info(info)
    with _lock:
        if info.name in _infos:
            raise ValueError(
                f"encoding {info.name!r} is already registered (by {_origin(_infos[info.name])}); "
                "pick another name"
            )
        _infos[info.name] = info
    return info


def _origin(info: EncodingInfo) -> str:
    return f"{info.layer.__module__}.{info.layer.__qualname__}" if info.layer is not None else "the library"


def _ensure_loaded() -> None:
    """Import the built-in encodings and the entry points once, and any ``ROPE_EXT_MODULES`` entry
    not loaded yet."""
    global _builtins_loaded, _env_loaded
    with _lock:
        if not _builtins_loaded:
            _builtins_loaded = True
            package = importlib.import_module(BUILTIN_PACKAGE)
            for module in sorted(m.name for m in pkgutil.iter_modules(package.__path__)):
                importlib.import_module(f"{BUILTIN_PACKAGE}.{module}")
            for point in entry_points(group=ENTRY_POINT_GROUP):
                load_module(
                    point.value.split(":")[0], origin=f"entry point {point.name!r} ({ENTRY_POINT_GROUP})"
                )
        specs = os.environ.get(ENV_VAR, "")
        if specs != _env_loaded:
            for spec in filter(None, specs.split(os.pathsep)):
                load_module(spec, origin=f"{ENV_VAR}={specs!r}")
            _env_loaded = specs


def _sorted() -> list[EncodingInfo]:
    _ensure_loaded()
    ranked = sorted(enumerate(_infos.values()), key=lambda item: (item[1].order, item[0]))
    return [info for _, info in ranked]


def names() -> tuple[str, ...]:
    """Every encoding's name: ``none`` first, then by ``order`` and registration."""
    return tuple(info.name for info in _sorted())


def rotary_names() -> tuple[str, ...]:
    """The names of the rotary encodings (all but ``none``), in ``names()`` order."""
    return tuple(info.name for info in _sorted() if info.rotary)


def infos() -> tuple[EncodingInfo, ...]:
    """Every registered ``EncodingInfo``, in ``names()`` order."""
    return tuple(_sorted())


def did_you_mean(value: object, allowed: tuple[str, ...]) -> str:
    """`` (did you mean X?)`` naming the closest of ``allowed``, or ``""``."""
    close = difflib.get_close_matches(str(value), allowed, n=1) if isinstance(value, str) else []
    return f" (did you mean {close[0]}?)" if close else ""


def unknown_name(value: object, allowed: tuple[str, ...], key: str = "pe") -> ValueError:
    """The error for a name that is not one of ``allowed``: names the key, the value, the allowed
    names and the closest one."""
    return ValueError(
        f"{key}={value!r} is not allowed; allowed values: {', '.join(allowed)}{did_you_mean(value, allowed)}"
    )


def get(name: str, *, key: str = "pe") -> EncodingInfo:
    """The ``EncodingInfo`` registered as ``name``; ValueError naming ``key``, the value and the
    allowed names (with the closest one) otherwise."""
    _ensure_loaded()
    info = _infos.get(name) if isinstance(name, str) else None
    if info is None:
        raise unknown_name(name, names(), key)
    return info


def _module_name_for(path: Path) -> str:
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    return f"rope_ext_user_{path.stem}_{digest}"


def _import(spec: str) -> None:
    """Import a dotted module name, or a ``.py`` file under a private module name."""
    if spec.endswith(".py") or os.sep in spec or (os.altsep and os.altsep in spec):
        path = Path(spec).expanduser().resolve()
        if not path.is_file():
            raise FileNotFoundError(f"no such file: {path}")
        name = _module_name_for(path)
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        try:
            module_spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    else:
        importlib.import_module(spec)


def load_module(spec: str, *, origin: str = "load_module") -> list[str]:
    """Import the encoding module ``spec`` (a dotted module name or a path to a ``.py`` file) once,
    so that it registers its encodings; returns the names it added (the same list on a repeated
    call). ValueError naming the spec and the cause when it cannot be imported."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(
            f"{origin}: module spec {spec!r} is not allowed; allowed values: a module name or a .py path"
        )
    key = str(Path(spec).expanduser().resolve()) if spec.endswith(".py") else spec
    with _lock:
        if key in _loaded_modules:
            return list(_loaded_modules[key])
        _ensure_builtins()
        if key in _loaded_modules:  # loading the built-ins read it from ROPE_EXT_MODULES
            return list(_loaded_modules[key])
        before = set(_infos)
        try:
            _import(spec)
        except Exception as err:  # noqa: BLE001 - any failure of the user's module is reported as one error
            raise ValueError(
                f"{origin}: encoding module {spec!r} could not be loaded ({type(err).__name__}: {err}); "
                "allowed values: an importable module name or the path of a .py file that calls "
                "rope_ext.encoding.registry.register"
            ) from err
        added = [name for name in _infos if name not in before]
        _loaded_modules[key] = added
        return list(added)


def _ensure_builtins() -> None:
    """The built-ins first, so a user's module that reuses a built-in name gets the duplicate error."""
    if not _builtins_loaded:
        _ensure_loaded()


def _cell(info: EncodingInfo) -> list[str]:
    def yes(flag: bool) -> str:
        return "yes" if flag else "no"

    if not info.rotary:
        return [f"`{info.name}`", "—", "—", "—", "—", "—", info.summary]
    accepts = info.accepts
    block = (
        str(accepts.block) if accepts.block is not None else f"2..head_dim (default {accepts.default_block})"
    )
    return [
        f"`{info.name}`",
        block,
        ", ".join(accepts.impls),
        yes(info.exact_relative),
        yes(info.learned_basis),
        yes(info.folds),
        info.summary,
    ]


def encodings_table() -> str:
    """The Markdown table of the registered encodings and their traits (docs/encodings.md holds it)."""
    head = [
        "`pe`",
        "block N",
        "impl (default first)",
        "exact relative",
        "learned basis",
        "folds",
        "what it is",
    ]
    rows = [head, ["---"] * len(head)] + [_cell(info) for info in infos()]
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)
