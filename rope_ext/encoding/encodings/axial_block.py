"""``axial_block``: commuting N×N blocks, R(p) = Q·D(p)·Qᵀ per block, any N in 2..head_dim."""

from __future__ import annotations

from rope_ext.encoding.registry import Accepts, EncodingInfo, Variant, register
from rope_ext.encoding.rotary import BlockRotary

__all__ = ["BlockRotary", "INFO"]

_KIND = {"axial": "axial (each block follows one axis)", "mixed": "mixed (every plane responds to x and y)"}


def _arms() -> tuple[Variant, ...]:
    """The studies' arms of this encoding (``experiments/make_arms.py``)."""
    arms = []
    for n in (2, 3, 4, 5, 6, 16):
        for suffix, impl, mixed in (
            ("", "fast", False),
            ("_matrix", "matrix", False),
            ("_mixed", "fast", True),
        ):
            if n == 16 and suffix:
                continue
            kind = _KIND["mixed" if mixed else "axial"]
            arms.append(
                Variant(
                    f"axial_block_n{n}{suffix}",
                    {"pe.block": n, "pe.impl": impl, "pe.mixed": mixed},
                    f"{n}x{n} commuting blocks, {kind}, {impl} impl",
                )
            )
    for n in (3, 5, 6):
        # the deconfounding control: 2x2 blocks rotating exactly the planes (same count, same
        # frequencies) that the NxN axial layout rotates
        arms.append(
            Variant(
                f"axial_block_n2_layout_of{n}",
                {"pe.block": 2, "pe.impl": "fast", "pe.mixed": False, "pe.layout_of": n},
                f"2x2 blocks rotating the same planes at the same frequencies as the {n}x{n} axial layout "
                '("fewer rotated dims" without "bigger blocks")',
            )
        )
    # what learning Q is worth: Q kept at its init (I); for N = 3 the layout_of3 control up to a dims
    # permutation, for N = 16 at head_dim 32 2x2 RoPE-Axial itself (docs/encodings.md, pe.basis)
    for n in (3, 16):
        arms.append(
            Variant(
                f"axial_block_n{n}_frozen",
                {"pe.block": n, "pe.impl": "fast", "pe.mixed": False, "pe.basis": "frozen"},
                f"{n}x{n} commuting blocks, axial, fast impl, basis Q frozen at its init (I)",
            )
        )
    # extrapolation study: the class token makes a rotary ViT absolute; average pooling and
    # normalized coordinates are the ways out (model.pool, pe.coords)
    for pool in ("cls", "avg"):
        for coords in ("patch", "normalized"):
            arms.append(
                Variant(
                    f"axial2_{pool}_{coords}",
                    {
                        "pe.block": 2,
                        "pe.impl": "fast",
                        "pe.mixed": False,
                        "model.pool": pool,
                        "pe.coords": coords,
                    },
                    f"2x2 RoPE-Axial (axial_block N=2), model.pool={pool}, pe.coords={coords}",
                )
            )
    return tuple(arms)


INFO = register(
    EncodingInfo(
        name="axial_block",
        layer=BlockRotary,
        summary="commuting N×N blocks Q·D(p)·Qᵀ with a learned basis Q, any N in 2..head_dim (exact relative)",
        learned_basis=True,
        folds=True,
        accepts=Accepts(
            block=None,
            impls=("fast", "matrix"),
            mixed=True,
            layout_of=True,
            learnable_false=True,
            default_block=3,
        ),
        bench_variants=(
            Variant("axial_block N={block} matrix", {"impl": "matrix"}),
            Variant("axial_block N={block} fast", {"impl": "fast"}),
            Variant("axial_block N={block} folded", {"impl": "fast"}, fold=True),
        ),
        arm_variants=_arms(),
        table_variants=(
            *(Variant(f"axial_block N={n}", {"block": n}) for n in (2, 3, 4, 5, 6, 8, 16, 32, 64)),
            Variant("axial_block N=4 matrix", {"block": 4, "impl": "matrix"}),
            Variant("axial_block N=3 mixed", {"block": 3, "mixed": True}),
            Variant("axial_block N=4 normalized", {"block": 4, "coords": "normalized"}),
            Variant("axial_block N=2 layout_of=3", {"block": 2, "layout_of": 3}),
        ),
        order=3,
    )
)
