"""An encoding's options, their defaults and their one check: ``RopeSpec``, ``validate_pe``, ``make_rope``.

``RopeSpec`` holds every option with the library's default (it is also the pe group's OmegaConf
schema); ``validate_pe`` checks a name and its options against what the encoding accepts (its
``registry`` entry) and returns the spec resolved, every default filled in; ``make_rope`` builds
the encoding's layer from it, checking only what depends on the model (``block`` <= head_dim).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field

from torch import nn

from rope_ext.encoding import registry
from rope_ext.encoding.registry import THETA, THETA_MIXED, Accepts  # noqa: F401  (the theta defaults, re-exported)

IMPLS = ("matrix", "fast")
INITS = ("axial", "identity")
DIMS = (1, 2)
COORDS = ("patch", "normalized")
AUGMENT_KEYS = ("shift", "jitter", "rescale")
OPTION_KEYS = (
    "block",
    "impl",
    "mixed",
    "dims",
    "theta",
    "learnable",
    "init",
    "coords",
    "augment",
    "layout_of",
    "basis",
)
# What happens to an N×N block's basis Q in training: learned, or frozen at its init (Q = I), which
# isolates the effect of learning Q (with fixed axial frequencies it is the only difference between
# N×N blocks and the 2×2 planes of the same layout).
BASES = ("learned", "frozen")


@dataclass(frozen=True)
class Augment:
    """DINOv3's coordinate augmentation in training, one draw per forward (``augment_positions``):
    ``shift`` in coordinate units, ``jitter``/``rescale`` >= 1 (scales in [1/value, value]); 0 is off."""

    shift: float = 0.0
    jitter: float = 0.0
    rescale: float = 0.0

    @property
    def active(self) -> bool:
        return bool(self.shift or self.jitter or self.rescale)


@dataclass(frozen=True)
class RopeSpec:
    """One encoding and every option it takes, with the library's defaults: the one place they live.

    A field left None takes its default: the field's own, or where that is None the encoding's
    (its ``registry`` entry's ``accepts``), filled in by ``validate_pe``, which returns the spec
    resolved (every field set but ``layout_of`` and, without a basis, ``basis``): ``block`` (the
    encoding's fixed or default N), ``impl`` (the first of ``accepts.impls``), ``theta``
    (``accepts.theta``, or ``accepts.theta_mixed`` with ``mixed``), ``learnable`` (true for mixed,
    identity init and encodings that refuse ``learnable=False``), ``basis`` ("learned" where a
    block has a basis: a ``learned_basis`` encoding with N > 2; else None). Plain types only, so
    OmegaConf takes the class as a structured config (the pe group's schema; null is allowed
    everywhere and means the default, as the YAML files have always written it).
    ``spec["block"]`` and ``spec.options()`` read it like the dict of options it replaces.
    """

    name: str = "none"
    block: int | None = None  # N, 2..head_dim
    impl: str | None = None  # "fast" | "matrix"
    mixed: bool | None = False  # every plane a frequency vector over the axes (RoPE-Mixed)
    dims: int | None = 2  # 1: the flattened token index, 2: (x, y) on the patch grid
    theta: float | None = None  # frequency base
    learnable: bool | None = None  # learned frequencies
    init: str | None = "axial"  # "axial" (RoPE-Axial layout, Q = I) | "identity" (zero frequencies)
    coords: str | None = "patch"  # "patch" (column, row) | "normalized" (patch centres in [-1, 1])
    augment: Augment | None = field(default_factory=Augment)
    layout_of: int | None = None  # block 2: the planes of the N×N axial layout
    basis: str | None = None  # learned-basis encodings with block > 2: "learned" | "frozen" (Q kept at I)

    def options(self) -> dict[str, object]:
        """The ``OPTION_KEYS`` as a plain dict (``augment`` a dict too), e.g. for metrics.json."""
        out = {k: getattr(self, k) for k in OPTION_KEYS}
        out["augment"] = asdict(self.augment) if self.augment is not None else None
        return out

    def __getitem__(self, key: str) -> object:
        if key != "name" and key not in OPTION_KEYS:
            raise KeyError(key)
        return self.options()[key] if key == "augment" else getattr(self, key)


def is_int(value: object) -> bool:
    """An integer that is not a bool (YAML's ``true`` is no count). The harness checks with it too."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """A finite int or float, not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _as_options(options: Mapping[str, object] | RopeSpec) -> dict[str, object]:
    if isinstance(options, RopeSpec):
        return options.options()
    if not isinstance(options, Mapping):
        raise TypeError(f"options={options!r} is not allowed; allowed values: a mapping or a RopeSpec")
    return dict(options)


def _names_where(test: Callable[[registry.EncodingInfo], bool]) -> str:
    """The rotary encodings that pass ``test``, quoted, for messages."""
    return " or ".join(repr(i.name) for i in registry.infos() if i.rotary and test(i)) or "none"


@dataclass(frozen=True)
class _Check:
    """Raises the ValueError of one bad option: key, value, what is allowed (and why)."""

    name: str
    prefix: str
    head_dim: int | None

    def bad(self, key: str, value: object, allowed: str, why: str = "") -> ValueError:
        reason = f" ({why})" if why else ""
        return ValueError(
            f"{self.prefix}{key}={value!r} is not allowed for pe={self.name!r}{reason}; allowed values: {allowed}"
        )

    def choice(self, key: str, value: object, allowed: tuple) -> None:
        if value not in allowed or isinstance(value, bool) != isinstance(allowed[0], bool):
            raise self.bad(key, value, ", ".join(map(repr, allowed)))

    @property
    def span(self) -> str:
        return (
            f"2..{self.head_dim} for head_dim {self.head_dim}" if self.head_dim is not None else "2..head_dim"
        )

    def size(self, key: str, value: object, allowed: str) -> None:
        """An integer in 2..head_dim."""
        if not is_int(value) or value < 2 or (self.head_dim is not None and value > self.head_dim):
            raise self.bad(key, value, allowed.format(span=self.span))


def _block(check: _Check, accepts: Accepts, given: dict[str, object]) -> int:
    block = given.get("block")
    if accepts.block is not None:
        if block is not None and block != accepts.block:
            others = _names_where(lambda i: i.accepts.block is None)
            raise check.bad("block", block, f"{accepts.block} or null", f"use pe={others} for other sizes")
        block = accepts.block
    elif block is None:
        block = accepts.default_block
    check.size("block", block, "an integer in {span}")
    return block


def _frequencies(check: _Check, accepts: Accepts, given: dict[str, object]) -> dict[str, object]:
    """``mixed``, ``init``, ``theta`` and ``learnable``, defaults resolved."""
    defaults = RopeSpec()
    mixed = given.get("mixed", defaults.mixed)
    check.choice("mixed", mixed, (False, True) if accepts.mixed else (False,))
    init = given.get("init", defaults.init)
    check.choice("init", init, INITS)
    theta = given.get("theta", accepts.theta_mixed if mixed else accepts.theta)
    if not is_number(theta) or theta <= 0:
        raise check.bad("theta", theta, "a finite positive number or null (package default)")
    learnable = given.get("learnable")
    if learnable is not None:
        check.choice("learnable", learnable, (False, True) if accepts.learnable_false else (True,))
        if init == "identity" and not learnable:
            raise check.bad(
                "learnable", learnable, "True or null", "with init='identity' frequencies would stay 0"
            )
    else:
        learnable = not accepts.learnable_false or init == "identity" or mixed
    return {"mixed": mixed, "init": init, "theta": float(theta), "learnable": learnable}


def _augment(check: _Check, given: dict[str, object]) -> Augment:
    augment = given.get("augment", {})
    if isinstance(augment, Augment):
        augment = asdict(augment)
    if not isinstance(augment, Mapping) or set(augment) - set(AUGMENT_KEYS):
        raise check.bad("augment", augment, f"a mapping with keys {', '.join(AUGMENT_KEYS)}")
    augment = {k: (augment.get(k) or 0) for k in AUGMENT_KEYS}
    if not is_number(augment["shift"]) or augment["shift"] < 0:
        raise check.bad("augment.shift", augment["shift"], "0 (off) or a positive number (coordinate units)")
    for key in ("jitter", "rescale"):
        value = augment[key]
        if not is_number(value) or not (value == 0 or value >= 1):
            raise check.bad(
                f"augment.{key}", value, "0 (off) or a number >= 1 (scales drawn in [1/value, value])"
            )
    return Augment(**{k: float(v) for k, v in augment.items()})


def _layout_and_basis(
    check: _Check, info: registry.EncodingInfo, block: int, given: dict[str, object]
) -> tuple[int | None, str | None]:
    layout_of = given.get("layout_of")
    if layout_of is not None:
        if not info.accepts.layout_of or block != 2:
            why = f"only pe={_names_where(lambda i: i.accepts.layout_of)} with block=2 takes it"
            raise check.bad("layout_of", layout_of, "null", why)
        check.size("layout_of", layout_of, "null or an integer in {span}")
    has_basis = info.learned_basis and block > 2
    basis = given.get("basis", "learned" if has_basis else None)
    if basis is not None:
        if not has_basis:
            why = f"only pe={_names_where(lambda i: i.learned_basis)} with block > 2 has a basis"
            raise check.bad("basis", basis, "null", why)
        check.choice("basis", basis, BASES)
    return layout_of, basis


def validate_options(
    name: str, options: Mapping[str, object] | RopeSpec, *, head_dim: int | None = None, prefix: str = ""
) -> RopeSpec:
    """Check the options of rotary encoding ``name`` and return its spec with every default filled in.

    ``head_dim``: the model's head dimension when known (bounds ``block`` and ``layout_of``);
    ``prefix``: prepended to key names in messages (the harness passes ``"pe."``). Null options take
    the defaults. Raises ValueError naming the key, the value and what is allowed.
    """
    rotary = registry.rotary_names()
    if name not in rotary:
        raise ValueError(
            f"{prefix}name={name!r} is not a rotary encoding; allowed values: {', '.join(rotary)}"
            + registry.did_you_mean(name, rotary)
        )
    info = registry.get(name)
    options = _as_options(options)
    unknown = sorted(set(options) - set(OPTION_KEYS))
    if unknown:
        raise ValueError(
            f"unknown option(s) {[prefix + k for k in unknown]} for pe={name!r}; "
            f"allowed keys: {', '.join(prefix + k for k in OPTION_KEYS)}"
        )
    given = {k: v for k, v in options.items() if v is not None}
    check, defaults = _Check(name, prefix, head_dim), RopeSpec()
    block = _block(check, info.accepts, given)
    dims = given.get("dims", defaults.dims)
    check.choice("dims", dims, DIMS)
    impl = given.get("impl", info.accepts.impls[0])
    check.choice("impl", impl, info.accepts.impls)
    frequencies = _frequencies(check, info.accepts, given)
    coords = given.get("coords", defaults.coords)
    check.choice("coords", coords, COORDS)
    augment = _augment(check, given)
    layout_of, basis = _layout_and_basis(check, info, block, given)
    return RopeSpec(
        name=name,
        block=block,
        impl=impl,
        dims=dims,
        coords=coords,
        augment=augment,
        layout_of=layout_of,
        basis=basis,
        **frequencies,
    )


def validate_pe(
    name: str,
    options: Mapping[str, object] | RopeSpec,
    *,
    head_dim: int | None = None,
    prefix: str = "",
    name_key: str = "pe",
) -> RopeSpec:
    """Check any encoding, ``none`` included: ``name`` one of ``registry.names()``, its options as
    ``validate_options`` checks them. Returns the resolved ``RopeSpec`` (``RopeSpec()`` for ``none``).

    The one check of an encoding the harness (``config.validate``) and ``create_vit`` share;
    ``name_key`` is how messages call the name (the harness: ``"pe.name"``), ``prefix`` as in
    ``validate_options``. ``options`` may hold every key at its ``RopeSpec`` default (a config
    built on the schema); an encoding that is not rotary refuses any other value. Raises ValueError
    naming the key, the value and what is allowed.
    """
    info = registry.get(name, key=name_key)
    if not info.rotary:
        defaults = RopeSpec().options()
        options = _as_options(options)
        changed = sorted(
            k for k, v in options.items() if v is not None and (k not in defaults or v != defaults[k])
        )
        if changed:
            keys = ", ".join(prefix + k for k in changed)
            raise ValueError(
                f"{keys} set with pe={name!r}, which takes no options; allowed values: null (or a rotary pe)"
            )
        return RopeSpec(name=name)
    return validate_options(name, options, head_dim=head_dim, prefix=prefix)


def make_rope(
    name: str | RopeSpec, *, head_dim: int, num_heads: int, dims: int | None = None, **options: object
) -> nn.Module:
    """Build one rotary layer from a ``RopeSpec`` or by name: one of ``registry.rotary_names()`` with
    options (checked by ``validate_options``; defaults as ``RopeSpec`` says). The layer is the
    encoding's registered class, built as ``layer(spec, head_dim=, num_heads=)``.

    Options: ``block`` (N, 2..head_dim; axial2_* fix it to 2), ``impl`` ("matrix" | "fast";
    lie_block: "matrix" only), ``mixed`` (bool; axial_block only), ``dims`` (1 | 2), ``theta``
    (frequency base, default 100 axial / 10 mixed), ``learnable`` (bool, default: false for axial,
    true for mixed or identity init), ``init`` ("axial": the 2×2 RoPE-Axial layout with Q = I;
    "identity": zero frequencies), ``coords`` ("patch" | "normalized": the unit positions come in,
    which sets the frequency scale), ``layout_of`` (axial_block with block 2: carry the planes of
    the N×N axial layout). ``augment`` belongs to the model's positions (``create_vit``), not to one
    layer. Raises ValueError naming the key, the value and what is allowed.
    """
    if not is_int(head_dim) or head_dim < 2 or not is_int(num_heads) or num_heads < 1:
        raise ValueError(f"head_dim={head_dim!r} and num_heads={num_heads!r} must be positive integers")
    if isinstance(name, RopeSpec):
        if options or dims is not None:
            raise ValueError("make_rope takes a RopeSpec or a name with options, not both")
        spec = name
        options = spec.options()
        name = spec.name
    elif "augment" in options:
        raise ValueError(
            "augment is not an option of one rotary layer: pass it in create_vit's pe_options "
            "(positions are augmented once per forward for all layers)"
        )
    elif dims is not None:
        options["dims"] = dims
    spec = validate_options(name, options, head_dim=head_dim)  # block and layout_of against head_dim
    return registry.get(name).layer(spec, head_dim=head_dim, num_heads=num_heads)


def __getattr__(name: str) -> object:
    """``PE_NAMES``, ``ROTARY_NAMES`` and ``ENCODINGS`` (name -> ``Accepts``): read from the registry
    when asked, so they include every encoding loaded by then."""
    if name == "PE_NAMES":
        return registry.names()
    if name == "ROTARY_NAMES":
        return registry.rotary_names()
    if name == "ENCODINGS":
        return {info.name: info.accepts for info in registry.infos() if info.rotary}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
