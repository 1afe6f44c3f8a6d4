"""The dispatch-level op counter (rope_ext.opcount): what it calls a kernel, a byte and a host sync; and
the table ``python -m rope_ext.bench --count`` prints from it."""

from __future__ import annotations

import pytest
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


@pytest.mark.slow
def test_bench_count_prints_eager_and_compiled_launches_per_block(capsys: pytest.CaptureFixture) -> None:
    """``--count --compile`` on a small ViT: one row per variant and for timm's Eva pair, the compiled
    columns after the eager ones; the 2×2 rotation adds at most one compiled launch per block."""
    from rope_ext import bench

    shape = ["--embed-dim", "64", "--num-heads", "2", "--img-size", "32", "--patch-size", "8"]
    bench.main(
        [
            "--count",
            "--compile",
            "--dtype",
            "bf16",
            "--blocks",
            "2",
            "--only",
            "none",
            "axial2_complex",
            *shape,
        ]
    )
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[-2:] == ["compiled inference launches", "compiled training launches"], header
    rows = {
        cells[0]: cells[1:]
        for cells in ([c.strip() for c in line.strip("|").split("|")] for line in lines[2:])
    }
    assert set(rows) == {"none", "axial2_complex", "Eva without RoPE", "timm Eva RoPE (vs Eva without RoPE)"}
    none, rotary = rows["none"], rows["axial2_complex"]
    assert int(rotary[-2]) <= int(none[-2]) + 1 and int(rotary[-1]) <= int(none[-1]) + 1, rows
    assert all(int(cells[-1]) > int(cells[-2]) > 0 for cells in rows.values()), rows  # backward adds launches
