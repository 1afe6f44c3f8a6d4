"""Per-run measurements of how relative a trained model is end to end (``shift_error``,
``test_acc_shifted`` in metrics.json), called from the trainer's final evaluation."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from rope_ext.encoding.vit import grid_offset, patch_grids, shift_error, shifted_positions

# The fixed batch and offsets every run is measured with.
SHIFT_IMAGES = 32  # first images of the test split (in order)
SHIFT_PATCHES = 1.0  # shift_error: one grid step per axis
# test_acc_shifted: half the grid per axis (grid_offset's default), an integer number of patches


@torch.no_grad()
def perturb_rotary(model: nn.Module, scale: float, seed: int | None = None) -> nn.Module:
    """Add N(0, scale²) noise to every rotary parameter of ``model`` (in place), from the global
    generator or a fresh one seeded ``seed``: at init the basis is Q = I, where properties that must
    hold for any parameters (relativity, impls agreeing, folding) are trivially true."""
    gen = None if seed is None else torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if ".rope." in name:
            noise = torch.randn_like(p) if gen is None else torch.randn(p.shape, generator=gen, dtype=p.dtype)
            p.add_(noise.to(p.device) * scale)
    return model


@torch.no_grad()
def perturb(model: nn.Module, qkv_std: float) -> torch.nn.Module:
    """Move a fresh ViT away from init (in place): rotary parameters + N(0, 0.3²), class token N(0, 1),
    qkv weights N(0, qkv_std²). timm's init leaves attention near uniform, which hides position leaks."""
    perturb_rotary(model, 0.3)
    if model.cls_token is not None:
        model.cls_token.normal_()
    for blk in model.blocks:
        blk.attn.qkv.weight.normal_(0, qkv_std)
    return model


@torch.no_grad()
def shift_metrics(
    model: nn.Module,
    test_batches: Iterable[tuple[Tensor, Any]],
    evaluate: Callable[[], float],
    test_acc: float,
) -> dict[str, float]:
    """``shift_error`` on the first ``SHIFT_IMAGES`` test images for a one-patch shift of all
    positions, and ``test_acc_shifted``: ``evaluate()`` (test accuracy over the whole split, summed
    over ranks) with every position moved by half the grid. Models without rotary layers have no
    positions to move: 0.0 and ``test_acc``, trivially. Every rank must call it (evaluate reduces)."""
    if not patch_grids(model):
        return {"shift_error": 0.0, "test_acc_shifted": test_acc}
    images = next(iter(test_batches))[0][:SHIFT_IMAGES]
    size = tuple(images.shape[-2:])
    error = shift_error(model, images, grid_offset(model, size, SHIFT_PATCHES))
    with shifted_positions(model, grid_offset(model, size)):
        shifted = evaluate()
    return {"shift_error": error, "test_acc_shifted": shifted}


# -- the table in README / the closing note: python -m rope_ext.encoding.relativity --------------------------

TABLE_VARIANTS: list[tuple[str, str, dict]] = [
    ("none (APE)", "none", {}),
    ("axial2_matrix", "axial2_matrix", {}),
    ("axial2_complex", "axial2_complex", {}),
    *[(f"axial_block N={n}", "axial_block", {"block": n}) for n in (2, 3, 4, 5, 6, 8, 16, 32, 64)],
    ("axial_block N=4 matrix", "axial_block", {"block": 4, "impl": "matrix"}),
    ("axial_block N=3 mixed", "axial_block", {"block": 3, "mixed": True}),
    ("axial_block N=4 normalized", "axial_block", {"block": 4, "coords": "normalized"}),
    ("axial_block N=2 layout_of=3", "axial_block", {"block": 2, "layout_of": 3}),
    *[(f"lie_block N={n}", "lie_block", {"block": n}) for n in (2, 3, 4, 6)],
]


def _table(seed: int = 0) -> str:
    """shift_error (one grid step) of every variant with both pools, on the CIFAR ViT shape
    (embed 192, depth 6, 3 heads, 32 px, patch 4), for two sets of random weights: timm's init as
    built, and 'perturbed' (rotary parameters + N(0, 0.3²), class token N(0, 1), qkv weights
    N(0, 0.1²): attention far from uniform, as after training)."""
    from rope_ext.encoding.vit import create_vit

    images = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    lines = [
        "| variant | cls, timm init | avg, timm init | cls, perturbed | avg, perturbed |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, pe, options in TABLE_VARIANTS:
        cells = {}
        for weights in ("init", "perturbed"):
            for pool in ("cls", "avg"):
                torch.manual_seed(seed)
                model = create_vit(
                    "vit_tiny_patch16_224",
                    pe=pe,
                    num_classes=10,
                    img_size=32,
                    pe_options=options,
                    pool=pool,
                    patch_size=4,
                    embed_dim=192,
                    depth=6,
                    num_heads=3,
                )
                if weights == "perturbed":
                    perturb(model, qkv_std=0.1)
                offset = grid_offset(model, (32, 32), SHIFT_PATCHES) or (1.0, 1.0)
                cells[(pool, weights)] = shift_error(model, images, offset)
        row = [
            cells[("cls", "init")],
            cells[("avg", "init")],
            cells[("cls", "perturbed")],
            cells[("avg", "perturbed")],
        ]
        lines.append(f"| {label} | " + " | ".join(f"{v:.1e}" for v in row) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(
        f"shift_error = max|Δlogit| / max|logit| for a shift of all positions by one patch (pixels unchanged), "
        f"float32, eval mode, 8 random images (torch {torch.__version__})\n"
    )
    print(_table())
