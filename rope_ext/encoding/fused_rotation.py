"""One fused rotation of attention's queries and keys: the ``rope_ext::rotate_qk`` custom op.

``rotate_qk(q, k, cos, sin)`` rotates the interleaved pairs (x[2i], x[2i+1]) of q and k [B, H, T, D]
by the angles whose cos/sin tables [H, T, P] it is given (P <= D // 2 pairs; dims beyond 2P pass
through unchanged, so an identity row, cos = 1 and sin = 0, leaves a token put: that is how class
tokens ride along). It is one node for autograd, ``torch.compile`` and a dispatch-level op counter:

- on CUDA a Triton kernel rotates q and k in one pass, reading each table entry once for both and
  computing in float32 whatever the input dtype (stored back in it);
- on CPU (and any other device) the eager torch code, which is also the reference the kernel is
  tested against; with ``TRITON_INTERPRET=1`` set before this module is imported the Triton kernel
  also serves CPU tensors, through Triton's interpreter (how the kernel is tested without a GPU);
- the backward of a rotation is the same op with −sin (R(θ)ᵀ = R(−θ)); gradients of the tables,
  needed only when frequencies are learned, are reduced over the batch with torch ops.

q and k may be strided views (e.g. slices of a fused qkv projection): nothing is copied before the
rotation. The outputs are written token-major (memory [B, T, H, D], returned as the [B, H, T, D]
view), the layout q and k have when they come straight from the projection: scaled-dot-product
attention then returns its output token-major too, and the ``transpose(1, 2).reshape`` before the
output projection is a view instead of a copy (seen on CPU, eager and compiled).
"""

from __future__ import annotations

import torch
from torch import Tensor

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the eager implementation serves every device
    triton = None

__all__ = ["rotate_qk", "rotate_qk_reference", "triton_available", "triton_interpreted"]


def triton_available() -> bool:
    """Whether the Triton kernel can run here (triton importable)."""
    return triton is not None


def triton_interpreted() -> bool:
    """Whether Triton runs kernels through its interpreter (``TRITON_INTERPRET=1`` at import)."""
    return triton is not None and bool(triton.knobs.runtime.interpret)


# --------------------------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------------------------


def _check(q: Tensor, k: Tensor, cos: Tensor, sin: Tensor) -> None:
    """Shapes and dtypes the op accepts; a ValueError names what is wrong before anything runs."""
    if q.ndim != 4 or q.shape != k.shape:
        raise ValueError(
            f"rotate_qk: q and k must both be [B, H, T, D]; got {tuple(q.shape)}, {tuple(k.shape)}"
        )
    if q.dtype != k.dtype or not q.is_floating_point():
        raise ValueError(f"rotate_qk: q and k must share a floating dtype; got {q.dtype}, {k.dtype}")
    _, h, t, d = q.shape
    if cos.shape != sin.shape or cos.ndim != 3 or cos.shape[0] not in (1, h) or cos.shape[1] != t:
        raise ValueError(
            f"rotate_qk: cos and sin must be [H={h} or 1, T={t}, P]; got {tuple(cos.shape)}, {tuple(sin.shape)}"
        )
    if cos.shape[2] > d // 2 or cos.dtype != sin.dtype or not cos.is_floating_point():
        raise ValueError(
            f"rotate_qk: tables need P <= head_dim // 2 = {d // 2} pairs and one floating dtype; "
            f"got P={cos.shape[2]}, {cos.dtype}, {sin.dtype}"
        )


def _token_major(like: Tensor) -> Tensor:
    """An uninitialised [B, H, T, D] tensor laid out in memory as [B, T, H, D]."""
    b, h, t, d = like.shape
    return torch.empty_strided((b, h, t, d), (t * h * d, d, h * d, 1), dtype=like.dtype, device=like.device)


# --------------------------------------------------------------------------------------------
# Eager implementation: the reference, and the CPU kernel
# --------------------------------------------------------------------------------------------


def rotate_qk_reference(x: Tensor, cos: Tensor, sin: Tensor, sign: float = 1.0) -> Tensor:
    """The rotation of one tensor x [B, H, T, D] by tables [H|1, T, P], as eager torch ops, in
    float32 (float64 stays float64), returned in x's dtype and token-major layout.

    Pairs are interleaved (x[2i], x[2i+1]); dims beyond 2P pass through. ``sign`` = −1 rotates back.
    """
    compute = torch.promote_types(x.dtype, torch.float32)
    two_p = 2 * cos.shape[-1]
    xt = x.transpose(1, 2)  # [B, T, H, D]: the products below come out token-major
    c = cos.transpose(0, 1).to(compute)  # [T, H|1, P]
    s = sin.transpose(0, 1).to(compute) * sign
    head = xt[..., :two_p]
    if head.stride(-1) == 1 and all(st % 2 == 0 for st in head.stride()[:-1]):
        pairs = torch.view_as_complex(head.to(compute).unflatten(-1, (-1, 2)))
        rotated = torch.view_as_real(pairs * torch.complex(c, s)).flatten(-2)
    else:  # odd strides (an odd head_dim) rule out the complex view: the real form computes the same
        x0, x1 = head.to(compute).unflatten(-1, (-1, 2)).unbind(-1)
        rotated = torch.stack((x0 * c - x1 * s, x0 * s + x1 * c), dim=-1).flatten(-2)
    out = _token_major(x)
    out.transpose(1, 2)[..., :two_p] = rotated
    if two_p < x.shape[-1]:
        out.transpose(1, 2)[..., two_p:] = xt[..., two_p:]
    return out


def _rotate_eager(q: Tensor, k: Tensor, cos: Tensor, sin: Tensor, sign: float) -> tuple[Tensor, Tensor]:
    _check(q, k, cos, sin)
    return rotate_qk_reference(q, cos, sin, sign), rotate_qk_reference(k, cos, sin, sign)


# --------------------------------------------------------------------------------------------
# Triton kernel
# --------------------------------------------------------------------------------------------

if triton is not None:

    @triton.jit
    def _rotate_qk_kernel(
        q_ptr, k_ptr, cos_ptr, sin_ptr, qo_ptr, ko_ptr,
        rows, T, H, D, P,
        sqb, sqh, sqt, sqd, skb, skh, skt, skd, sch, sct, scp,
        SIGN: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_P: tl.constexpr,
    ):  # fmt: skip
        """BLOCK_R rows (one row: one token of one head, ordered b, t, h) of q and k, BLOCK_P pairs
        each; the output row r starts at r·D (token-major). Pairs past P get cos 1, sin 0."""
        r = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
        p = tl.arange(0, BLOCK_P)
        h, t, b = r % H, (r // H) % T, r // (H * T)
        row_ok = (r < rows)[:, None]
        even_ok = row_ok & (2 * p < D)[None, :]
        odd_ok = row_ok & (2 * p + 1 < D)[None, :]
        table = h[:, None] * sch + t[:, None] * sct + p[None, :] * scp
        table_ok = row_ok & (p < P)[None, :]
        c = tl.load(cos_ptr + table, mask=table_ok, other=1.0).to(tl.float32)
        s = tl.load(sin_ptr + table, mask=table_ok, other=0.0).to(tl.float32) * SIGN
        out = r[:, None] * D + 2 * p[None, :]
        src = b[:, None] * sqb + h[:, None] * sqh + t[:, None] * sqt + (2 * p)[None, :] * sqd
        x0 = tl.load(q_ptr + src, mask=even_ok, other=0.0).to(tl.float32)
        x1 = tl.load(q_ptr + src + sqd, mask=odd_ok, other=0.0).to(tl.float32)
        tl.store(qo_ptr + out, (x0 * c - x1 * s).to(qo_ptr.dtype.element_ty), mask=even_ok)
        tl.store(qo_ptr + out + 1, (x0 * s + x1 * c).to(qo_ptr.dtype.element_ty), mask=odd_ok)
        src = b[:, None] * skb + h[:, None] * skh + t[:, None] * skt + (2 * p)[None, :] * skd
        x0 = tl.load(k_ptr + src, mask=even_ok, other=0.0).to(tl.float32)
        x1 = tl.load(k_ptr + src + skd, mask=odd_ok, other=0.0).to(tl.float32)
        tl.store(ko_ptr + out, (x0 * c - x1 * s).to(ko_ptr.dtype.element_ty), mask=even_ok)
        tl.store(ko_ptr + out + 1, (x0 * s + x1 * c).to(ko_ptr.dtype.element_ty), mask=odd_ok)


def _rotate_triton(q: Tensor, k: Tensor, cos: Tensor, sin: Tensor, sign: float) -> tuple[Tensor, Tensor]:
    """The Triton kernel on q, k as they are (any strides); outputs token-major. float64 keeps its
    precision in the eager implementation (the kernel computes in float32)."""
    _check(q, k, cos, sin)
    if q.dtype == torch.float64:
        return _rotate_eager(q, k, cos, sin, sign)
    b, h, t, d = q.shape
    cos, sin = cos.expand(h, -1, -1), sin.expand(h, -1, -1)
    if cos.stride() != sin.stride():
        cos, sin = cos.contiguous(), sin.contiguous()
    q_out, k_out = _token_major(q), _token_major(k)
    rows = b * t * h
    if rows == 0 or d == 0:
        return q_out, k_out
    block_p = triton.next_power_of_2((d + 1) // 2)
    block_r = max(1, min(64, 2048 // block_p, triton.next_power_of_2(rows)))
    grid = (triton.cdiv(rows, block_r),)
    with torch.cuda.device(q.device) if q.is_cuda else _nothing():
        _rotate_qk_kernel[grid](
            q, k, cos, sin, q_out, k_out,
            rows, t, h, d, cos.shape[2],
            *q.stride(), *k.stride(), *cos.stride(),
            SIGN=float(sign), BLOCK_R=block_r, BLOCK_P=block_p,
        )  # fmt: skip
    return q_out, k_out


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


# --------------------------------------------------------------------------------------------
# The custom op
# --------------------------------------------------------------------------------------------


@torch.library.custom_op("rope_ext::rotate_qk", mutates_args=())
def _rotate_qk_op(q: Tensor, k: Tensor, cos: Tensor, sin: Tensor, sign: float) -> tuple[Tensor, Tensor]:
    return _rotate_eager(q, k, cos, sin, sign)


if triton is not None:
    _rotate_qk_op.register_kernel("cuda")(_rotate_triton)
    if triton_interpreted():
        _rotate_qk_op.register_kernel("cpu")(_rotate_triton)


@_rotate_qk_op.register_fake
def _(q: Tensor, k: Tensor, cos: Tensor, sin: Tensor, sign: float) -> tuple[Tensor, Tensor]:
    _check(q, k, cos, sin)
    return _token_major(q), _token_major(k)


def _setup_context(ctx, inputs: tuple, output: tuple) -> None:  # noqa: ANN001 (torch's ctx)
    q, k, cos, sin, sign = inputs
    ctx.sign = sign
    tables_need_grad = ctx.needs_input_grad[2] or ctx.needs_input_grad[3]
    # q and k are kept only for the tables' gradients (learned frequencies).
    ctx.save_for_backward(cos, sin, q if tables_need_grad else None, k if tables_need_grad else None)


def _table_grads(x: Tensor, grad: Tensor, sign: float, two_p: int) -> tuple[Tensor, Tensor]:
    """d loss / d cos and d sin [H, T, P] of one rotated tensor: out0 = x0·c − s·x1·sn,
    out1 = s·x0·sn + x1·c, summed over the batch."""
    compute = torch.promote_types(x.dtype, torch.float32)
    x0, x1 = x[..., :two_p].to(compute).unflatten(-1, (-1, 2)).unbind(-1)
    g0, g1 = grad[..., :two_p].to(compute).unflatten(-1, (-1, 2)).unbind(-1)
    return (g0 * x0 + g1 * x1).sum(0), ((g1 * x0 - g0 * x1) * sign).sum(0)


def _backward(ctx, grad_q: Tensor, grad_k: Tensor) -> tuple:  # noqa: ANN001 (torch's ctx)
    cos, sin, q, k = ctx.saved_tensors
    dq, dk = _rotate_qk_op(grad_q, grad_k, cos, sin, -ctx.sign)
    dcos = dsin = None
    if q is not None:
        two_p = 2 * cos.shape[-1]
        qc, qs = _table_grads(q, grad_q, ctx.sign, two_p)
        kc, ks = _table_grads(k, grad_k, ctx.sign, two_p)
        dcos = (qc + kc).sum_to_size(cos.shape).to(cos.dtype)
        dsin = (qs + ks).sum_to_size(sin.shape).to(sin.dtype)
    return dq, dk, dcos, dsin, None


_rotate_qk_op.register_autograd(_backward, setup_context=_setup_context)


def rotate_qk(q: Tensor, k: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor]:
    """Rotate q and k [B, H, T, D] (any strides) by the tables cos, sin [H or 1, T, P]: one op.

    Returns the rotated q and k, [B, H, T, D] views of token-major memory, in q's dtype.
    """
    return _rotate_qk_op(q, k, cos, sin, 1.0)
