"""Rotary position encodings with N×N rotation blocks: build the rotation, apply it.

Every rotary variant here is one function of the token position p (``dims`` axes):

    R(p) = blockdiag_b( Q_b · diag(rot(ω_{b,1}·p), …, rot(ω_{b,k}·p), [1]) · Q_bᵀ ),  k = ⌊N/2⌋

with a learned orthogonal basis Q_b per block (Cayley transform of a skew parameter) and plane
frequencies ω (one scalar per plane for axial, one vector over the axes for mixed). Its generators
A_a = Q diag(ω_a J) Qᵀ commute by construction, so R(p_i)ᵀR(p_j) = R(p_j − p_i) for every parameter
value (see docs/math.md). Three ways compute it and the tests hold them equal:

- ``generators`` + ``matrix_exp``: the definition, dense, used by ``rotation(pos)`` and the checks;
- ``impl="matrix"``: each token's N×N block rotations Q D(p) Qᵀ, materialised and multiplied;
- ``impl="fast"``: move into the basis (``to_basis``: Qᵀ per block, then a fixed permutation that
  lays the P rotated planes out as interleaved pairs in the first 2P dims), rotate the pairs with
  cos/sin or complex numbers, move back. Inside attention the basis is applied to the q/k rows of
  the projection weight instead of to every token (see ``project_qkv``), and ``fold`` bakes it in.

Shapes: H heads, T tokens, D head_dim, N block, nb = D // N blocks, k = N // 2 planes per block,
P = nb·k planes per head, A = dims axes. Dims beyond nb·N (when N does not divide D) and, for odd N,
the last basis direction of each block are left unrotated. N is any integer in 2..D.

This module is the one source of truth for the encodings' names, options, defaults and checks:
``RopeSpec`` (every option and its default; also the pe group's OmegaConf schema), ``ENCODINGS``
(what each encoding accepts), ``validate_pe`` (returns the resolved spec, which ``make_rope`` and
``create_vit`` consume); a built layer reports its spec (``options()``). Positions
(``grid_positions``, ``augment_positions``) are computed here too, so every variant reads the same
coordinates.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rope_ext.encoding.spec import (  # noqa: F401  (re-exported)
    AUGMENT_KEYS,
    BASES,
    COORDS,
    DIMS,
    IMPLS,
    INITS,
    OPTION_KEYS,
    THETA,
    THETA_MIXED,
    Augment,
    RopeSpec,
    is_int,
    is_number,
    make_rope,
    validate_options,
    validate_pe,
)

# --------------------------------------------------------------------------------------------
# Functional core
# --------------------------------------------------------------------------------------------


def skew(params: Tensor, n: int) -> Tensor:
    """Skew-symmetric matrices from their strict upper triangles: [..., n(n-1)/2] -> [..., n, n]."""
    rows, cols = torch.triu_indices(n, n, offset=1, device=params.device)
    out = params.new_zeros(*params.shape[:-1], n, n)
    out[..., rows, cols] = params
    return out - out.transpose(-1, -2)


def rotation_angles(q: Tensor) -> Tensor:
    """Rotations q [..., N, N] -> [...]: the largest rotation angle of each (radians, in [0, π]),
    the largest |arg| of its eigenvalues. 0 for Q = I, the init of every block basis."""
    return torch.linalg.eigvals(q.detach().double()).angle().abs().amax(-1).to(q.dtype)


def plane_tilts(q: Tensor) -> Tensor:
    """Block bases q [..., N, N] -> [..., N // 2]: for each rotated plane i (coordinates 2i, 2i+1)
    the largest principal angle between the plane and its image under q (radians, in [0, π/2]).

    Unlike ``rotation_angles`` it ignores the part of q that changes nothing: q·G, with G any
    rotation inside the planes (what D(p) commutes with), has the same tilts. So it measures how
    far training moved the planes the positions rotate, not the gauge.
    """
    k = q.shape[-1] // 2
    q64 = q.detach().double()
    rows = 2 * torch.arange(k, device=q.device)[:, None] + torch.arange(2, device=q.device)  # [k, 2]
    inside = q64[..., rows[:, :, None], rows[:, None, :]]  # [..., k, 2, 2]: P_iᵀ q P_i
    outside = q64[..., :, rows].movedim(-2, -3).clone()  # [..., k, N, 2]: q P_i ...
    outside[..., torch.arange(k, device=q.device)[:, None], rows, :] = 0  # ... less its part in the plane
    # cos and sin of the largest principal angle, combined by atan2: acos alone loses half the digits
    # near 0, where the learned bases mostly are
    cos, sin = torch.linalg.svdvals(inside).amin(-1), torch.linalg.svdvals(outside).amax(-1)
    return torch.atan2(sin, cos).to(q.dtype)


def axial_layout(
    num_blocks: int, planes_per_block: int, dims: int, theta: float, scale: float = 1.0
) -> tuple[Tensor, Tensor]:
    """Heo et al.'s RoPE-Axial frequencies, generalised to k planes per block.

    Planes follow one axis each, in block-major order: all of them for 1-D, the first ⌈P/2⌉ x and
    the rest y for 2-D (with N = 2 this is Heo's layout; it splits planes, not blocks, so a single
    N = head_dim block still sees both axes). The j-th of the m planes following an axis turns at
    scale · theta^(-j/m); with N = 2, 2-D and scale 1 this is exactly
    ``1 / theta ** (arange(0, D, 4) / D)`` per axis, as in Heo's ``compute_axial_cis``.

    Returns (freqs [P], axis [P] long), planes in block-major order.
    """
    planes = num_blocks * planes_per_block
    axis = torch.zeros(planes, dtype=torch.long)
    if dims == 2:
        axis[(planes + 1) // 2 :] = 1
    # Rank of each plane among the planes of its axis (axes are contiguous runs).
    counts = torch.bincount(axis, minlength=dims)
    start = torch.cumsum(counts, 0) - counts
    rank = torch.arange(planes) - start[axis]
    freqs = scale * theta ** (-rank.double() / counts[axis].clamp_min(1).double())
    return freqs.float(), axis


# Normalized coordinates span [-1, 1]: frequencies are 2π·theta^(-j/m) (DINOv3's 2π/period with
# periods 1..theta), so the slowest plane turns well under one cycle across the image and the
# fastest one separates neighbouring patches.
NORMALIZED_SCALE = 2 * math.pi


def grid_positions(
    height: int, width: int, dims: int, coords: str = "patch", device: torch.device | None = None
) -> Tensor:
    """Token positions of a ``height × width`` patch grid (timm flattens row-major): [T, dims] float32.

    ``patch`` (Heo et al.): x = column, y = row (1-D: the flattened index t). ``normalized``
    (DINOv3): patch centres mapped into [-1, 1] per axis, x = (column + 0.5) / width · 2 − 1, so a
    grid and its 2× resize put the same image point at the same coordinate (1-D: over the T tokens).
    """
    t = torch.arange(height * width, device=device)
    if dims == 1:
        pos = t[:, None].float()
        return (pos + 0.5) / (height * width) * 2 - 1 if coords == "normalized" else pos
    pos = torch.stack((t % width, t // width), dim=-1).float()
    if coords == "normalized":
        pos = (pos + 0.5) / pos.new_tensor([width, height]) * 2 - 1
    return pos


def augment_positions(
    pos: Tensor,
    shift: float = 0.0,
    jitter: float = 0.0,
    rescale: float = 0.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """DINOv3's coordinate augmentation, one draw for all tokens: [T, A] -> [T, A].

    pos' = (pos + s) · j · r with s ~ U(−shift, shift) per axis, log j ~ U(−log jitter, log jitter)
    per axis and log r ~ U(−log rescale, log rescale) shared by the axes; 0 turns a term off. An
    affine map of all positions at once, so the relative property of the encodings is untouched.
    """
    dims = pos.shape[-1]

    def uniform(n: int, bound: float) -> Tensor:
        return (torch.rand(n, generator=generator, dtype=torch.float64) * 2 - 1) * bound

    offset = uniform(dims, shift) if shift else torch.zeros(dims, dtype=torch.float64)
    scale = torch.ones(dims, dtype=torch.float64)
    if jitter:
        scale = scale * uniform(dims, math.log(jitter)).exp()
    if rescale:
        scale = scale * uniform(1, math.log(rescale)).exp()
    return (pos + offset.to(pos)) * scale.to(pos)


def plane_angles(pos: Tensor, omega: Tensor, num_prefix: int = 0) -> Tensor:
    """Rotation angle of every plane at every position, in float32: [T, A] x [H, P, A] -> [H, T', P].

    ``num_prefix`` rows of zero angle (identity rotation) are prepended for class/register tokens,
    which stay unrotated as in Heo et al.
    """
    with torch.autocast(device_type=pos.device.type, enabled=False):
        dtype = torch.promote_types(omega.dtype, torch.float32)
        angles = torch.einsum("ta,hpa->htp", pos.to(dtype), omega.to(dtype))
        if num_prefix:
            angles = F.pad(angles, (0, 0, num_prefix, 0))
    return angles


def rotate_pairs(x: Tensor, cos: Tensor, sin: Tensor, use_complex: bool = True) -> Tensor:
    """Rotate the first 2P dims of ``x`` as P interleaved pairs; the rest pass through.

    x [..., H, T, D]; cos, sin [H, T, P]. The complex form is Heo et al.'s; the real cos/sin form
    computes the same and is used where complex ops are unavailable (bf16/fp16, torch.compile).
    """
    two_p = 2 * cos.shape[-1]
    head = x[..., :two_p]
    # view_as_complex needs even strides: an odd head_dim takes the real form.
    complex_ok = x.dtype in (torch.float32, torch.float64) and x.shape[-1] % 2 == 0
    if use_complex and complex_ok and not torch.compiler.is_compiling():
        xc = torch.view_as_complex(head.reshape(*head.shape[:-1], -1, 2))
        out = torch.view_as_real(xc * torch.complex(cos, sin).to(xc.dtype)).flatten(-2)
    else:
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        x0, x1 = head.unflatten(-1, (-1, 2)).unbind(-1)
        out = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2)
    if two_p == x.shape[-1]:
        return out
    return torch.cat((out, x[..., two_p:]), dim=-1)


def to_basis(x: Tensor, basis: Tensor | None, block: int) -> Tensor:
    """x [..., H, X, D] -> its coordinates in the rotation basis, rotated planes first as pairs.

    Applies Q_bᵀ to every block, then lays the 2k rotated coordinates of all blocks out first
    (block-major, interleaved pairs) and the unrotated ones (odd N, leftover dims) after them.
    With no basis and N = 2 the layout is already pairs: nothing to do.
    """
    if basis is None and block == 2:
        return x
    d = x.shape[-1]
    nb, two_k = d // block, 2 * (block // 2)
    y = x[..., : nb * block].unflatten(-1, (nb, block))
    if basis is not None:
        y = torch.einsum("...hxbj,hbji->...hxbi", y, basis.to(x.dtype))
    parts = [y[..., :two_k].flatten(-2)]
    if two_k < block:
        parts.append(y[..., two_k:].flatten(-2))
    if nb * block < d:
        parts.append(x[..., nb * block :])
    return torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]


def from_basis(u: Tensor, basis: Tensor | None, block: int) -> Tensor:
    """Inverse of ``to_basis``: u [..., H, X, D] in basis coordinates -> x."""
    if basis is None and block == 2:
        return u
    d = u.shape[-1]
    nb, two_k = d // block, 2 * (block // 2)
    z = u[..., : nb * two_k].unflatten(-1, (nb, two_k))
    if two_k < block:
        rest = u[..., nb * two_k : nb * block].unflatten(-1, (nb, block - two_k))
        z = torch.cat((z, rest), dim=-1)
    if basis is not None:
        z = torch.einsum("...hxbi,hbji->...hxbj", z, basis.to(u.dtype))
    y = z.flatten(-2)
    return torch.cat((y, u[..., nb * block :]), dim=-1) if nb * block < d else y


def block_matrices(cos: Tensor, sin: Tensor, basis: Tensor | None, block: int) -> Tensor:
    """Each token's N×N block rotations Q · D(p) · Qᵀ: cos, sin [H, T, P] -> [H, T, nb, N, N]."""
    h, t, p = cos.shape
    k = block // 2
    nb = p // k
    c, s = cos.unflatten(-1, (nb, k)), sin.unflatten(-1, (nb, k))
    vals = torch.stack((c, -s, s, c), dim=-1).flatten(-2)  # [H, T, nb, 4k]
    pair = torch.arange(k, device=cos.device) * 2
    rows = torch.stack((pair, pair, pair + 1, pair + 1), dim=-1).flatten()
    cols = torch.stack((pair, pair + 1, pair, pair + 1), dim=-1).flatten()
    mats = cos.new_zeros(h, t, nb, block, block)
    mats[..., rows, cols] = vals
    if block % 2:
        mats[..., block - 1, block - 1] = 1.0
    if basis is not None:
        q = basis.to(mats.dtype).unsqueeze(1)  # [H, 1, nb, N, N]
        mats = q @ mats @ q.transpose(-1, -2)
    return mats


def apply_block_matrices(x: Tensor, mats: Tensor) -> Tensor:
    """x [..., H, T, D] times per-token block rotations [H, T, nb, N, N]; leftover dims pass."""
    nb, block = mats.shape[-3], mats.shape[-1]
    d = x.shape[-1]
    y = x[..., : nb * block].unflatten(-1, (nb, block))
    y = torch.einsum("htbij,...htbj->...htbi", mats.to(x.dtype), y).flatten(-2)
    return torch.cat((y, x[..., nb * block :]), dim=-1) if nb * block < d else y


def block_diagonal(blocks: Tensor, dim: int) -> Tensor:
    """[..., nb, N, N] -> [..., dim, dim] block-diagonal, zero beyond nb·N."""
    *lead, nb, n, _ = blocks.shape
    eye = torch.eye(nb, dtype=blocks.dtype, device=blocks.device)
    dense = torch.einsum("...bij,bc->...bicj", blocks, eye).reshape(*lead, nb * n, nb * n)
    pad = dim - nb * n
    return F.pad(dense, (0, pad, 0, pad)) if pad else dense


def check_positions(pos: Tensor, dims: int, tokens: int | None = None) -> None:
    """Positions must be a [T, dims] tensor (T equal to the token count when given)."""
    if not isinstance(pos, Tensor) or pos.ndim != 2 or pos.shape[1] != dims:
        shape = tuple(pos.shape) if isinstance(pos, Tensor) else type(pos).__name__
        raise ValueError(f"positions must have shape [T, dims={dims}]; got {shape}")
    if tokens is not None and pos.shape[0] != tokens:
        raise ValueError(f"positions give {pos.shape[0]} tokens but the input has {tokens} (dim -2)")


# --------------------------------------------------------------------------------------------
# Modules
# --------------------------------------------------------------------------------------------


class _TableCache:
    """Rotation tables keyed by grid and parameter versions: reused while parameters are frozen."""

    def __init__(self) -> None:
        self.key: Hashable | None = None
        self.value: tuple[Tensor, ...] | None = None

    def __reduce__(self) -> tuple:
        # A copy or pickle starts empty: its keys name the original's parameter storage.
        return (_TableCache, ())

    def get(self, key: Hashable | None) -> tuple[Tensor, ...] | None:
        return self.value if key is not None and key == self.key else None

    def put(self, key: Hashable | None, value: tuple[Tensor, ...]) -> None:
        if key is not None:
            self.key, self.value = key, value


class RotaryBase(nn.Module):
    """Shared plumbing: position checks, table caching, the dense rotation from generators."""

    def __init__(self, spec: RopeSpec, *, head_dim: int, num_heads: int) -> None:
        super().__init__()
        self.spec = spec  # resolved (validate_pe): every option a plain value
        self.head_dim, self.num_heads, self.dims, self.block = head_dim, num_heads, spec.dims, spec.block
        self.variant, self.impl, self.init, self.coords, self.theta = (
            spec.name,
            spec.impl,
            spec.init,
            spec.coords,
            spec.theta,
        )
        self.num_blocks = head_dim // spec.block
        self._cache = _TableCache()

    def generators(self) -> Tensor:
        """Dense skew generators A_a per axis and head: [A, H, D, D]."""
        raise NotImplementedError

    def rotation(self, pos: Tensor) -> Tensor:
        """Dense R(p) = matrix_exp(Σ_a p_a A_a) per head and position: [T, A] -> [H, T, D, D]."""
        check_positions(pos, self.dims)
        gens = self.generators()
        return torch.linalg.matrix_exp(torch.einsum("ta,ahij->htij", pos.to(gens.dtype), gens).contiguous())

    def tables(
        self, pos: Tensor, num_prefix: int = 0, grid_key: Hashable | None = None
    ) -> tuple[Tensor, ...]:
        """Per-forward rotation tables, shared by the whole batch; cached while parameters are frozen.
        Under torch.compile they are part of the graph: a Python cache keyed by storage and version
        would only make dynamo guard on it and recompile."""
        if torch.compiler.is_compiling():
            return self._build_tables(pos, num_prefix)
        key = self._cache_key(grid_key)
        cached = self._cache.get(key)
        if cached is None:
            cached = self._build_tables(pos, num_prefix)
            self._cache.put(key, cached)
        return cached

    def _build_tables(self, pos: Tensor, num_prefix: int) -> tuple[Tensor, ...]:
        raise NotImplementedError

    def _table_params(self) -> list[Tensor]:
        """The parameters the tables are computed from."""
        return list(self.parameters())

    def _rotate(self, x: Tensor, tables: tuple[Tensor, ...], in_basis: bool) -> Tensor:
        raise NotImplementedError

    def rotate(
        self,
        x: Tensor,
        pos: Tensor,
        num_prefix: int = 0,
        in_basis: bool = False,
        grid_key: Hashable | None = None,
    ) -> Tensor:
        """Rotate x [..., H, T, D]. Positions [T - num_prefix, A]; the first ``num_prefix`` tokens
        stay put.

        ``in_basis``: x came from ``project_qkv`` weights, so only the plane rotation is left.
        """
        return self._rotate(x, self.tables(pos, num_prefix, grid_key), in_basis)

    def rotate_qk(
        self,
        q: Tensor,
        k: Tensor,
        pos: Tensor,
        num_prefix: int = 0,
        in_basis: bool = False,
        grid_key: Hashable | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Attention's queries and keys [B, H, T, D]: one set of tables, two rotations. (Rotating
        them stacked as one tensor is slower: the backward then zero-fills all of qkv's grad.)"""
        tables = self.tables(pos, num_prefix, grid_key)
        return self._rotate(q, tables, in_basis), self._rotate(k, tables, in_basis)

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        """R(p)·x for x [B, H, T, D] and positions [T, A] (after ``fold``: in the folded basis)."""
        check_positions(pos, self.dims, x.shape[-2])
        return self.rotate(x, pos)

    def _cache_key(self, grid_key: Hashable | None) -> Hashable | None:
        """Tables depend on positions and parameters only; reuse them while no gradient can flow."""
        if grid_key is None:
            return None
        params = self._table_params()
        if torch.is_grad_enabled() and any(p.requires_grad for p in params):
            return None
        versions = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in params)
        return (grid_key, torch.is_inference_mode_enabled(), versions)

    def options(self) -> dict[str, object]:
        """The encoding's options as this layer applies them (package defaults resolved), for the
        run's records; ``augment`` (it belongs to the model's positions) is left out."""
        return {k: v for k, v in self.spec.options().items() if k != "augment"}

    def extra_repr(self) -> str:
        return (
            f"variant={self.variant}, impl={self.impl}, block={self.block}, dims={self.dims}, "
            f"heads={self.num_heads}, head_dim={self.head_dim}"
        )


class BlockRotary(RotaryBase):
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
        s = skew(self.basis_skew, self.block)
        eye = torch.eye(self.block, dtype=s.dtype, device=s.device)
        return torch.linalg.solve(eye - s, eye + s)

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
        [H, T, nb, N, N] for the matrix impl."""
        angles = plane_angles(pos, self.omega(), num_prefix)
        if self.impl == "matrix" and not self.folded:
            out: tuple[Tensor, ...] = (angles.cos(), angles.sin())
            out = out + (block_matrices(*out, self.basis(), self.block),)
        else:
            # Pad with zero angles up to head_dim/2 pairs: the unrotated dims then ride along as
            # identity pairs, and every N costs exactly what 2×2 RoPE costs (no slice, no concat).
            angles = F.pad(angles, (0, self.head_dim // 2 - self.num_planes))
            out = (angles.cos(), angles.sin())
        return out

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
        q = self.basis()
        if q is None:
            return None
        flat = q.flatten(1)[:, self._basis_src]
        dense = self._basis_const.to(q.dtype).expand(self.num_heads, -1).index_copy(1, self._basis_dest, flat)
        return dense.view(self.num_heads, self.head_dim, self.head_dim)

    def project_qkv(self, weight: Tensor, bias: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Move the q and k rows of a fused qkv projection into the rotation basis.

        weight [3·H·D, C], bias [3·H·D]; the v rows are untouched. One batched matmul, O(H·D²·C)
        per call, independent of batch and tokens. q'ᵀ D(p_j − p_i) k' then equals qᵀR(p_i)ᵀR(p_j)k.
        """
        b = self.basis_matrix().to(weight.dtype)
        heads = (3, self.num_heads, self.head_dim)
        w = weight.view(*heads, -1)
        weight = torch.cat((b @ w[:2], w[2:])).view(weight.shape)
        if bias is not None:
            v = bias.view(*heads, 1)
            bias = torch.cat((b @ v[:2], v[2:])).view(bias.shape)
        return weight, bias

    def _rotate(self, x: Tensor, tables: tuple[Tensor, ...], in_basis: bool) -> Tensor:
        if self.impl == "matrix" and not self.folded:
            return apply_block_matrices(x, tables[2])
        if in_basis or self.folded:
            return rotate_pairs(x, tables[0], tables[1], self.use_complex)
        q = self.basis()
        u = rotate_pairs(to_basis(x, q, self.block), tables[0], tables[1], self.use_complex)
        return from_basis(u, q, self.block)

    @torch.no_grad()
    def fold(self) -> None:
        """Drop the basis after it was moved into the projection (see ``fold_for_inference``)."""
        self.basis_skew = None
        self.folded = True
        self.impl = "fast"
        self.spec = replace(self.spec, impl="fast")
        self._cache = _TableCache()


class LieBlockRotary(RotaryBase):
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
        """Per-token block rotations [H, T, nb, N, N] (float32), identity for prefix tokens."""
        with torch.autocast(device_type=pos.device.type, enabled=False):
            gens = skew(self.generator_skew, self.block)
            dtype = torch.promote_types(gens.dtype, torch.float32)
            if num_prefix:
                pos = F.pad(pos, (0, 0, num_prefix, 0))
            mats = torch.linalg.matrix_exp(
                torch.einsum("ta,ahbij->htbij", pos.to(dtype), gens.to(dtype)).contiguous()
            )
        return (mats,)

    def _rotate(self, x: Tensor, tables: tuple[Tensor, ...], in_basis: bool) -> Tensor:
        return apply_block_matrices(x, tables[0])

    fold_into_projection = False


Rotary = BlockRotary | LieBlockRotary


def __getattr__(name: str) -> object:
    """The registry-derived names of ``rope_ext.encoding.spec`` (``PE_NAMES``, ...)."""
    from rope_ext.encoding import spec

    return getattr(spec, name)
