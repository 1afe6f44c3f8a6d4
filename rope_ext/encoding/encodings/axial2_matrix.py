"""``axial2_matrix``: Heo et al.'s 2×2 RoPE-Axial computed with explicit 2×2 rotation matrices."""

from __future__ import annotations

from rope_ext.encoding.encodings.axial_block import BlockRotary
from rope_ext.encoding.registry import Accepts, EncodingInfo, Variant, register

INFO = register(
    EncodingInfo(
        name="axial2_matrix",
        layer=BlockRotary,
        summary="Heo et al.'s RoPE-Axial, a dense 2×2 rotation matrix per token and block, multiplied in",
        accepts=Accepts(block=2, impls=("matrix",), mixed=False, layout_of=False, learnable_false=True),
        bench_variants=(Variant("axial2_matrix"),),
        arm_variants=(
            Variant("axial2_matrix", {}, "Heo et al.'s 2x2 RoPE-Axial, explicit 2x2 rotation matrices"),
        ),
        table_variants=(Variant("axial2_matrix"),),
        order=1,
    )
)
