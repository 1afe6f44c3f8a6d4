"""What ``torch.compile`` makes of one transformer block: kernel launches in inductor's CPU output code
(``rope_ext.opcount.compiled_block_kernels``: depth 2 minus depth 1, bf16 autocast, small ViT).

On the fused path (``impl="fast"``, folded or not, any N) a compiled block launches at most one
kernel more than plain attention's, in training (forward + backward) and at eval under
``inference_mode``: the rotation op itself (``rope_ext::rotate_qk``), its tables computed for all
layers at once outside the blocks. The matrix forms (``axial2_matrix``, ``impl="matrix"``,
``lie_block``) are the reference implementations and are exempt: they are only checked to compile.
"""

from __future__ import annotations

import functools

import pytest
import torch
from encoding_cases import SMALL_VIT, is_fused, small_vit_builder

from rope_ext.bench import variants
from rope_ext.opcount import compiled_block_kernels

VARIANTS = {v.label: v for v in variants([2, 3], with_controls=False)}
FUSED = [label for label, v in VARIANTS.items() if is_fused(v.pe, v.options)]
# a folded model is for inference: it is compiled at eval only
CASES = [(label, train) for label in FUSED for train in (True, False) if not (train and VARIANTS[label].fold)]


@functools.cache
def _kernels(label: str, train: bool) -> tuple:
    torch.set_num_threads(1)  # compile and run on one core: the count does not depend on it
    v = VARIANTS[label]
    return compiled_block_kernels(
        small_vit_builder(v.pe, v.options, v.fold),
        train=train,
        img=SMALL_VIT["img_size"],
        dtype=torch.bfloat16,
    )


def test_fused_variants_are_the_fast_ones() -> None:
    """The list below covers 2×2 complex, N = 2 and N = 3 fast, and their folded copies."""
    assert {
        "axial2_complex",
        "axial_block N=2 fast",
        "axial_block N=3 fast",
        "axial_block N=3 folded",
    } <= set(FUSED)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("label", "train"), CASES, ids=[f"{label}-{'train' if train else 'eval'}" for label, train in CASES]
)
def test_compiled_block_launches_at_most_one_kernel_more_than_none(label: str, train: bool) -> None:
    threads = torch.get_num_threads()
    try:
        got, added = _kernels(label, train)
        none, none_added = _kernels("none", train)
    finally:
        torch.set_num_threads(threads)
    assert got <= none + 1, (got, none, dict(added - none_added))
    # the one extra launch is the fused rotation: once per block forward (and once in backward)
    assert added["torch.ops.rope_ext.rotate_qk.default"] == (2 if train else 1), dict(added)
