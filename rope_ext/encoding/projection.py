"""What a rotary ViT's attention layers need for one step, built for all layers at once: the qkv
weights moved into their rotation bases (``moved_qkv``) and the rotation tables (``shared_tables``).

A learned basis Q acts on the q/k rows of each layer's qkv weight (``project_qkv``). Done per layer,
that is a Cayley solve, a scatter, a matmul and a concatenation in every attention forward;
here the layers that share a shape are stacked, so one solve and one batched matmul serve them all
(no host sync), and each layer reads its weight as a view of the result (autograd returns the
gradients with one stack). At eval (no gradient can flow) the result is cached until a parameter,
the autocast state or inference mode changes, so an N×N model then costs what its folded copy costs. The tables, likewise: one angle product and one
cos/sin for all layers where they share a layout (under torch.compile too, where no table is cached).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch
from torch import Tensor, nn

from rope_ext.encoding.layer import TableCache

Moved = tuple[Tensor, Tensor | None] | None


def _movers(attns: Sequence[nn.Module]) -> list[int]:
    """Layers whose basis moves into the projection (no qk-norm between projection and rotation)."""
    return [
        i for i, a in enumerate(attns) if a.rope.fold_into_projection and isinstance(a.q_norm, nn.Identity)
    ]


def _cache_key(params: list[Tensor], device: torch.device) -> Hashable | None:
    if torch.compiler.is_compiling() or (torch.is_grad_enabled() and any(p.requires_grad for p in params)):
        return None
    autocast = (torch.is_autocast_enabled(device.type), torch.get_autocast_dtype(device.type))
    versions = tuple((p.data_ptr(), p._version, p.dtype) for p in params)
    return (versions, torch.is_inference_mode_enabled(), autocast, device)


def moved_qkv(attns: Sequence[nn.Module], cache: TableCache | None = None) -> tuple[Moved, ...]:
    """Per attention layer (``RopeAttention``), its (weight, bias) moved into the rotation basis, or
    None where nothing moves. Layers with the same rotary type and shapes are done together."""
    movers = _movers(attns)
    out: list[Moved] = [None] * len(attns)
    if not movers:
        return tuple(out)
    params = [p for i in movers for p in (*attns[i].rope.parameters(), *attns[i].qkv.parameters())]
    key = None if cache is None else _cache_key(params, params[0].device)
    cached = None if cache is None else cache.get(key)
    if cached is not None:
        return cached
    groups: dict[Hashable, list[int]] = {}
    for i in movers:
        rope, qkv = attns[i].rope, attns[i].qkv
        shape = (type(rope), rope.block, rope.num_heads, rope.head_dim, qkv.weight.shape, qkv.bias is None)
        groups.setdefault(shape, []).append(i)
    for layers in groups.values():
        first = attns[layers[0]].rope
        weights = [attns[i].qkv.weight for i in layers]
        biases = None if attns[layers[0]].qkv.bias is None else [attns[i].qkv.bias for i in layers]
        moved = first.project_qkv_layers([attns[i].rope for i in layers], weights, biases)
        for i, pair in zip(layers, moved, strict=True):
            out[i] = pair
    if cache is not None:
        cache.put(key, tuple(out))
    return tuple(out)


def _table_key(params: list[Tensor], grid_key: Hashable | None) -> Hashable | None:
    if grid_key is None or torch.compiler.is_compiling():
        return None
    if torch.is_grad_enabled() and any(p.requires_grad for p in params):
        return None
    versions = tuple((p.data_ptr(), p._version, p.dtype) for p in params)
    return (grid_key, torch.is_inference_mode_enabled(), versions)


def shared_tables(
    ropes: Sequence[nn.Module],
    pos: Tensor,
    num_prefix: int,
    grid_key: Hashable | None,
    cache: TableCache | None,
) -> tuple[tuple[Tensor, ...] | None, ...]:
    """Per rotary layer, its tables built together with the other layers of the same layout
    (``shares_tables``), or None where a layer builds its own; cached like a layer's tables."""
    groups: dict[Hashable, list[int]] = {}
    for i, rope in enumerate(ropes):
        shared = rope.shares_tables()
        if shared is not None:
            groups.setdefault(shared, []).append(i)
    out: list[tuple[Tensor, ...] | None] = [None] * len(ropes)
    if not groups:
        return tuple(out)
    params = [p for layers in groups.values() for i in layers for p in ropes[i]._table_params()]
    key = None if cache is None else _table_key(params, grid_key)
    cached = None if cache is None else cache.get(key)
    if cached is not None:
        return cached
    for layers in groups.values():
        built = ropes[layers[0]].tables_layers([ropes[i] for i in layers], pos, num_prefix)
        for i, tables in zip(layers, built, strict=True):
            out[i] = tables
    if cache is not None:
        cache.put(key, tuple(out))
    return tuple(out)
