"""rope-ext: N×N block rotary position encodings for Vision Transformers.

Public API: ``make_rope``, ``create_vit``, ``fold_for_inference``, ``relative_property_error``.
Only torch and timm are imported here; the Hydra harness lives in its own modules.
"""

from rope_ext.rotary import IMPLS, INITS, PE_NAMES, ROTARY_NAMES, BlockRotary, LieBlockRotary, make_rope
from rope_ext.vit import create_vit, fold_for_inference, relative_property_error

__all__ = [
    "IMPLS",
    "INITS",
    "PE_NAMES",
    "ROTARY_NAMES",
    "BlockRotary",
    "LieBlockRotary",
    "create_vit",
    "fold_for_inference",
    "make_rope",
    "relative_property_error",
]
