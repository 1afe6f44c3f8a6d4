"""Blocks of any size 2..head_dim: the relative property, matrix ≡ fast ≡ folded, the layout_of control,
the frozen basis and the basis motion recorded."""

from __future__ import annotations

import math

import pytest
import torch
from harness_helpers import assert_exact_rotation, build_tiny_vit, perturbed, relative_deviation
from hypothesis import given, settings
from hypothesis import strategies as st

from rope_ext import basis_motion, fold_for_inference, make_rope, validate_pe
from rope_ext.encoding.functional import axial_layout, plane_tilts, rotation_angles, skew
from rope_ext.encoding.relativity import perturb_rotary

torch.set_default_dtype(torch.float32)


def blocks_for(head_dim: int) -> list[int]:
    return sorted({*range(2, 9), 16, head_dim} & set(range(2, head_dim + 1)))


@settings(max_examples=40, deadline=None)
@given(
    head_dim=st.sampled_from([16, 17, 21]),
    pick=st.integers(0, 100),
    impl=st.sampled_from(["matrix", "fast"]),
    mixed=st.booleans(),
    dims=st.sampled_from([1, 2]),
    seed=st.integers(0, 2**16),
)
def test_relative_property_for_every_block_size(head_dim, pick, impl, mixed, dims, seed):
    block = blocks_for(head_dim)[pick % len(blocks_for(head_dim))]
    rope = perturbed(
        "axial_block",
        seed=seed,
        head_dim=head_dim,
        num_heads=1,
        dims=dims,
        block=block,
        impl=impl,
        mixed=mixed,
    )
    assert_exact_rotation(rope, seed=seed, tokens=5, tol=1e-6)


@pytest.mark.parametrize("block", [16, 17])
def test_the_check_still_fails_for_large_non_commuting_blocks(block):
    rope = perturbed("lie_block", head_dim=17, num_heads=1, dims=2, block=block)
    pos = torch.rand(5, 2, dtype=torch.float64) * 10
    assert relative_deviation(rope, pos, torch.tensor([3.0, -5.0], dtype=torch.float64)) > 1e-3


@pytest.mark.parametrize("head_dim,block", [(hd, n) for hd in (16, 17) for n in blocks_for(hd)])
def test_matrix_fast_and_folded_compute_the_same_model(tiny_vit, head_dim, block):
    """One ViT per N: the fast impl (basis moved into the qkv weight), the matrix impl (explicit
    N×N blocks) with the same state dict, and fold_for_inference of the fast model give the same logits."""
    kw = dict(num_classes=5, img_size=16, vit_kwargs={"embed_dim": 2 * head_dim, "depth": 1})
    fast = perturb_rotary(tiny_vit("axial_block", block=block, **kw).double(), 0.5)
    matrix = tiny_vit("axial_block", block=block, impl="matrix", **kw).double()
    matrix.load_state_dict(fast.state_dict())
    folded = fold_for_inference(fast)
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        expected = matrix.eval()(x)
        torch.testing.assert_close(fast.eval()(x), expected, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(folded.eval()(x), expected, rtol=1e-9, atol=1e-9)
    assert all(m.rope.basis_skew is None for m in folded.modules() if hasattr(m, "rope"))


def test_block_equal_to_head_dim_is_one_dense_block_per_head_seeing_both_axes():
    rope = make_rope("axial_block", head_dim=64, num_heads=2, block=64)
    assert rope.num_blocks == 1 and rope.basis().shape == (2, 1, 64, 64)
    onehot = rope.axis_onehot
    assert onehot[:, 0].sum() == 16 and onehot[:, 1].sum() == 16  # both axes rotate, 16 planes each


def test_fast_path_gradients_flow_for_n_64():
    rope = make_rope("axial_block", head_dim=64, num_heads=2, block=64, learnable=True)
    w = torch.randn(3 * 2 * 64, 32, requires_grad=True)
    wq, _ = rope.project_qkv(w, None)
    pos = torch.randn(6, 2)
    qkv = (torch.randn(3, 6, 32) @ wq.T).view(3, 6, 3, 2, 64).permute(2, 0, 3, 1, 4)
    q, k = rope.rotate_qk(qkv[0], qkv[1], pos, in_basis=True)
    (q @ k.transpose(-1, -2)).square().mean().backward()
    assert rope.basis_skew.grad.abs().sum() > 0 and rope.freqs.grad.abs().sum() > 0


@pytest.mark.parametrize("n,planes", [(3, 21), (4, 32), (5, 24), (6, 30), (16, 32), (64, 32)])
@pytest.mark.parametrize("dims", [1, 2])
def test_layout_of_rotates_the_planes_of_the_n_by_n_layout(n, planes, dims):
    """2×2 blocks carrying exactly N's planes: same count, axes and frequencies; the rest unrotated."""
    control = make_rope("axial_block", head_dim=64, num_heads=2, dims=dims, block=2, layout_of=n)
    reference = make_rope("axial_block", head_dim=64, num_heads=2, dims=dims, block=n)
    assert control.num_planes == reference.num_planes == planes
    torch.testing.assert_close(control.omega(), reference.omega())
    freqs, axis = axial_layout(64 // n, n // 2, dims, 100.0)
    torch.testing.assert_close(control.omega()[0], freqs[:, None] * torch.nn.functional.one_hot(axis, dims))
    r = control.rotation(torch.tensor([[1.3, -2.1]][:1], dtype=torch.float32)[:, :dims] * 7)[0, 0]
    rotated = 2 * planes
    torch.testing.assert_close(r[rotated:, rotated:], torch.eye(64 - rotated))
    assert (r.diagonal()[:rotated] - 1).abs().max() > 1e-3
    x = torch.randn(2, 2, 5, 64)
    pos = torch.randn(5, dims) * 3
    matrix = make_rope(
        "axial_block", head_dim=64, num_heads=2, dims=dims, block=2, layout_of=n, impl="matrix"
    )
    torch.testing.assert_close(matrix(x, pos), control(x, pos), rtol=1e-5, atol=1e-5)


def test_layout_of_differs_from_plain_two_by_two():
    plain = make_rope("axial_block", head_dim=64, num_heads=1, block=2)
    control = make_rope("axial_block", head_dim=64, num_heads=1, block=2, layout_of=3)
    assert plain.num_planes == 32 and control.num_planes == 21
    assert not torch.equal(plain.omega()[:, :21], control.omega())


@pytest.mark.parametrize("n", [2, 4, 8, 16, 32, 64])
def test_axial_init_equals_two_by_two_rope_axial_for_even_n_dividing_head_dim(n):
    """README's claim: with Q = I, N even and N | head_dim, init=axial is exactly 2×2 RoPE-Axial."""
    two = make_rope("axial2_complex", head_dim=64, num_heads=1)
    big = make_rope("axial_block", head_dim=64, num_heads=1, block=n)
    pos = torch.randn(7, 2) * 5
    x = torch.randn(1, 1, 7, 64)
    torch.testing.assert_close(big(x, pos), two(x, pos), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n", [3, 5, 6])
def test_axial_init_differs_from_rope_axial_otherwise(n):
    two = make_rope("axial2_complex", head_dim=64, num_heads=1)
    big = make_rope("axial_block", head_dim=64, num_heads=1, block=n)
    pos = torch.randn(7, 2) * 5
    x = torch.randn(1, 1, 7, 64)
    assert (big(x, pos) - two(x, pos)).abs().max() > 1e-2


def test_bench_takes_any_block_size_and_reports_every_impl():
    from rope_ext import bench

    args = bench.parse_args(
        "--embed-dim 32 --depth 1 --num-heads 2 --img-size 16 --blocks 2,16 --steps 1 --warmup 0 "
        "--train-batch 2 --infer-batch 2 --device cpu --clock cpu".split()
    )
    rows = {r["variant"]: r for r in bench.run(args)}
    for impl in ("matrix", "fast", "folded"):
        assert rows[f"axial_block N=16 {impl}"]["infer_ms"] > 0
    assert (
        rows["axial_block N=16 fast"]["train_ms"] > 0 and rows["axial_block N=16 folded"]["train_ms"] is None
    )
    assert bench.parse_args(["--model", "vit_small_patch16_224"]).embed_dim == 0  # the model's own shape
    table = bench.basis_cost(args, repeats=1)
    assert "| 16 | 1 |" in table and "| 2 |" not in table


@pytest.mark.parametrize(
    "argv,message",
    [
        ("--blocks 65", "argument --blocks: [65] not allowed; allowed values: 2..64 (head_dim of the model)"),
        ("--embed-dim 32 --num-heads 2 --blocks 2,17", "--blocks: [17] not allowed; allowed values: 2..16"),
        ("--blocks 2,x", "argument --blocks: '2,x' is not allowed; allowed values: block sizes separated"),
        ("--img-size 0", "argument --img-size: '0' is not allowed; allowed values: an integer >= 1"),
        ("--img-size 30", "argument --img-size: 30 is not allowed; allowed values: a multiple of 4"),
        ("--steps 0", "argument --steps: '0' is not allowed; allowed values: an integer >= 1"),
        ("--train-batch 0", "argument --train-batch: '0' is not allowed; allowed values: an integer >= 1"),
        ("--warmup -1", "argument --warmup: '-1' is not allowed; allowed values: an integer >= 0"),
        ("--only zzz", "argument --only: ['zzz'] matches no variant; allowed values: parts of ['none'"),
        ("--model resnet_nope", "argument --model: 'resnet_nope' with this shape is not allowed"),
    ],
)
def test_bench_refuses_bad_arguments_in_one_line(argv, message, capsys):
    from rope_ext import bench

    with pytest.raises(SystemExit) as exit_:
        bench.parse_args(argv.split())
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_.value.code == 2 and message in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_bench_refuses_cuda_without_cuda(capsys):
    from rope_ext import bench

    with pytest.raises(SystemExit) as exit_:
        bench.main(["--device", "cuda"])
    assert (
        exit_.value.code == 2
        and "--device: 'cuda' is not allowed here (no CUDA device)" in capsys.readouterr().err
    )


# -- the frozen basis and how far a learned one moves ---------------------------------------------------


def test_frozen_basis_is_the_layout_control_with_its_dims_permuted():
    """pe.basis=frozen keeps Q = I: N = 3 is then the layout_of=3 control up to a fixed permutation of
    the head dims (block b's dims 3b, 3b+1 are plane b's pair 2b, 2b+1; its third dim is unrotated)."""
    frozen = make_rope("axial_block", head_dim=64, num_heads=2, block=3, basis="frozen", impl="matrix")
    control = make_rope("axial_block", head_dim=64, num_heads=2, block=2, layout_of=3, impl="matrix")
    assert not frozen.basis_skew.requires_grad and frozen.spec.basis == "frozen"
    perm = torch.empty(64, dtype=torch.long)
    b = torch.arange(21)
    perm[3 * b], perm[3 * b + 1], perm[3 * b + 2], perm[63] = 2 * b, 2 * b + 1, 42 + b, 63
    pos = torch.randn(9, 2) * 6
    r_frozen, r_control = frozen.rotation(pos), control.rotation(pos)
    torch.testing.assert_close(r_frozen, r_control[..., perm[:, None], perm[None, :]])


def test_frozen_basis_stays_at_its_init_in_training_and_a_learned_one_moves():
    torch.manual_seed(0)
    runs = {}
    for basis in ("learned", "frozen"):
        model = build_tiny_vit("axial_block", num_classes=3, img_size=16, block=3, basis=basis)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-2)
        x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 0])
        for _ in range(3):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        runs[basis] = basis_motion(model)
    assert [m["layer"] for m in runs["frozen"]] == [0, 1]
    assert all(m[k] == 0.0 for m in runs["frozen"] for k in m if k != "layer")
    assert all(m["angle_max_deg"] > 0.01 and m["tilt_max_deg"] > 0.01 for m in runs["learned"])


def test_basis_option_only_where_a_basis_exists():
    assert validate_pe("axial_block", {"block": 3}).basis == "learned"
    assert validate_pe("axial_block", {"block": 2}).basis is None
    assert validate_pe("lie_block", {}).basis is None and validate_pe("none", {}).basis is None
    for name, opts in [("axial_block", {"block": 2}), ("axial2_complex", {}), ("lie_block", {"block": 4})]:
        with pytest.raises(
            ValueError, match=r"basis='frozen' is not allowed .*only pe='axial_block' with block > 2"
        ):
            validate_pe(name, {**opts, "basis": "frozen"})
    with pytest.raises(
        ValueError, match=r"basis='fixed' is not allowed .*allowed values: 'learned', 'frozen'"
    ):
        validate_pe("axial_block", {"block": 4, "basis": "fixed"})


def _plane_rotation(angles: torch.Tensor, n: int) -> torch.Tensor:
    """Block-diagonal rotations inside the planes (2i, 2i+1) of an n×n block: what D(p) commutes with."""
    g = torch.eye(n, dtype=torch.float64)
    for i, a in enumerate(angles.tolist()):
        c, s = math.cos(a), math.sin(a)
        g[2 * i : 2 * i + 2, 2 * i : 2 * i + 2] = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    return g


@settings(max_examples=30, deadline=None)
@given(n=st.integers(3, 7), seed=st.integers(0, 2**16), scale=st.floats(0.0, 2.0))
def test_plane_tilt_ignores_the_gauge_and_rotation_angle_does_not(n, seed, scale):
    gen = torch.Generator().manual_seed(seed)
    s = skew(torch.randn(n * (n - 1) // 2, generator=gen, dtype=torch.float64) * scale, n)
    eye = torch.eye(n, dtype=torch.float64)
    q = torch.linalg.solve(eye - s, eye + s)
    g = _plane_rotation(torch.rand(n // 2, generator=gen, dtype=torch.float64) * 3, n)
    torch.testing.assert_close(plane_tilts(q @ g), plane_tilts(q), atol=1e-6, rtol=0)
    assert (plane_tilts(q) >= 0).all() and (plane_tilts(q) <= torch.pi / 2 + 1e-9).all()
    # a pure in-plane rotation moves no plane, though Q itself turns by its largest angle
    angles = torch.tensor([0.4 + 0.1 * i for i in range(n // 2)], dtype=torch.float64)
    g = _plane_rotation(angles, n)
    torch.testing.assert_close(plane_tilts(g), torch.zeros(n // 2, dtype=torch.float64), atol=1e-7, rtol=0)
    torch.testing.assert_close(rotation_angles(g), angles.max())


def test_tilt_of_a_known_rotation_out_of_the_plane():
    """Turning the 3×3 block by φ about the plane's x axis tilts the (x, y) plane by exactly φ."""
    for phi in (0.0, 0.3, 1.2):
        c, s = math.cos(phi), math.sin(phi)
        q = torch.tensor([[1.0, 0, 0], [0, c, -s], [0, s, c]], dtype=torch.float64)
        torch.testing.assert_close(plane_tilts(q), torch.tensor([phi], dtype=torch.float64))
        torch.testing.assert_close(rotation_angles(q), torch.tensor(phi, dtype=torch.float64))


def test_basis_motion_is_absent_without_a_basis_and_after_folding():
    kw = dict(num_classes=3, img_size=16)
    assert basis_motion(build_tiny_vit("none", **kw)) is None
    assert basis_motion(build_tiny_vit("axial2_complex", **kw)) is None
    model = build_tiny_vit("axial_block", block=4, **kw)
    fresh = basis_motion(model)
    assert len(fresh) == 2 and all(m["angle_max_deg"] == 0.0 for m in fresh)
    perturb_rotary(model, 0.3, seed=1)
    assert all(m["tilt_mean_deg"] > 0 for m in basis_motion(model))
    assert basis_motion(fold_for_inference(model)) is None
