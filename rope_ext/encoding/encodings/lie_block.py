"""``lie_block``: the non-commuting control, R(p) = matrix_exp(Σ_a p_a S_a) with free generators."""

from __future__ import annotations

from rope_ext.encoding.registry import Accepts, EncodingInfo, Variant, register
from rope_ext.encoding.rotary import LieBlockRotary

__all__ = ["INFO", "LieBlockRotary"]

INFO = register(
    EncodingInfo(
        name="lie_block",
        layer=LieBlockRotary,
        summary="non-commuting control (LieRE-like): free skew generator per axis, relative along one axis only",
        exact_relative=False,
        # Free per-axis generators already let every block respond to every axis: `mixed` changes
        # nothing (the axial frequency base stays), and the generators are always learned.
        accepts=Accepts(
            block=None,
            impls=("matrix",),
            mixed=True,
            layout_of=False,
            learnable_false=False,
            default_block=3,
            theta_mixed=100.0,
        ),
        bench_variants=(Variant("lie_block N={block}"),),
        arm_variants=tuple(
            Variant(
                f"lie_block_n{n}",
                {"pe.block": n},
                f"non-commuting control (LieRE-style), {n}x{n} blocks: relative property broken"
                + (" (exact for N=2)" if n == 2 else ""),
            )
            for n in (2, 3, 4, 5, 6)
        ),
        table_variants=tuple(Variant(f"lie_block N={n}", {"block": n}) for n in (2, 3, 4, 6)),
        order=4,
    )
)
