"""rope-ext: N×N block rotary position encodings for Vision Transformers.

The library (``rope_ext.encoding``, torch and timm only): ``create_vit`` (a timm ViT with rotary
attention), ``fold_for_inference``; an encoding as ``RopeSpec`` from ``validate_pe``, one layer from
``make_rope``; a new encoding with ``register(EncodingInfo(...))`` in a module of your own, loaded by
``load_module`` (or the ``ROPE_EXT_MODULES`` environment variable); measurements
``relative_property_error`` and ``basis_motion``. Everything else is importable from its module
(``rope_ext.encoding.relativity.shift_error``, ...). The Hydra harness lives in the other modules of
this package and is installed by ``pip install 'rope-ext[harness]'``.
"""

from rope_ext.encoding import (
    EncodingInfo,
    RopeSpec,
    basis_motion,
    create_vit,
    fold_for_inference,
    load_module,
    make_rope,
    register,
    relative_property_error,
    validate_pe,
)

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
