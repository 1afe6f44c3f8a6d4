"""rope-ext: N×N block rotary position encodings for Vision Transformers.

Public API: ``RopeSpec`` (an encoding and its options, defaults in one place) from ``validate_pe``
/ ``validate_options``; ``make_rope`` (one rotary layer); ``create_vit`` (a timm ViT with rotary
attention, a ``RopeVisionTransformer``), ``resolved_options``, ``fold_for_inference``; measurements
``relative_property_error``, ``shift_error``, ``basis_motion`` (with ``shifted_positions``, ``grid_offset``).
Only torch and timm are imported here; the Hydra harness lives in its own modules.
"""

from rope_ext.encoding.motion import basis_motion
from rope_ext.encoding.relativity import (
    grid_offset,
    relative_property_error,
    shift_error,
    shifted_positions,
)
from rope_ext.encoding.rotary import (
    COORDS,
    ENCODINGS,
    IMPLS,
    INITS,
    PE_NAMES,
    ROTARY_NAMES,
    Augment,
    BlockRotary,
    LieBlockRotary,
    RopeSpec,
    make_rope,
    validate_options,
    validate_pe,
)
from rope_ext.encoding.vit import (
    POOLS,
    RopeVisionTransformer,
    create_vit,
    fold_for_inference,
    resolved_options,
)

__all__ = [
    "COORDS",
    "ENCODINGS",
    "POOLS",
    "IMPLS",
    "INITS",
    "PE_NAMES",
    "ROTARY_NAMES",
    "Augment",
    "BlockRotary",
    "LieBlockRotary",
    "RopeSpec",
    "RopeVisionTransformer",
    "basis_motion",
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
