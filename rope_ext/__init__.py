"""rope-ext: N×N block rotary position encodings for Vision Transformers.

The library (``rope_ext.encoding``, torch and timm only): ``create_vit`` (a timm ViT with rotary
attention), ``fold_for_inference``; an encoding as ``RopeSpec`` from ``validate_pe``, one layer from
``make_rope``; a new encoding with ``register(EncodingInfo(...))`` in a module of your own, loaded by
``load_module`` (or the ``ROPE_EXT_MODULES`` environment variable); measurements
``relative_property_error`` and ``basis_motion``. Everything else is importable from its module
(``rope_ext.encoding.relativity.shift_error``, ...). The Hydra harness lives in the other modules of
this package and is installed by ``pip install 'rope-ext[harness]'``.
"""

from __future__ import annotations

import importlib

from rope_ext.encoding import __all__  # the library's public names: one list, the library's own


def __getattr__(name: str) -> object:
    """The library's names, imported from ``rope_ext.encoding`` on first use (PEP 562): importing a module
    of the harness (the config check, ``rope_ext.jobs``, ``rope_ext.install_check``) imports no torch."""
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module("rope_ext.encoding"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
