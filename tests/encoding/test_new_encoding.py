"""The proof that an encoding is one file: a new module, written here and loaded by name, is built,
folded and measured by the library, and the existing property tests and the benchmark pick it up
from the registry with no other edit."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from encoding_cases import cases
from harness_helpers import REPO, env

from rope_ext import create_vit, fold_for_inference, make_rope, relative_property_error, validate_pe
from rope_ext.encoding import registry
from rope_ext.encoding.relativity import perturb_rotary

NAME = "axial2_perm"
# An honest variant: Heo's 2×2 RoPE-Axial with its planes in a fixed permuted order (x and y planes
# interleaved instead of all x then all y). Still commuting plane rotations, so exactly relative.
MODULE = '''"""axial2_perm: 2x2 RoPE-Axial with the planes in a fixed permuted order."""

import torch

from rope_ext.encoding.encodings.axial_block import BlockRotary
from rope_ext.encoding.registry import Accepts, EncodingInfo, Variant, register


class PermutedPlanes(BlockRotary):
    """Plane j carries the frequency and the axis of plane perm[j]: x and y planes interleaved."""

    def __init__(self, spec, *, head_dim, num_heads):
        super().__init__(spec, head_dim=head_dim, num_heads=num_heads)
        p = self.num_planes
        perm = torch.arange(p).view(2, -1).t().flatten() if p % 2 == 0 else torch.arange(p).flip(0)
        with torch.no_grad():
            self.freqs.copy_(self.freqs[..., perm])
        self.axis_onehot = self.axis_onehot[perm]


register(
    EncodingInfo(
        name="axial2_perm",
        layer=PermutedPlanes,
        summary="2x2 RoPE-Axial, planes in a fixed permuted order (x and y interleaved)",
        exact_relative=True,
        accepts=Accepts(block=2, impls=("fast", "matrix"), mixed=False, layout_of=False, learnable_false=True),
        bench_variants=(Variant("axial2_perm"),),
        table_variants=(Variant("axial2_perm"),),
    )
)
'''
TINY = dict(num_classes=5, img_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=2)


@pytest.fixture
def module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The new module, loaded into this process's registry (unregistered after the test)."""
    monkeypatch.delenv(registry.ENV_VAR, raising=False)
    registry.names()
    monkeypatch.setattr(registry, "_infos", dict(registry._infos))
    monkeypatch.setattr(registry, "_loaded_modules", dict(registry._loaded_modules))
    path = tmp_path / "perm_rope.py"
    path.write_text(MODULE)
    assert registry.load_module(str(path)) == [NAME]
    return path


def model(pe: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_vit("vit_tiny_patch16_224", pe=pe, pool="avg", **TINY).eval()


def test_the_new_encoding_builds_runs_folds_and_is_relative(module):
    spec = validate_pe(NAME, {})
    assert (spec.block, spec.impl, spec.basis) == (2, "fast", None)
    new = perturb_rotary(model(NAME), 0.3, seed=1)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = new(x)
        assert out.shape == (2, 5) and torch.isfinite(out).all()
        torch.testing.assert_close(fold_for_inference(new)(x), out)
    assert relative_property_error(new) < 1e-10
    # a real variant: with the same parameters, Heo's plane order rotates differently
    mine, heo = (
        make_rope(NAME, head_dim=16, num_heads=2),
        make_rope("axial2_complex", head_dim=16, num_heads=2),
    )
    heo.load_state_dict(mine.state_dict())
    q, pos = torch.randn(1, 2, 5, 16), torch.randn(5, 2) * 3
    assert (mine(q, pos) - heo(q, pos)).abs().max() > 1e-2


@pytest.mark.slow
def test_the_property_tests_and_the_benchmark_pick_it_up_with_no_other_edit(module):
    """ROPE_EXT_MODULES names the module: the hypothesis relativity test and the model-level shift
    test are parametrised over it; ``rope_ext.bench --modules`` times it."""
    tests = [
        "tests/encoding/test_rotary.py::test_relative_property_holds_for_any_parameters",
        "tests/encoding/test_relative_model.py::test_avg_pool_makes_every_exact_variant_shift_invariant",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", NAME, *tests],
        cwd=REPO,
        env=env(ROPE_EXT_MODULES=str(module)),
        capture_output=True,
        text=True,
        timeout=600,
    )
    expected = 1 + len(cases(registry.get(NAME), extra=True))
    assert proc.returncode == 0 and re.search(rf"\b{expected} passed", proc.stdout), proc.stdout[-3000:]
    bench = subprocess.run(
        [sys.executable, "-m", "rope_ext.bench", "--only", NAME, "--modules", str(module), "--embed-dim", "32",
         "--depth", "1", "--num-heads", "2", "--img-size", "16", "--steps", "1", "--warmup", "0",
         "--train-batch", "2", "--infer-batch", "2", "--device", "cpu"],
        cwd=REPO, env=env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert bench.returncode == 0, bench.stderr[-2000:]
    row = next(line for line in bench.stdout.splitlines() if line.startswith(f"| {NAME} |"))
    assert float(row.split("|")[2]) > 0  # train step ms


def test_a_layer_with_no_basis_needs_only_the_declared_interface(monkeypatch):
    """A layer that is not a BlockRotary and has no basis attributes: attention, folding, basis
    motion and the relative property reach it through RotaryLayer's interface alone."""
    from torch import Tensor

    from rope_ext import basis_motion, register
    from rope_ext.encoding.layer import RotaryLayer
    from rope_ext.encoding.registry import Accepts, EncodingInfo

    class Still(RotaryLayer):  # R(p) = I: trivially relative, no parameters, no basis
        def generators(self) -> Tensor:
            return torch.zeros(self.dims, self.num_heads, self.head_dim, self.head_dim)

        def _build_tables(self, pos: Tensor, num_prefix: int) -> tuple[Tensor, ...]:
            return ()

        def _rotate(self, x: Tensor, tables: tuple[Tensor, ...], in_basis: bool) -> Tensor:
            return x

    monkeypatch.setattr(registry, "_infos", dict(registry._infos))
    accepts = Accepts(block=2, impls=("fast",), mixed=False, layout_of=False, learnable_false=True)
    register(EncodingInfo(name="still", layer=Still, summary="no rotation", accepts=accepts))
    built = model("still")
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(fold_for_inference(built)(x), built(x))
    assert basis_motion(built) is None and relative_property_error(built) == 0.0
