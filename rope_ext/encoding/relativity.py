"""How relative a model is: the relative property of its rotary layers (``relative_property_error``)
and the end-to-end shift error (``shifted_positions``, ``grid_offset``, ``shift_error``), plus the
per-run measurements the trainer's final evaluation records (``shift_metrics``: ``shift_error``,
``test_acc_shifted`` in metrics.json)."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from rope_ext.encoding import registry
from rope_ext.encoding.inputs import check_images, check_module
from rope_ext.encoding.spec import is_int, is_number
from rope_ext.encoding.vit import rope_vits, rotary_attentions


@torch.no_grad()
def relative_property_error(model: nn.Module, grid: int = 4, shift: tuple[float, ...] = (3.0, 5.0)) -> float:
    """Measured max |R(p_i+s)ᵀR(p_j+s) − R(p_i)ᵀR(p_j)| over all rotary layers and heads (float64).

    Positions: a ``grid × grid`` patch grid (1-D: its flattened index), shifted by ``shift``.
    0.0 for models without rotary attention; ~1e-15 for the commuting variants.
    """
    check_module(model)
    if not is_int(grid) or grid < 1:
        raise ValueError(f"grid={grid!r} is not allowed; allowed values: an integer >= 1")
    if not isinstance(shift, tuple | list) or not shift or not all(is_number(s) for s in shift):
        raise ValueError(
            f"shift={shift!r} is not allowed; allowed values: a tuple of finite numbers, one per axis"
        )
    worst = 0.0
    for attn in rotary_attentions(model):
        rope = copy.deepcopy(attn.rope).double().cpu()
        t = torch.arange(grid * grid, dtype=torch.float64)
        pos = torch.stack((t % grid, t // grid), -1) if rope.dims == 2 else t[:, None]
        s = torch.tensor(shift[: rope.dims], dtype=torch.float64)
        r0, r1 = rope.rotation(pos), rope.rotation(pos + s)
        g0 = torch.einsum("hiab,hjac->hijbc", r0, r0)
        g1 = torch.einsum("hiab,hjac->hijbc", r1, r1)
        worst = max(worst, (g1 - g0).abs().max().item())
    return worst


def _offsets(offset: float | tuple[float, ...], dims: int) -> tuple[float, ...]:
    """``offset`` (one number for all axes, or one per axis) as a tuple of ``dims`` finite floats."""
    off = (offset,) * dims if isinstance(offset, int | float) and not isinstance(offset, bool) else offset
    try:
        off = tuple(float(v) for v in off)
    except (TypeError, ValueError):
        off = None
    if off is None or len(off) != dims or not all(map(math.isfinite, off)):
        raise ValueError(
            f"offset={offset!r} is not allowed; allowed values: a finite number, or one finite number "
            f"per position axis ({dims})"
        )
    return off


@contextmanager
def shifted_positions(model: nn.Module, offset: float | tuple[float, ...]) -> Iterator[None]:
    """Inside the block every token position of ``model`` is moved by ``offset`` (a number for all
    axes, or one per axis; in the units of the coordinates in use), pixels unchanged."""
    models = rope_vits(model)
    saved = [m.position_offset for m in models]
    try:
        for m in models:
            m.position_offset = _offsets(offset, m.rope_spec.dims)
        yield
    finally:
        for m, off in zip(models, saved):
            m.position_offset = off


def grid_offset(
    model: nn.Module, image_size: tuple[int, int], patches: float | None = None
) -> tuple[float, ...]:
    """An offset of ``patches`` grid steps per axis (None: half the grid, rounded down) for inputs
    of ``image_size`` (H, W), in the model's coordinate units: patches for ``coords="patch"``,
    2·patches/g for ``"normalized"`` (where one step is 2/g). () for a model without rotary layers."""
    models = rope_vits(model)
    if not models:
        return ()
    vit, spec = models[0], models[0].rope_spec
    gh, gw = vit.patch_embed.dynamic_feat_size(tuple(image_size))
    extent = (gw, gh) if spec.dims == 2 else (gh * gw,)
    steps = [float(e // 2) if patches is None else float(patches) for e in extent]
    if spec.coords == "normalized":
        return tuple(2 * s / e for s, e in zip(steps, extent))
    return tuple(steps)


@torch.no_grad()
def shift_error(model: nn.Module, images: Tensor, offset: float | tuple[float, ...]) -> float | None:
    """Largest relative change of the logits, max|Δlogit| / max|logit|, when every token position is
    moved by ``offset`` (coordinate units, see ``shifted_positions``) with the pixels unchanged.

    Eval mode, float32 logits. ~1e-7 for a commuting rotary encoding with ``pool="avg"`` and no
    absolute embedding (the model is then relative end to end); large with a class token, which is
    unrotated and so reads absolute positions through qᵀR(p_j)k_j. None for a ViT without rotary
    layers (``pe="none"``, APE): it has no position input to move, so nothing is measured. Raises
    ValueError for a module that is not a timm ViT or an offset that is not finite.
    """
    check_module(model)
    models = rope_vits(model)
    if not models:
        if not any(isinstance(m, VisionTransformer) for m in model.modules()):
            raise ValueError(
                f"shift_error needs a timm VisionTransformer (from create_vit); got {type(model).__name__}"
            )
        return None
    _offsets(offset, models[0].rope_spec.dims)  # refuse a bad offset before any forward
    check_images(models[0], images)
    was_training = model.training
    model.eval()
    try:
        base = model(images).float()
        with shifted_positions(model, offset):
            moved = model(images).float()
    finally:
        model.train(was_training)
    return ((moved - base).abs().max() / base.abs().max().clamp_min(1e-30)).item()


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
) -> dict[str, float | None]:
    """``shift_error`` on the first ``SHIFT_IMAGES`` test images for a one-patch shift of all
    positions, and ``test_acc_shifted``: ``evaluate()`` (test accuracy over the whole split, summed
    over ranks) with every position moved by half the grid. Models without rotary layers have no
    positions to move: both None (not measured). Every rank must call it (evaluate reduces)."""
    if not rope_vits(model):
        return {"shift_error": None, "test_acc_shifted": None}
    images = next(iter(test_batches))[0][:SHIFT_IMAGES]
    size = tuple(images.shape[-2:])
    error = shift_error(model, images, grid_offset(model, size, SHIFT_PATCHES))
    with shifted_positions(model, grid_offset(model, size)):
        shifted = evaluate()
    return {"shift_error": error, "test_acc_shifted": shifted}


# -- the table in README / the closing note: python -m rope_ext.encoding.relativity --------------------------


def table_variants() -> list[tuple[str, str, dict]]:
    """(label, pe, options) of every registered encoding's ``table_variants``, in registry order."""
    return [(v.label, info.name, dict(v.options)) for info in registry.infos() for v in info.table_variants]


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
    for label, pe, options in table_variants():
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
                cells[(pool, weights)] = shift_error(
                    model, images, grid_offset(model, (32, 32), SHIFT_PATCHES)
                )
        row = [
            cells[("cls", "init")],
            cells[("avg", "init")],
            cells[("cls", "perturbed")],
            cells[("avg", "perturbed")],
        ]
        lines.append(f"| {label} | " + " | ".join("n/a" if v is None else f"{v:.1e}" for v in row) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(
        f"shift_error = max|Δlogit| / max|logit| for a shift of all positions by one patch (pixels unchanged), "
        f"float32, eval mode, 8 random images (torch {torch.__version__})\n"
    )
    print(_table())
