"""What one transformer block costs, counted at the dispatcher (rope_ext.opcount), for every variant
the benchmark times (read from the registry): exact counts, not timings, on a small ViT.

On the fused path (every ``impl="fast"`` layer, folded or not, any N) a block launches at most two
kernels more than plain attention at inference and four more in training, and no layer of any
encoding reads a value back to the host; torch.compile traces every encoding whole.
"""

from __future__ import annotations

import functools

import pytest
import torch
from encoding_cases import SMALL_VIT, is_fused, small_vit, small_vit_builder

from rope_ext.bench import variants
from rope_ext.encoding import registry
from rope_ext.opcount import OpCounts, block_counts, count_ops

VARIANTS = {v.label: v for v in variants([2, 3, 4], with_controls=True)}


@functools.cache
def _counts(label: str, train: bool) -> OpCounts:
    v = VARIANTS[label] if label != "none" else None
    build = small_vit_builder("none", {}, False) if v is None else small_vit_builder(v.pe, v.options, v.fold)
    return block_counts(build, train=train, batch=2, img=SMALL_VIT["img_size"], dtype=torch.bfloat16)


@pytest.mark.slow
@pytest.mark.parametrize("label", list(VARIANTS))
def test_kernels_and_host_syncs_per_block(label: str) -> None:
    modes = [False] if VARIANTS[label].fold else [False, True]
    for train in modes:
        got, none = _counts(label, train), _counts("none", train)
        assert got.syncs == 0, dict(got.ops)
        if is_fused(VARIANTS[label].pe, VARIANTS[label].options):
            budget = 4 if train else 2
            assert got.kernels <= none.kernels + budget, (got.kernels, none.kernels, dict(got.ops - none.ops))


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", registry.names())
def test_dynamo_traces_every_encoding_whole(name: str, train: bool) -> None:
    """``torch._dynamo.explain``: one graph, no break, for the model's forward (train and eval)."""
    options = {"block": 3} if name == "axial_block" else {}
    model = small_vit(name, options, depth=2)
    model.train(train)
    x = torch.randn(2, 3, 32, 32)
    torch._dynamo.reset()
    with torch.set_grad_enabled(train):
        explained = torch._dynamo.explain(model)(x)
    assert explained.graph_break_count == 0 and explained.graph_count == 1, explained.break_reasons


def _whole_model_inference(label: str, fold: bool) -> OpCounts:
    v = VARIANTS[label]
    model = small_vit_builder(v.pe, v.options, fold)(2).eval()
    x = torch.randn(2, 3, 32, 32)

    def step() -> None:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            model(x)

    step()
    return count_ops(step)


def test_eval_basis_is_cached_so_fast_costs_what_folded_costs() -> None:
    """At eval under inference_mode the moved qkv weights are reused: the whole N = 3 fast model
    (basis work included, not only per block) launches no more kernels than its folded copy."""
    fast = _whole_model_inference("axial_block N=3 fast", fold=False)
    folded = _whole_model_inference("axial_block N=3 fast", fold=True)
    assert fast.kernels <= folded.kernels and fast.syncs == 0, (dict(fast.ops - folded.ops), fast.kernels)


def test_eval_cache_follows_parameter_updates() -> None:
    """The cached weights are rebuilt after an in-place update of the basis or the projection (an
    optimiser step): the output equals a fresh model's with the same parameters."""
    torch.manual_seed(0)
    build = small_vit_builder("axial_block", {"block": 3}, False)
    model, fresh = build(2).eval(), build(2).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        before = model(x)
    with torch.no_grad():
        for m in (model, fresh):
            m.blocks[1].attn.rope.basis_skew.add_(0.3)
            m.blocks[0].attn.qkv.weight.mul_(1.5)
    with torch.inference_mode():
        after, want = model(x), fresh(x)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, want)


@pytest.mark.slow
def test_compiled_lie_block_evaluates_under_inference_mode() -> None:
    """matrix_exp gets a contiguous input under torch.compile too (a strided one failed at eval)."""
    model = small_vit("lie_block", {}, depth=1).eval()
    x = torch.randn(2, 3, 32, 32)
    torch._dynamo.reset()
    with torch.inference_mode():
        torch.testing.assert_close(torch.compile(model)(x), model(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("label", ["axial2_matrix", "axial_block N=3 matrix", "lie_block N=4"])
def test_reference_forms_build_their_tables_once_per_step(label: str) -> None:
    """The matrix impl and lie_block build every layer's block matrices together in training (where
    no table is cached): a second block adds no cos, sin, basis solve or matrix exponential."""
    got = _counts(label, True) - _counts("none", True)
    table_ops = ("aten::cos", "aten::sin", "aten::_linalg_solve_ex", "aten::linalg_matrix_exp")
    added = {name: got.ops[name] for name in table_ops if got.ops[name] > 0}
    assert not added, added
