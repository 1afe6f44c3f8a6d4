"""The dispatch-level op counter (rope_ext.opcount): what it calls a kernel, a byte and a host sync."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rope_ext.encoding.fused_rotation import rotate_qk
from rope_ext.opcount import count_ops


def test_an_elementwise_op_is_one_kernel_and_its_bytes() -> None:
    a, b = torch.randn(4, 8), torch.randn(4, 8)
    counts = count_ops(lambda: a + b)
    assert (counts.kernels, counts.bytes, counts.syncs) == (1, 3 * 32 * 4, 0)


def test_views_and_allocations_are_no_kernels() -> None:
    a = torch.randn(4, 8)
    counts = count_ops(lambda: (a.t(), a.view(8, 4), a[:2], a.unflatten(-1, (2, 4)), torch.empty(3)))
    assert counts.kernels == 0 and counts.bytes == 0


def test_composites_count_as_their_parts_under_inference_mode() -> None:
    """linear is a transpose (a view) and one addmm; dropout in eval is nothing."""
    x, w, b = torch.randn(2, 4), torch.randn(3, 4), torch.randn(3)
    with torch.inference_mode():
        counts = count_ops(lambda: F.dropout(F.linear(x, w, b), 0.1, training=False))
    assert counts.kernels == 1 and dict(counts.ops) == {"aten::addmm": 1}


def test_host_syncs() -> None:
    a = torch.eye(3) + 0.1
    assert count_ops(lambda: a.sum().item()).syncs == 1
    assert count_ops(lambda: torch.linalg.solve(a, a)).syncs == 1  # the checked solve reads its info back
    assert count_ops(lambda: torch.linalg.solve_ex(a, a, check_errors=False)).syncs == 0
    assert count_ops(lambda: a.nonzero()).syncs == 1


def test_the_fused_rotation_is_one_kernel() -> None:
    q, k = torch.randn(2, 2, 3, 5, 8).unbind(0)
    cos, sin = torch.ones(3, 5, 4), torch.zeros(3, 5, 4)
    counts = count_ops(lambda: rotate_qk(q, k, cos, sin))
    assert counts.kernels == 1 and dict(counts.ops) == {"rope_ext::rotate_qk": 1}
