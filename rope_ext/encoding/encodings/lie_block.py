"""``lie_block``: the non-commuting control, R(p) = matrix_exp(Σ_a p_a S_a) with free generators."""

from __future__ import annotations

from collections.abc import Hashable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rope_ext.encoding.functional import (
    NORMALIZED_SCALE,
    apply_block_matrices,
    axial_layout,
    block_diagonal,
    skew,
)
from rope_ext.encoding.layer import RotaryLayer, stacked
from rope_ext.encoding.spec import RopeSpec


class LieBlockRotary(RotaryLayer):
    """Non-commuting control (LieRE-like): R(p) = matrix_exp(Σ_a p_a S_a) per block, with an
    independent free skew generator S_a per axis. Exact only along one axis; it exists to measure
    what the relative property is worth. Matrix impl only (no plane decomposition exists).

    Parameters: ``generator_skew`` [A, H, nb, N(N-1)/2], initialised to the axial layout (each plane
    follows one axis, Q = I), so a fresh model equals ``axial_block`` and training breaks commutation.
    """

    def __init__(self, spec: RopeSpec, *, head_dim: int, num_heads: int) -> None:
        super().__init__(spec, head_dim=head_dim, num_heads=num_heads)
        block, dims, init, coords = spec.block, spec.dims, spec.init, spec.coords
        k = block // 2
        scale = NORMALIZED_SCALE if coords == "normalized" else 1.0
        freqs, axis = axial_layout(self.num_blocks, k, dims, self.theta, scale)
        if init == "identity":
            freqs.zero_()
        # Plane i of a block is (2i, 2i+1); its entry in the strict upper triangle (row-major) is
        # r·n − r(r+1)/2 + (c − r − 1). J = [[0,-1],[1,0]] has -1 above the diagonal.
        r = 2 * torch.arange(k)
        idx = r * block - r * (r + 1) // 2
        gen = torch.zeros(dims, num_heads, self.num_blocks, block * (block - 1) // 2)
        onehot = F.one_hot(axis, dims).T.float().view(dims, self.num_blocks, k)  # [A, nb, k]
        gen[..., idx] = -(onehot * freqs.view(self.num_blocks, k))[:, None]
        self.generator_skew = nn.Parameter(gen)

    def generators(self) -> Tensor:
        return block_diagonal(skew(self.generator_skew, self.block), self.head_dim)

    def _build_tables(self, pos: Tensor, num_prefix: int) -> tuple[Tensor, ...]:
        """Per-token block rotations [H, T, nb, N, N] (float32), identity for prefix tokens:
        ``tables_layers`` of this layer alone."""
        return self.tables_layers([self], pos, num_prefix)[0]

    def shares_tables(self) -> Hashable | None:
        """Layers of one shape build their block rotations together (``tables_layers``)."""
        return (type(self), self.spec, self.head_dim, self.num_heads)

    def tables_layers(
        self, layers: list[RotaryLayer], pos: Tensor, num_prefix: int
    ) -> list[tuple[Tensor, ...]]:
        """``_build_tables`` of every layer at once: their generators stacked, one matmul and one
        ``matrix_exp`` for all (each layer's [H, T, nb, N, N] a view of the result)."""
        with torch.autocast(device_type=pos.device.type, enabled=False):
            gens = skew(stacked([layer.generator_skew for layer in layers], 1), self.block)
            dtype = torch.promote_types(gens.dtype, torch.float32)
            if num_prefix:
                pos = F.pad(pos, (0, 0, num_prefix, 0))
            # Σ_a p_a S_a as one matmul whose output is contiguous [T, L, H, nb, N, N] ([A, L, H, nb, N, N]
            # flattened after the axis): matrix_exp needs a contiguous input, and under torch.compile a
            # permuted einsum output stays strided (inductor drops a .contiguous() on it)
            summed = (pos.to(dtype) @ gens.to(dtype).flatten(1)).view(-1, *gens.shape[1:])
            mats = torch.linalg.matrix_exp(summed).permute(1, 2, 0, 3, 4, 5)
        return [(m,) for m in mats.unbind(0)]

    def _rotate(self, x: Tensor, tables: tuple[Tensor, ...], in_basis: bool) -> Tensor:
        return apply_block_matrices(x, tables[0])
