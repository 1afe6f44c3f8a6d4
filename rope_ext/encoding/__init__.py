"""The encoding library: rotary position encodings for timm ViTs. Imports torch and timm (and triton
where installed, for the fused rotation's CUDA kernel).

Modules: ``spec`` (``RopeSpec``: an encoding's options and defaults; ``validate_pe``, the one check;
``make_rope``), ``registry`` (the encodings by name, with their traits; ``register``,
``load_module``), ``functional`` (the pure tensor functions), ``layer`` (``RotaryLayer``, the
interface every encoding's layer implements), ``encodings/`` (one module per built-in encoding),
``fused_rotation`` (the ``rope_ext::rotate_qk`` op: q and k rotated in one pass, a Triton kernel on
CUDA), ``projection`` (what the layers need per step, built for all layers at once: qkv weights
moved into the bases, rotation tables), ``vit`` (``create_vit``, ``fold_for_inference``), ``weights``
(pretrained or local weights),
``relativity`` (the relative property and the shift error), ``motion`` (how far training moved each
block basis). The names below are the ones a user calls; the rest is importable from its module.
"""

from rope_ext.encoding.motion import basis_motion
from rope_ext.encoding.registry import EncodingInfo, load_module, register
from rope_ext.encoding.relativity import relative_property_error
from rope_ext.encoding.spec import RopeSpec, make_rope, validate_pe
from rope_ext.encoding.vit import create_vit, fold_for_inference

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
