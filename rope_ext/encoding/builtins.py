"""The built-in encodings: each one's ``EncodingInfo`` (traits, accepted options, the variants the tools
include), registered when the registry is first asked. Their layers are named as ``"module:Class"``
strings (``rope_ext.encoding.encodings``: one module per layer family), so that listing and checking
encodings imports no torch. A new built-in encoding is its layer class there and its entry here.
"""

from __future__ import annotations

from rope_ext.encoding.registry import THETA, Accepts, EncodingInfo, Variant, register

BLOCK_ROTARY = "rope_ext.encoding.encodings.axial_block:BlockRotary"
LIE_BLOCK_ROTARY = "rope_ext.encoding.encodings.lie_block:LieBlockRotary"

NONE = register(
    EncodingInfo(
        name="none",
        layer=None,
        summary="not rotary; the ViT keeps timm's learned absolute position embedding",
        rotary=False,
        exact_relative=False,
        bench_variants=(Variant("none"),),
        arm_variants=(
            Variant(
                "none",
                {"model.pos_embed": "learn"},
                "plain ViT, learned absolute position embedding (APE), no rotary encoding",
            ),
            Variant(
                "none_nopos",
                {"model.pos_embed": "none"},
                "no position information at all (no APE, no rotary): the position-free control",
            ),
            Variant(
                "none_avg",
                {"model.pos_embed": "learn", "model.pool": "avg"},
                "APE (interpolated at other sizes) with average pooling",
            ),
        ),
        table_variants=(Variant("none (APE)"),),
        order=0,
    )
)


AXIAL2_MATRIX = register(
    EncodingInfo(
        name="axial2_matrix",
        layer=BLOCK_ROTARY,
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


AXIAL2_COMPLEX = register(
    EncodingInfo(
        name="axial2_complex",
        layer=BLOCK_ROTARY,
        summary="the same function by complex multiplication (Heo et al.'s code); same parameters",
        accepts=Accepts(block=2, impls=("fast",), mixed=False, layout_of=False, learnable_false=True),
        bench_variants=(Variant("axial2_complex"),),
        arm_variants=(
            Variant("axial2_complex", {}, "Heo et al.'s 2x2 RoPE-Axial, complex multiplication"),
            Variant(
                "axial2_complex_identity",
                {"pe.init": "identity"},
                "2x2 RoPE-Axial, complex multiplication, frequencies starting at 0 (R = I: a pretrained "
                "model's function unchanged at step 0) and learned",
            ),
        ),
        table_variants=(Variant("axial2_complex"),),
        order=2,
    )
)


_KIND = {"axial": "axial (each block follows one axis)", "mixed": "mixed (every plane responds to x and y)"}


def _axial_block_arms() -> tuple[Variant, ...]:
    """axial_block's arms in the studies (``experiments/make_arms.py``)."""
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
    # fine-tune study: rotary frequencies starting at 0 (R = I), so RoPE added to a pretrained model
    # leaves its function unchanged at step 0
    arms.append(
        Variant(
            "axial_block_n3_identity",
            {"pe.block": 3, "pe.impl": "fast", "pe.mixed": False, "pe.init": "identity"},
            "3x3 commuting blocks, axial, fast impl, frequencies starting at 0 (R = I) and learned",
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


AXIAL_BLOCK = register(
    EncodingInfo(
        name="axial_block",
        layer=BLOCK_ROTARY,
        summary=(
            "commuting N×N blocks Q·D(p)·Qᵀ with a learned basis Q (N = head_dim: one dense block per head, "
            "the Cayley-STRING form); `impl=matrix` materialises the N×N block rotations, `impl=fast` rotates "
            "planes in the basis; same parameters, same function"
        ),
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
        arm_variants=_axial_block_arms(),
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


LIE_BLOCK = register(
    EncodingInfo(
        name="lie_block",
        layer=LIE_BLOCK_ROTARY,
        summary=(
            "non-commuting control (LieRE-like): a free skew generator per axis and block, `matrix_exp` per "
            "token; breaks the relative property (exact along one axis; N = 2 is exact since so(2) is abelian)"
        ),
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
            theta_mixed=THETA,
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
