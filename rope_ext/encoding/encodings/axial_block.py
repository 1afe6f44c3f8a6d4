"""``axial_block``: commuting N×N blocks, R(p) = Q·D(p)·Qᵀ per block, any N in 2..head_dim.

Its layer, ``BlockRotary``, serves the 2×2 encodings too (``axial2_matrix``, ``axial2_complex``).
Three ways compute it and the tests hold them equal:

- ``generators`` + ``matrix_exp``: the definition, dense, used by ``rotation(pos)`` and the checks;
- ``impl="matrix"``: each token's N×N block rotations Q D(p) Qᵀ, materialised and multiplied;
- ``impl="fast"``: move into the basis (``to_basis``: Qᵀ per block, then a fixed permutation that
  lays the P rotated planes out as interleaved pairs in the first 2P dims), rotate the pairs with
  cos/sin or complex numbers, move back. Inside attention the basis is applied to the q/k rows of
  the projection weight instead of to every token (see ``project_qkv``), and ``fold`` bakes it in.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rope_ext.encoding.functional import (
    NORMALIZED_SCALE,
    apply_block_matrices,
    axial_layout,
    block_diagonal,
    block_matrices,
    cayley,
    from_basis,
    plane_angles,
    plane_tilts,
    rotate_pairs,
    rotation_angles,
    to_basis,
)
from rope_ext.encoding.fused_rotation import rotate_qk as fused_rotate_qk
from rope_ext.encoding.layer import RotaryLayer, TableCache, stacked
from rope_ext.encoding.spec import RopeSpec


class BlockRotary(RotaryLayer):
    """Commuting N×N block rotary encoding (axial2_*, axial_block): R(p) = Q D(p) Qᵀ per block.

    Parameters (same keys for both impls, so state dicts move between them):
      ``freqs``: [H, P] (axial: plane j follows one fixed axis) or [H, P, A] (mixed);
      ``basis_skew``: [H, nb, N(N-1)/2], Q = Cayley(skew) (absent for N = 2, where a basis
      commutes with every plane rotation and so changes nothing, and after ``fold``).
    """

    def __init__(self, spec: RopeSpec, *, head_dim: int, num_heads: int) -> None:
        super().__init__(spec, head_dim=head_dim, num_heads=num_heads)
        self.mixed, self.layout_of, self.learnable = spec.mixed, spec.layout_of, spec.learnable
        block, dims, init, coords, layout_of = spec.block, spec.dims, spec.init, spec.coords, spec.layout_of
        self.use_complex = True
        self.folded = False
        k = block // 2
        scale = NORMALIZED_SCALE if coords == "normalized" else 1.0
        if layout_of is not None:
            # Control: 2×2 planes carrying exactly the planes (count, axes, frequencies) of the
            # N×N axial layout, the remaining head dims unrotated.
            freqs, axis = axial_layout(head_dim // layout_of, layout_of // 2, dims, self.theta, scale)
            self.num_blocks = freqs.numel()
        else:
            freqs, axis = axial_layout(self.num_blocks, k, dims, self.theta, scale)
        self.num_planes = self.num_blocks * k
        self.register_buffer("axis_onehot", F.one_hot(axis, dims).float(), persistent=False)
        if self.mixed and dims > 1:
            omega = freqs[:, None] * self.axis_onehot  # [P, A]
            if init == "axial":
                # Heo's RoPE-Mixed init: the axial frequency vectors turned by a random angle per head.
                phi = torch.rand(num_heads) * 2 * math.pi
                rot = torch.stack(
                    (torch.stack((phi.cos(), -phi.sin()), -1), torch.stack((phi.sin(), phi.cos()), -1)), -2
                )  # [H, 2, 2]
                omega = torch.einsum("hab,pb->hpa", rot, omega)
            else:
                omega = omega.expand(num_heads, -1, -1)
            init_freqs = omega.clone()
        else:
            init_freqs = freqs.expand(num_heads, -1).clone()
        if init == "identity":
            init_freqs.zero_()
        self.freqs = nn.Parameter(init_freqs.contiguous(), requires_grad=self.learnable)
        if block > 2:
            skew_init = torch.zeros(num_heads, self.num_blocks, block * (block - 1) // 2)
            self.basis_skew = nn.Parameter(skew_init, requires_grad=spec.basis != "frozen")
            self._register_basis_layout()
        else:
            self.register_parameter("basis_skew", None)

    # -- parameters as math -------------------------------------------------------------------

    def omega(self) -> Tensor:
        """Plane frequency vectors [H, P, A]."""
        if self.freqs.ndim == 3:
            return self.freqs
        return self.freqs[..., None] * self.axis_onehot

    def basis(self) -> Tensor | None:
        """Orthogonal block bases Q [H, nb, N, N], or None (N = 2, or folded).

        Cayley transform Q = (I − S)⁻¹(I + S) of the skew parameter S: Q = I at S = 0, orthogonal
        for every S, and with forward and backward a small solve (about 3× cheaper than
        matrix_exp's on CPU); it reaches every rotation without eigenvalue −1, and a block's basis
        matters only up to the plane rotations it commutes with.
        """
        if self.basis_skew is None:
            return None
        return cayley(self.basis_skew, self.block)

    def generators(self) -> Tensor:
        omega = self.omega()  # [H, P, A]
        planes = omega.permute(2, 0, 1)  # [A, H, P]
        j = planes.new_tensor([[0.0, -1.0], [1.0, 0.0]])
        if self.folded:
            # Folded: the planes already sit as pairs in the first 2P dims, no basis.
            pairs = planes[..., None, None] * j  # [A, H, P, 2, 2]
            return block_diagonal(pairs, self.head_dim)
        k, n = self.block // 2, self.block
        blocks = planes.new_zeros(*planes.shape[:2], self.num_blocks, n, n)
        pairs = (planes[..., None, None] * j).unflatten(2, (self.num_blocks, k))  # [A, H, nb, k, 2, 2]
        blocks[..., : 2 * k, : 2 * k] = block_diagonal(pairs, 2 * k)
        q = self.basis()
        if q is not None:
            blocks = q.to(blocks.dtype) @ blocks @ q.to(blocks.dtype).transpose(-1, -2)
        return block_diagonal(blocks, self.head_dim)

    # -- computing it ------------------------------------------------------------------------------

    def _build_tables(self, pos: Tensor, num_prefix: int) -> tuple[Tensor, ...]:
        """(cos, sin) [H, T, D/2] (planes padded to D/2 with zero angles), plus the block matrices
        [H, T, nb, N, N] for the matrix impl: ``tables_layers`` of this layer alone."""
        return self.tables_layers([self], pos, num_prefix)[0]

    def _table_params(self) -> list[Tensor]:
        # The fast path's tables are cos/sin of the frequencies alone: the basis acts elsewhere.
        matrix = self.impl == "matrix" and not self.folded
        return [self.freqs, self.basis_skew] if matrix and self.basis_skew is not None else [self.freqs]

    @property
    def fold_into_projection(self) -> bool:
        """Fast impl with a basis: attention applies Qᵀ to the projection weight, not to tokens."""
        return self.impl == "fast" and self.basis_skew is not None

    def _register_basis_layout(self) -> None:
        """Where each entry of Qᵀ lands in the dense basis matrix B (see ``basis_matrix``): entry
        (b, i, j) of Q_bᵀ goes to row ``to_basis``'s position of coordinate i of block b (rotated
        pairs first, unrotated after), column b·N + j. Leftover dims map to themselves."""
        n, nb, d, two_k = self.block, self.num_blocks, self.head_dim, 2 * (self.block // 2)
        b, i, j = torch.meshgrid(torch.arange(nb), torch.arange(n), torch.arange(n), indexing="ij")
        row = torch.where(i < two_k, b * two_k + i, nb * two_k + b * (n - two_k) + (i - two_k))
        self.register_buffer("_basis_dest", (row * d + b * n + j).flatten(), persistent=False)
        self.register_buffer("_basis_src", (b * n * n + j * n + i).flatten(), persistent=False)
        tail = torch.arange(nb * n, d)
        const = torch.zeros(d * d)
        const[tail * d + tail] = 1.0
        self.register_buffer("_basis_const", const, persistent=False)

    def basis_matrix(self) -> Tensor | None:
        """The whole change of basis per head as one orthogonal matrix B [H, D, D], u = B·x: the
        same map as ``to_basis`` (tested), built by one scatter of Qᵀ's entries, or None."""
        if self.basis_skew is None:
            return None
        return self.basis_matrices(self.basis_skew[None])[0]

    def basis_matrices(self, skews: Tensor) -> Tensor:
        """``basis_matrix`` of L layers shaped as this one at once: skew parameters [L, H, nb, N(N-1)/2]
        -> B [L, H, D, D] (one Cayley solve and one scatter for all of them)."""
        q = cayley(skews, self.block)
        flat = q.flatten(2)[..., self._basis_src]
        const = self._basis_const.to(q.dtype).expand(*q.shape[:2], -1)
        return const.index_copy(2, self._basis_dest, flat).unflatten(-1, (self.head_dim, self.head_dim))

    def project_qkv(self, weight: Tensor, bias: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Move the q and k rows of a fused qkv projection into the rotation basis.

        weight [3·H·D, C], bias [3·H·D]; the v rows keep their values. O(H·D²·C) per call,
        independent of batch and tokens. q'ᵀ D(p_j − p_i) k' then equals qᵀR(p_i)ᵀR(p_j)k.
        """
        bias_ = None if bias is None else bias[None]
        weights, biases = self.project_qkv_stacked(self.basis_skew[None], weight[None], bias_)
        return weights[0], None if biases is None else biases[0]

    def project_qkv_stacked(
        self, skews: Tensor, weights: Tensor, biases: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        """``project_qkv`` of L layers shaped as this one, all at once (the model does it once per
        step): skews [L, H, nb, N(N-1)/2], weights [L, 3·H·D, C], biases [L, 3·H·D] or None.

        One batched matmul with [B, B, I] per layer: the v rows pass through the identity, so the
        result is one weight per layer, which the projection reads in a single GEMM.
        """
        b = self.basis_matrices(skews).to(weights.dtype)
        layers, heads, d = b.shape[0], self.num_heads, self.head_dim
        eye = torch.eye(d, dtype=b.dtype, device=b.device).expand_as(b)
        b3 = torch.stack((b, b, eye), 1)  # [L, 3, H, D, D]
        moved = (b3 @ weights.view(layers, 3, heads, d, -1)).view(weights.shape)
        if biases is not None:
            biases = (b3 @ biases.view(layers, 3, heads, d, 1)).view(biases.shape)
        return moved, biases

    def project_qkv_layers(
        self, layers: list[RotaryLayer], weights: list[Tensor], biases: list[Tensor] | None
    ) -> list[tuple[Tensor, Tensor | None]]:
        """All layers at once: their skews, weights and biases stacked, one ``project_qkv_stacked``,
        each layer's result a view (their gradients come back with one stack)."""
        skews = torch.stack([layer.basis_skew for layer in layers])
        moved, moved_biases = self.project_qkv_stacked(
            skews, torch.stack(weights), None if biases is None else torch.stack(biases)
        )
        bias_views = [None] * len(layers) if moved_biases is None else moved_biases.unbind(0)
        return list(zip(moved.unbind(0), bias_views, strict=True))

    def rotate_qk(
        self,
        q: Tensor,
        k: Tensor,
        pos: Tensor,
        num_prefix: int = 0,
        in_basis: bool = False,
        grid_key: Hashable | None = None,
        tables: tuple[Tensor, ...] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """The fast path (pairs already in the basis: 2×2, folded, or q and k from ``project_qkv``)
        rotates q and k in one fused op (``rope_ext::rotate_qk``), its outputs token-major; the
        other paths rotate each as ``rotate`` does."""
        if self.impl == "fast" and (in_basis or self.folded or self.basis_skew is None):
            cos, sin = (self.tables(pos, num_prefix, grid_key) if tables is None else tables)[:2]
            return fused_rotate_qk(q, k, cos, sin)
        return super().rotate_qk(q, k, pos, num_prefix, in_basis, grid_key, tables)

    def shares_tables(self) -> Hashable | None:
        """Layers of one shape and plane layout build their tables together: the fast path's cos/sin
        (frequencies alone) and the matrix impl's block matrices (frequencies and basis)."""
        matrix = self.impl == "matrix" and not self.folded
        if self.impl != "fast" and not matrix:
            return None
        return (type(self), self.spec, self.head_dim, self.num_heads, matrix)

    def tables_layers(
        self, layers: list[RotaryLayer], pos: Tensor, num_prefix: int
    ) -> list[tuple[Tensor, ...]]:
        """One angle product, one cos and one sin for all layers (their frequencies stacked); the
        fast path pads them, the matrix impl builds every layer's block matrices in one batch."""
        freqs = stacked([layer.freqs for layer in layers])
        omega = freqs if freqs.ndim == 4 else freqs[..., None] * self.axis_onehot  # [L, H, P, A]
        angles = plane_angles(pos, omega, num_prefix)
        if self.impl == "matrix" and not self.folded:
            cos, sin = angles.cos(), angles.sin()
            basis = None
            if self.basis_skew is not None:
                basis = cayley(stacked([layer.basis_skew for layer in layers]), self.block).flatten(0, 1)
            # layers and heads as one batch of heads: block_matrices is per head and token
            mats = block_matrices(cos.flatten(0, 1), sin.flatten(0, 1), basis, self.block)
            mats = mats.unflatten(0, (len(layers), self.num_heads))
            return list(zip(cos.unbind(0), sin.unbind(0), mats.unbind(0), strict=True))
        angles = F.pad(angles, (0, self.head_dim // 2 - self.num_planes))
        # cos and sin of every layer in one tensor, each layer's table a view of it: inductor then
        # computes them in one kernel before the first layer, where separate per-layer outputs
        # cost one table kernel per layer (at eval, where no backward shares the work).
        cos, sin = torch.stack((angles.cos(), angles.sin())).unbind(0)
        return list(zip(cos.unbind(0), sin.unbind(0), strict=True))

    def _rotate(self, x: Tensor, tables: tuple[Tensor, ...], in_basis: bool) -> Tensor:
        if self.impl == "matrix" and not self.folded:
            return apply_block_matrices(x, tables[2])
        if in_basis or self.folded:
            return rotate_pairs(x, tables[0], tables[1], self.use_complex)
        q = self.basis()
        u = rotate_pairs(to_basis(x, q, self.block), tables[0], tables[1], self.use_complex)
        return from_basis(u, q, self.block)

    @property
    def foldable(self) -> bool:
        """A learned basis (N > 2, not folded yet): ``fold_for_inference`` moves it into the projection."""
        return self.basis_skew is not None

    @torch.no_grad()
    def basis_motion(self) -> dict[str, float] | None:
        """The rotation angle of each block's Q and the tilt of its planes (see ``plane_tilts``)."""
        q = self.basis()
        if q is None:
            return None
        angles, tilts = rotation_angles(q), plane_tilts(q)
        return {
            "angle_max_deg": math.degrees(angles.max().item()),
            "angle_mean_deg": math.degrees(angles.mean().item()),
            "tilt_max_deg": math.degrees(tilts.max().item()),
            "tilt_mean_deg": math.degrees(tilts.mean().item()),
        }

    @torch.no_grad()
    def fold(self) -> None:
        """Drop the basis after it was moved into the projection (see ``fold_for_inference``)."""
        self.basis_skew = None
        self.folded = True
        self.impl = "fast"
        self.spec = replace(self.spec, impl="fast")
        self._cache = TableCache()
