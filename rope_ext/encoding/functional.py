"""The functional core: pure tensor functions for N×N block rotary encodings (no modules, no state).

Every rotary variant is one function of the token position p (``dims`` axes):

    R(p) = blockdiag_b( Q_b · diag(rot(ω_{b,1}·p), …, rot(ω_{b,k}·p), [1]) · Q_bᵀ ),  k = ⌊N/2⌋

with an orthogonal basis Q_b per block and plane frequencies ω (one scalar per plane for axial, one
vector over the axes for mixed). Its generators A_a = Q diag(ω_a J) Qᵀ commute by construction, so
R(p_i)ᵀR(p_j) = R(p_j − p_i) for every parameter value (see docs/math.md). The layers compute it
three ways and the tests hold them equal: dense (``block_diagonal`` of the generators, then
``matrix_exp``); per-token block matrices (``block_matrices`` + ``apply_block_matrices``); and the
fast path (``to_basis``, ``rotate_pairs`` on the planes laid out as interleaved pairs, ``from_basis``).
``rotate_pairs`` is the one rotation entry point of the fast path.

Shapes: H heads, T tokens, D head_dim, N block, nb = D // N blocks, k = N // 2 planes per block,
P = nb·k planes per head, A = dims axes. Dims beyond nb·N (when N does not divide D) and, for odd N,
the last basis direction of each block are left unrotated. N is any integer in 2..D. Positions
(``grid_positions``, ``augment_positions``) are computed here too, so every variant reads the same
coordinates.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def skew(params: Tensor, n: int) -> Tensor:
    """Skew-symmetric matrices from their strict upper triangles: [..., n(n-1)/2] -> [..., n, n]."""
    rows, cols = torch.triu_indices(n, n, offset=1, device=params.device)
    out = params.new_zeros(*params.shape[:-1], n, n)
    out[..., rows, cols] = params
    return out - out.transpose(-1, -2)


def cayley(params: Tensor, n: int) -> Tensor:
    """Orthogonal Q = (I − S)⁻¹(I + S) of the skew S = ``skew(params, n)``: [..., n(n-1)/2] -> [..., n, n].

    No host sync: I − S is invertible for every real skew S (its eigenvalues are 1 − iλ), so the
    solve's error check, a device-to-host read, is left out; a non-finite parameter gives a
    non-finite Q, and so a non-finite loss, which training's finite check reports. Half precision is
    solved in float32 (the solve has no half-precision kernels).
    """
    s = skew(params, n)
    dtype = torch.promote_types(s.dtype, torch.float32)
    eye = torch.eye(n, dtype=dtype, device=s.device)
    q, _ = torch.linalg.solve_ex(eye - s.to(dtype), eye + s.to(dtype), check_errors=False)
    return q.to(s.dtype)


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
    """Rotation angle of every plane at every position, in float32: [T, A] x [..., H, P, A] -> [..., H, T', P]
    (leading dims: several layers at once).

    ``num_prefix`` rows of zero angle (identity rotation) are prepended for class/register tokens,
    which stay unrotated as in Heo et al.
    """
    with torch.autocast(device_type=pos.device.type, enabled=False):
        dtype = torch.promote_types(omega.dtype, torch.float32)
        angles = torch.einsum("ta,...hpa->...htp", pos.to(dtype), omega.to(dtype))
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
