"""How far training moved the learned block bases: per rotary layer, the rotation angle of each
block's Q and the tilt of its rotation planes (``basis_motion``; metrics.json ``basis_motion``).

With fixed axial frequencies an N×N axial model differs from the 2×2 planes of the same layout
(``layout_of``) only in Q, so whether Q moves at all is part of the blocks study's answer.
"""

from __future__ import annotations

from typing import TypedDict

import torch
from torch import nn

from rope_ext.encoding.vit import rotary_attentions


class LayerMotion(TypedDict):
    """One rotary layer's bases, over heads and blocks (degrees)."""

    layer: int  # index among the model's rotary attention layers
    angle_max_deg: float  # largest rotation angle of any block's Q (``functional.rotation_angles``)
    angle_mean_deg: float
    tilt_max_deg: float  # largest tilt of any rotated plane (``functional.plane_tilts``; gauge-invariant)
    tilt_mean_deg: float


@torch.no_grad()
def basis_motion(model: nn.Module) -> list[LayerMotion] | None:
    """Each rotary layer's basis motion (its ``RotaryLayer.basis_motion``), in layer order; None when
    no layer has a basis (N = 2, no rotary encoding, lie_block, or a model folded for inference).
    A frozen basis gives zeros."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module (from create_vit); got {type(model).__name__}")
    out: list[LayerMotion] = []
    for i, attn in enumerate(rotary_attentions(model)):
        record = attn.rope.basis_motion()
        if record is not None:
            out.append({"layer": i, **record})
    return out or None
