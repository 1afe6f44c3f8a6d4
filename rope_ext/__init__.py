"""rope-ext: N×N block rotary position encodings for Vision Transformers.

Public API: ``make_rope``, ``validate_pe`` / ``validate_options``, ``create_vit``, ``resolved_options``,
``fold_for_inference``,
``relative_property_error``, ``shift_error`` (with ``shifted_positions``, ``grid_offset``).
Only torch and timm are imported here; the Hydra harness lives in its own modules.
"""

from rope_ext.encoding.rotary import (
    COORDS,
    ENCODINGS,
    IMPLS,
    INITS,
    PE_NAMES,
    ROTARY_NAMES,
    BlockRotary,
    LieBlockRotary,
    make_rope,
    validate_options,
    validate_pe,
)
from rope_ext.encoding.vit import (
    POOLS,
    create_vit,
    fold_for_inference,
    grid_offset,
    relative_property_error,
    resolved_options,
    shift_error,
    shifted_positions,
)

__all__ = [
    "COORDS",
    "ENCODINGS",
    "POOLS",
    "IMPLS",
    "INITS",
    "PE_NAMES",
    "ROTARY_NAMES",
    "BlockRotary",
    "LieBlockRotary",
    "create_vit",
    "fold_for_inference",
    "grid_offset",
    "make_rope",
    "relative_property_error",
    "resolved_options",
    "shift_error",
    "shifted_positions",
    "validate_options",
    "validate_pe",
]
