"""The encoding library: rotary position encodings for timm ViTs. Its layers need torch and timm (and
triton where installed, for the fused rotation's CUDA kernel).

Modules: ``spec`` (``RopeSpec``: an encoding's options and defaults; ``validate_pe``, the one check;
``make_rope``), ``registry`` (the encodings by name, with their traits; ``register``,
``load_module``), ``functional`` (the pure tensor functions), ``layer`` (``RotaryLayer``, the
interface every encoding's layer implements), ``builtins`` (the built-in encodings' entries),
``encodings/`` (their layers, one module per family), ``fused_rotation`` (the ``rope_ext::rotate_qk``
op: q and k rotated in one pass, a Triton kernel on CUDA), ``projection`` (what the layers need per
step, built for all layers at once: qkv weights moved into the bases, rotation tables), ``vit``
(``create_vit``, ``fold_for_inference``), ``weights`` (pretrained or local weights),
``relativity`` (the relative property and the shift error), ``motion`` (how far training moved each
block basis). The names below are the ones a user calls, imported from their module on first use
(``registry``, ``spec`` and ``builtins`` import neither torch nor timm: the config check reads them); the
rest is importable from its module.
"""

from __future__ import annotations

import importlib

# Where each public name lives: the names are imported from their module when first used (PEP 562), so
# that importing the package, the registry or the spec (the config check) does not import torch or timm.
_HOME = {
    "EncodingInfo": "rope_ext.encoding.registry",
    "RopeSpec": "rope_ext.encoding.spec",
    "basis_motion": "rope_ext.encoding.motion",
    "create_vit": "rope_ext.encoding.vit",
    "fold_for_inference": "rope_ext.encoding.vit",
    "load_module": "rope_ext.encoding.registry",
    "make_rope": "rope_ext.encoding.spec",
    "register": "rope_ext.encoding.registry",
    "relative_property_error": "rope_ext.encoding.relativity",
    "validate_pe": "rope_ext.encoding.spec",
}

__all__ = [
    "EncodingInfo",
    "RopeSpec",
    "basis_motion",
    "create_vit",
    "fold_for_inference",
    "load_module",
    "make_rope",
    "register",
    "relative_property_error",
    "validate_pe",
]


def __getattr__(name: str) -> object:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
