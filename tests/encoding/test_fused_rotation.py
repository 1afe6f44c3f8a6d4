"""The fused rotation of q and k (``rope_ext::rotate_qk``): values and gradients of the Triton kernel
against today's eager rotation (``rotate_pairs``), the op's registration, and how torch.compile sees it.

The Triton kernel runs on CPU tensors through Triton's interpreter, which must be switched on before
the kernel is defined: those cases run in a subprocess with ``TRITON_INTERPRET=1`` (this file run as a
script prints their errors as JSON). Triton is a dev dependency: without it these tests fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from rope_ext import make_rope
from rope_ext.encoding.functional import rotate_pairs
from rope_ext.encoding.fused_rotation import rotate_qk, rotate_qk_reference, triton_interpreted

ROOT = Path(__file__).resolve().parents[2]
HEADS, TOKENS, BATCH, PREFIX = 2, 6, 3, 1  # a 2×3 grid plus one class token
# (label, encoding, options, head_dim, fold): every table layout the fast path builds
CASES = (
    ("N=2", "axial2_complex", {}, 12, False),
    ("N=2 odd head_dim", "axial2_complex", {}, 7, False),
    ("N=3 fast", "axial_block", {"block": 3}, 12, False),
    ("N=5 fast", "axial_block", {"block": 5}, 12, False),
    ("N=4 folded", "axial_block", {"block": 4}, 12, True),
    ("N=3 mixed, learned frequencies", "axial_block", {"block": 3, "mixed": True}, 12, False),
)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# Allowed error, as |a − b| <= atol + rtol·|b|: the kernel computes in float32 and rounds once to the
# input dtype, so bf16 is within one bf16 unit in the last place (2^-7 relative) of the exact rotation
# of the same bf16 inputs (a GPU rounds to nearest, half of that; Triton's interpreter truncates);
# table gradients (sums over the batch) are judged against their largest entry.
TOLERANCE = {"fp32": (1e-6, 1e-5), "bf16": (1e-6, 2.0**-7)}


def _tables(encoding: str, options: dict, head_dim: int, fold: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The (cos, sin) [H, T, head_dim // 2] tables a real layer builds, class-token row included."""
    torch.manual_seed(0)
    rope = make_rope(encoding, head_dim=head_dim, num_heads=HEADS, **options)
    if fold:
        rope.fold()
    with torch.no_grad():
        rope.freqs.add_(0.05 * torch.randn_like(rope.freqs))  # off the init: every plane turns
    pos = torch.stack(torch.meshgrid(torch.arange(2.0), torch.arange(3.0), indexing="ij"), -1).view(-1, 2)
    cos, sin = rope.tables(pos, PREFIX)[:2]
    assert cos.shape == (HEADS, TOKENS + PREFIX, head_dim // 2)
    assert torch.equal(cos[:, 0], torch.ones_like(cos[:, 0])) and not sin[:, 0].any()  # identity row
    return cos, sin


def _ratio(got: torch.Tensor, want: torch.Tensor, atol: float, rtol: float) -> float:
    """max |got − want| / (atol + rtol·|want|): at most 1 within tolerance."""
    got, want = got.double(), want.double()
    return ((got - want).abs() / (atol + rtol * want.abs())).max().item()


def _case_errors(label: str, dtype_name: str) -> dict[str, float]:
    """Run one case with the op (whatever kernel serves CPU in this process) and with the reference:
    the eager ``rotate_pairs`` in float64 on the same inputs. Returns the error ratios."""
    _, encoding, options, head_dim, fold = next(c for c in CASES if c[0] == label)
    dtype = DTYPES[dtype_name]
    atol, rtol = TOLERANCE[dtype_name]
    cos, sin = (t.to(dtype) for t in _tables(encoding, options, head_dim, fold))
    learned = "mixed" in options
    torch.manual_seed(1)
    n = TOKENS + PREFIX
    # q and k as timm's attention has them: strided views of the fused qkv projection's output
    qkv = torch.randn(BATCH, n, 3 * HEADS * head_dim).to(dtype)
    qkv = qkv.reshape(BATCH, n, 3, HEADS, head_dim).permute(2, 0, 3, 1, 4).requires_grad_()
    grads = torch.randn(2, BATCH, HEADS, n, head_dim).to(dtype)
    tables = [t.detach().clone().requires_grad_(learned) for t in (cos, sin)]
    q, k, _ = qkv.unbind(0)
    out = rotate_qk(q, k, *tables)
    torch.autograd.backward(out, list(grads))
    ref_qkv = qkv.detach().double().requires_grad_()
    ref_tables = [t.detach().double().requires_grad_(learned) for t in (cos, sin)]
    ref = [rotate_pairs(x, *ref_tables, use_complex=True) for x in ref_qkv.unbind(0)[:2]]
    torch.autograd.backward(ref, list(grads.double()))
    errors = {
        "token_major": float(all(o.transpose(1, 2).is_contiguous() for o in out)),
        "dtype": float(all(o.dtype == dtype for o in out)),
        "q": _ratio(out[0], ref[0], atol, rtol),
        "k": _ratio(out[1], ref[1], atol, rtol),
        "grad q, k": _ratio(qkv.grad[:2], ref_qkv.grad[:2], atol, rtol),
    }
    if learned:
        for name, got, want in zip(("grad cos", "grad sin"), tables, ref_tables, strict=True):
            scale = want.grad.abs().max().item()
            errors[name] = _ratio(got.grad, want.grad, atol + rtol * scale, rtol)
    return errors


@pytest.fixture(scope="module")
def interpreted() -> dict:
    """Every case run by the Triton kernel under Triton's interpreter (a subprocess)."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, __file__], env=env, capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_triton_is_installed() -> None:
    """The kernel's tests need Triton (a dev dependency): its absence is a failure, not a skip."""
    import triton  # noqa: F401


@pytest.mark.slow
@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("label", [c[0] for c in CASES])
def test_triton_kernel_matches_reference(interpreted: dict, label: str, dtype_name: str) -> None:
    """Values and gradients (q, k and, with learned frequencies, the tables) of the Triton kernel
    equal the eager rotation within ``TOLERANCE``, for q and k given as strided views of qkv."""
    assert interpreted["interpreter"] is True
    errors = interpreted[f"{label} {dtype_name}"]
    assert errors.pop("token_major") == 1.0 and errors.pop("dtype") == 1.0
    if "learned" in label:
        assert {"grad cos", "grad sin"} <= set(errors)
    assert all(ratio <= 1.0 for ratio in errors.values()), errors


@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("label", [c[0] for c in CASES])
def test_cpu_op_matches_reference(label: str, dtype_name: str) -> None:
    """The op's CPU implementation (eager torch, no interpreter in this process) passes the same checks."""
    assert not triton_interpreted()
    errors = _case_errors(label, dtype_name)
    assert errors.pop("token_major") == 1.0 and errors.pop("dtype") == 1.0
    assert all(ratio <= 1.0 for ratio in errors.values()), errors


def test_reference_equals_todays_fp32_rotation() -> None:
    """In float32 the op's reference is today's complex-form rotation to the last bit."""
    cos, sin = _tables("axial_block", {"block": 3}, 12, False)
    x = torch.randn(BATCH, HEADS, TOKENS + PREFIX, 12)
    assert torch.equal(rotate_qk_reference(x, cos, sin), rotate_pairs(x, cos, sin, use_complex=True))
    back = rotate_qk_reference(rotate_qk_reference(x, cos, sin), cos, sin, sign=-1.0)
    torch.testing.assert_close(back, x)


@pytest.mark.slow
def test_opcheck() -> None:
    """torch.library.opcheck: schema, fake tensor, autograd registration, AOT dispatch."""
    op = torch.ops.rope_ext.rotate_qk.default
    cos, sin = (t.detach() for t in _tables("axial_block", {"block": 3, "mixed": True}, 12, False))
    q, k = torch.randn(2, BATCH, HEADS, TOKENS + PREFIX, 12).unbind(0)
    torch.library.opcheck(op, (q, k, cos, sin, 1.0))
    torch.library.opcheck(op, (q.requires_grad_(), k, cos.requires_grad_(), sin.requires_grad_(), 1.0))


@pytest.mark.slow
def test_gradients_are_exact_in_float64() -> None:
    """gradcheck and gradgradcheck of the op, tables included (an odd head_dim: a pass-through dim)."""
    q, k = torch.randn(2, 2, HEADS, 4, 7, dtype=torch.float64, requires_grad=True).unbind(0)
    angles = torch.randn(1, 4, 3, dtype=torch.float64)
    tables = (angles.cos().requires_grad_(), angles.sin().requires_grad_())
    assert torch.autograd.gradcheck(rotate_qk, (q, k, *tables))
    assert torch.autograd.gradgradcheck(rotate_qk, (q, k, *tables))


def test_bad_input_is_refused_with_the_shapes() -> None:
    q = torch.randn(1, HEADS, 4, 8)
    with pytest.raises(ValueError, match=r"cos and sin must be \[H=2 or 1, T=4, P\]; got \(2, 5, 4\)"):
        rotate_qk(q, q, torch.ones(2, 5, 4), torch.zeros(2, 5, 4))
    with pytest.raises(ValueError, match="P <= head_dim // 2 = 4"):
        rotate_qk(q, q, torch.ones(2, 4, 5), torch.zeros(2, 4, 5))


def _two_layers(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Two attention layers' rotation + attention, as RopeAttention runs them."""
    b, n = qkv.shape[:2]
    for _ in range(2):
        q, k, v = qkv.unflatten(-1, (3, HEADS, -1)).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = rotate_qk(q, k, cos, sin)
        qkv = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, -1).repeat(1, 1, 3)
    return qkv


def test_attention_output_is_token_major() -> None:
    """SDPA on rotated (token-major) q, k returns token-major output: the reshape before the output
    projection is a view, as for plain attention on the projection's q, k (CPU)."""
    cos, sin = _tables("axial2_complex", {}, 12, False)
    qkv = torch.randn(BATCH, TOKENS + PREFIX, 3 * HEADS * 12)
    q, k, v = qkv.unflatten(-1, (3, HEADS, -1)).permute(2, 0, 3, 1, 4).unbind(0)
    q, k = rotate_qk(q, k, cos, sin)
    assert F.scaled_dot_product_attention(q, k, v).transpose(1, 2).is_contiguous()


def test_dynamo_sees_one_graph() -> None:
    """torch.compile traces the op without a graph break, training (gradients) and inference."""
    cos, sin = (t.detach() for t in _tables("axial_block", {"block": 3, "mixed": True}, 12, False))
    qkv = torch.randn(BATCH, TOKENS + PREFIX, 3 * HEADS * 12, requires_grad=True)
    for grad in (True, False):
        torch._dynamo.reset()
        with torch.set_grad_enabled(grad):
            explained = torch._dynamo.explain(_two_layers)(qkv, cos.requires_grad_(grad), sin)
        assert explained.graph_break_count == 0 and explained.graph_count == 1, explained.break_reasons
        calls = [n for g in explained.graphs for n in g.graph.nodes if "rotate_qk" in str(n.target)]
        assert len(calls) == 2


@pytest.mark.slow
def test_inductor_calls_the_op_once_per_layer() -> None:
    """Inductor's CPU code for two layers calls the op twice forward and twice backward, and matches eager."""
    from torch._inductor.utils import run_and_get_code

    cos, sin = _tables("axial2_complex", {}, 12, False)
    qkv = torch.randn(BATCH, TOKENS + PREFIX, 3 * HEADS * 12, requires_grad=True)
    torch._dynamo.reset()
    compiled = torch.compile(_two_layers)
    out, codes = run_and_get_code(lambda: compiled(qkv, cos, sin).sum().backward() or compiled(qkv, cos, sin))
    forward, backward = codes[0], codes[1]
    assert forward.count("torch.ops.rope_ext.rotate_qk.default(") == 2
    assert backward.count("torch.ops.rope_ext.rotate_qk.default(") == 2
    torch.testing.assert_close(out, _two_layers(qkv, cos, sin))


if __name__ == "__main__":  # the interpreter's side of ``interpreted``
    results = {"interpreter": triton_interpreted()}
    for case in CASES:
        for name in DTYPES:
            results[f"{case[0]} {name}"] = _case_errors(case[0], name)
    print(json.dumps(results))
