"""``axial2_complex``: Heo et al.'s 2×2 RoPE-Axial computed by complex multiplication."""

from __future__ import annotations

from rope_ext.encoding.encodings.axial_block import BlockRotary
from rope_ext.encoding.registry import Accepts, EncodingInfo, Variant, register

INFO = register(
    EncodingInfo(
        name="axial2_complex",
        layer=BlockRotary,
        summary="the same function by complex multiplication (Heo et al.'s code); same parameters",
        accepts=Accepts(block=2, impls=("fast",), mixed=False, layout_of=False, learnable_false=True),
        bench_variants=(Variant("axial2_complex"),),
        arm_variants=(Variant("axial2_complex", {}, "Heo et al.'s 2x2 RoPE-Axial, complex multiplication"),),
        table_variants=(Variant("axial2_complex"),),
        order=2,
    )
)
