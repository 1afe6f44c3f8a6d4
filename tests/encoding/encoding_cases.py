"""The encodings the library tests run on, read from the registry and filtered by traits: a new
encoding (a built-in module, or one named in ROPE_EXT_MODULES) is tested with no edit here."""

from __future__ import annotations

from collections.abc import Callable

import torch
from hypothesis import strategies as st

from rope_ext.encoding import registry
from rope_ext.encoding.registry import EncodingInfo
from rope_ext.encoding.spec import INITS
from rope_ext.encoding.vit import create_vit, fold_for_inference

# the block counters' ViT: head_dim 32, 16 patches + a class token
SMALL_VIT = dict(img_size=32, patch_size=8, embed_dim=64, num_heads=2)


def small_vit(pe: str, options: dict, *, depth: int) -> torch.nn.Module:
    """A ``SMALL_VIT`` of encoding ``pe`` (seed 0)."""
    torch.manual_seed(0)
    return create_vit(
        "vit_tiny_patch16_224", pe=pe, pe_options=options, num_classes=10, depth=depth, **SMALL_VIT
    )


def small_vit_builder(pe: str, options: dict, fold: bool) -> Callable[[int], torch.nn.Module]:
    """depth -> ``small_vit`` (folded for inference with ``fold``): what ``rope_ext.opcount``'s per-block
    counters take."""

    def build(depth: int) -> torch.nn.Module:
        model = small_vit(pe, options, depth=depth)
        return fold_for_inference(model) if fold else model

    return build


def is_fused(pe: str, options: dict) -> bool:
    """Whether encoding ``pe`` with ``options`` runs the fused rotation (``impl="fast"``)."""
    return pe != "none" and small_vit(pe, options, depth=1).rope_spec.impl == "fast"


def rotary(**traits: bool) -> list[EncodingInfo]:
    """The rotary encodings whose traits have the given values, e.g. ``rotary(exact_relative=True)``."""
    return [
        info
        for info in registry.infos()
        if info.rotary and all(getattr(info, key) == value for key, value in traits.items())
    ]


def names(**traits: bool) -> list[str]:
    return [info.name for info in rotary(**traits)]


def cases(info: EncodingInfo, *, head_dim: int = 24, extra: bool = False) -> list[tuple[str, dict]]:
    """One configuration per accepted option: the defaults, two block sizes (one odd, leaving
    dims unrotated) where any N is accepted, each other impl, mixed, 1-D positions; with ``extra``
    also N = head_dim, normalized coordinates and the layout_of control where accepted."""
    if not info.rotary:
        return [(info.name, {})]
    accepts, free = info.accepts, info.accepts.block is None
    out: list[dict] = [{}]
    if free:
        out += [{"block": 2}, {"block": 5}]
    out += [{"impl": impl, **({"block": 4} if free else {})} for impl in accepts.impls[1:]]
    if accepts.mixed:
        out.append({"mixed": True, **({"block": 3} if free else {})})
    out.append({"dims": 1, **({"block": 5} if free else {})})
    if extra:
        out.append({"coords": "normalized", **({"block": 4} if free else {})})
        if free:
            out.append({"block": head_dim})
        if accepts.layout_of:
            out.append({"block": 2, "layout_of": 3})
    return [(info.name, options) for options in out]


def all_cases(**traits: bool) -> list[tuple[str, dict]]:
    """``cases`` of every encoding, ``none`` included (traits filter the rotary ones)."""
    plain = [(i.name, {}) for i in registry.infos() if not i.rotary]
    return plain + [case for info in rotary(**traits) for case in cases(info)]


def case_id(case: object) -> str:
    return str(case)


def option_strategy(info: EncodingInfo, max_block: int = 6) -> st.SearchStrategy[dict]:
    """Any accepted combination of block (2..max_block where free), impl, mixed and init."""
    accepts = info.accepts
    fields = {"impl": st.sampled_from(accepts.impls), "init": st.sampled_from(INITS)}
    if accepts.block is None:
        fields["block"] = st.integers(2, max_block)
    if accepts.mixed:
        fields["mixed"] = st.booleans()
    return st.fixed_dictionaries(fields)
