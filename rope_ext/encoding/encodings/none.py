"""``none``: no rotary encoding (timm's learned absolute position embedding by default)."""

from __future__ import annotations

from rope_ext.encoding.registry import EncodingInfo, Variant, register

INFO = register(
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
