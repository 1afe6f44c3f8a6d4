"""The rotary encodings on their own: the relative property, the impls agreeing, bad input."""

from __future__ import annotations

import pytest
import torch
from encoding_cases import cases, names, option_strategy, rotary
from harness_helpers import REPO, assert_exact_rotation, perturbed, relative_deviation
from hypothesis import given, settings
from hypothesis import strategies as st

from rope_ext import RopeSpec, make_rope, validate_pe
from rope_ext.encoding import registry
from rope_ext.encoding.encodings.axial_block import BlockRotary
from rope_ext.encoding.functional import rotate_pairs, to_basis
from rope_ext.encoding.spec import THETA_MIXED

torch.set_default_dtype(torch.float32)


@pytest.mark.parametrize("name", names(exact_relative=True))
@settings(max_examples=20, deadline=None)
@given(
    data=st.data(),
    dims=st.sampled_from([1, 2]),
    head_dim=st.sampled_from([12, 16, 14]),
    seed=st.integers(0, 2**16),
)
def test_relative_property_holds_for_any_parameters(name, data, dims, head_dim, seed):
    """Every encoding registered as exact_relative: R(p_i)ᵀR(p_j) = R(p_j − p_i) for random
    parameters, any accepted options."""
    options = data.draw(option_strategy(registry.get(name)))
    rope = perturbed(name, seed=seed, head_dim=head_dim, num_heads=2, dims=dims, **options)
    assert_exact_rotation(rope, seed=seed, tokens=6, tol=1e-5)


@pytest.mark.parametrize("name", names(exact_relative=False))
@pytest.mark.parametrize("block", [3, 4, 5, 6])  # so(2) is abelian: 2×2 blocks are always exact
def test_relative_property_check_fails_on_a_non_commuting_encoding(name, block):
    """The same check catches a non-commuting family: it can fail."""
    rope = perturbed(name, head_dim=12, num_heads=2, dims=2, block=block)
    pos = torch.rand(6, 2, dtype=torch.float64) * 10
    assert relative_deviation(rope, pos, torch.tensor([3.0, -5.0], dtype=torch.float64)) > 1e-3
    # ... while along a single axis it is exact (one generator always commutes with itself).
    rope_1d = perturbed(name, head_dim=12, num_heads=2, dims=1, block=block)
    pos_1d = torch.rand(6, 1, dtype=torch.float64) * 10
    assert relative_deviation(rope_1d, pos_1d, torch.tensor([7.0], dtype=torch.float64)) < 1e-8


@pytest.mark.parametrize(
    "name,options",
    [case for info in rotary() for case in cases(info, head_dim=14)]
    + [
        (info.name, {"block": n, "impl": impl, "mixed": mixed})
        for info in rotary()
        if info.accepts.block is None
        for n in (3, 4, 6)
        for impl in info.accepts.impls
        for mixed in ((False, True) if info.accepts.mixed else (False,))
    ],
    ids=str,
)
@pytest.mark.parametrize("dims", [1, 2])
def test_forward_equals_dense_rotation(name, options, dims):
    """rope(x, pos) == rotation(pos) @ x per token; rotation() is built independently (matrix_exp)."""
    rope = perturbed(name, head_dim=14, num_heads=3, **{"dims": dims, **options})
    pos = torch.randn(5, rope.dims, dtype=torch.float64) * 4
    x = torch.randn(2, 3, 5, 14, dtype=torch.float64)
    expected = torch.einsum("htij,bhtj->bhti", rope.rotation(pos), x)
    torch.testing.assert_close(rope(x, pos), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("block", [2, 3, 4, 5, 6])
@pytest.mark.parametrize("mixed", [False, True])
def test_matrix_and_fast_share_parameters_and_function(block, mixed):
    fast = perturbed("axial_block", head_dim=16, num_heads=2, block=block, impl="fast", mixed=mixed)
    matrix = make_rope(
        "axial_block", head_dim=16, num_heads=2, block=block, impl="matrix", mixed=mixed
    ).double()
    assert fast.state_dict().keys() == matrix.state_dict().keys()
    matrix.load_state_dict(fast.state_dict())
    pos, x = torch.randn(9, 2, dtype=torch.float64) * 3, torch.randn(4, 2, 9, 16, dtype=torch.float64)
    torch.testing.assert_close(fast(x, pos), matrix(x, pos), rtol=1e-10, atol=1e-10)
    # ...and inside attention, where fast rotates in the basis and the basis moves onto the weight.
    w = torch.randn(3 * 2 * 16, 8, dtype=torch.float64)
    wq, _ = fast.project_qkv(w, None) if fast.fold_into_projection else (w, None)
    inp = torch.randn(4, 9, 8, dtype=torch.float64)

    def logits(rope, weight, in_basis):
        qkv = (inp @ weight.T).view(4, 9, 3, 2, 16).permute(2, 0, 3, 1, 4)
        qr, kr = rope.rotate(qkv[:2], pos, in_basis=in_basis)
        return qr @ kr.transpose(-1, -2)

    torch.testing.assert_close(
        logits(fast, wq, fast.fold_into_projection), logits(matrix, w, False), rtol=1e-10, atol=1e-10
    )


def test_axial2_matrix_equals_axial2_complex():
    complex_ = make_rope("axial2_complex", head_dim=32, num_heads=4)
    matrix = make_rope("axial2_matrix", head_dim=32, num_heads=4)
    matrix.load_state_dict(complex_.state_dict())
    pos = torch.stack(torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="xy"), -1).view(-1, 2)
    x = torch.randn(3, 4, 64, 32)
    torch.testing.assert_close(complex_(x, pos), matrix(x, pos), rtol=1e-5, atol=1e-5)


def heo_axial_reference(x: torch.Tensor, end_x: int, end_y: int, theta: float = 100.0) -> torch.Tensor:
    """Heo et al.'s compute_axial_cis + apply_rotary_emb (rope-vit, models/vit_rope.py), verbatim math."""
    dim = x.shape[-1]
    freqs_x = 1.0 / (theta ** (torch.arange(0, dim, 4)[: (dim // 4)].float() / dim))
    freqs_y = 1.0 / (theta ** (torch.arange(0, dim, 4)[: (dim // 4)].float() / dim))
    t = torch.arange(end_x * end_y, dtype=torch.float32)
    t_x, t_y = (t % end_x).float(), torch.div(t, end_x, rounding_mode="floor").float()
    freqs_x, freqs_y = torch.outer(t_x, freqs_x), torch.outer(t_y, freqs_y)
    cis = torch.cat(
        [torch.polar(torch.ones_like(freqs_x), freqs_x), torch.polar(torch.ones_like(freqs_y), freqs_y)], -1
    )
    xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(xc * cis).flatten(3)


@pytest.mark.parametrize(
    "name,options", [("axial2_complex", {}), ("axial2_matrix", {}), ("axial_block", {"block": 2})]
)
def test_block_2_reproduces_heo_rope_axial(name, options):
    rope = make_rope(name, head_dim=32, num_heads=2, **options)
    end_x, end_y = 7, 5
    t = torch.arange(end_x * end_y)
    pos = torch.stack((t % end_x, t // end_x), -1).float()
    x = torch.randn(2, 2, end_x * end_y, 32)
    torch.testing.assert_close(rope(x, pos), heo_axial_reference(x, end_x, end_y), rtol=1e-5, atol=1e-5)


def test_mixed_block_2_is_heo_rope_mixed_init():
    """Heo's init_random_2d_freqs: per head, |ω_j| = 10^(-4j/D) on both halves, the halves' directions
    at a random angle and that angle + π/2."""
    rope = make_rope("axial_block", head_dim=32, num_heads=3, block=2, mixed=True)
    assert rope.learnable and rope.theta == 10.0 and rope.freqs.requires_grad
    omega = rope.omega().detach()  # [H, 16, 2]
    mags = 1.0 / (10.0 ** (torch.arange(0, 32, 4).float() / 32))
    torch.testing.assert_close(
        omega.norm(dim=-1), torch.cat([mags, mags]).expand(3, -1), rtol=1e-5, atol=1e-6
    )
    first, second = (
        omega[:, 0] / omega[:, 0].norm(dim=-1, keepdim=True),
        omega[:, 8] / omega[:, 8].norm(dim=-1, keepdim=True),
    )
    rot90 = torch.stack((-first[:, 1], first[:, 0]), -1)
    torch.testing.assert_close(second, rot90, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("block", [3, 5, 6])
def test_leftover_dims_and_odd_direction_stay_unrotated(block):
    """head_dim 16 with N = 3/5/6 leaves 16 mod N dims unrotated; odd N also one direction per block."""
    rope = perturbed("axial_block", head_dim=16, num_heads=1, block=block)
    r = rope.rotation(torch.tensor([[3.0, 4.0]], dtype=torch.float64))[0, 0]
    used = (16 // block) * block
    torch.testing.assert_close(r[used:, used:], torch.eye(16 - used, dtype=torch.float64))
    assert r[used:, :used].abs().max() == 0 and r[:used, used:].abs().max() == 0
    if block % 2:
        eigvals = torch.linalg.eigvals(r[:block, :block])
        assert (eigvals - 1).abs().min() < 1e-8  # the axis of the block's single plane


def test_rotate_pairs_real_form_equals_complex_and_runs_in_bf16():
    x = torch.randn(2, 3, 10, 16)
    angles = torch.randn(3, 10, 6)
    cos, sin = angles.cos(), angles.sin()
    a = rotate_pairs(x, cos, sin, use_complex=True)
    b = rotate_pairs(x, cos, sin, use_complex=False)
    torch.testing.assert_close(a, b)
    assert torch.equal(a[..., 12:], x[..., 12:])
    out = rotate_pairs(x.bfloat16(), cos, sin, use_complex=True)  # complex has no bf16: falls back
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), a, rtol=0.05, atol=0.05)


def test_tables_are_cached_while_frozen_and_refreshed_after_an_update():
    rope = make_rope("axial_block", head_dim=12, num_heads=2, block=3)
    pos = torch.randn(4, 2)
    with torch.no_grad():
        t1 = rope.tables(pos, grid_key="g")
        assert rope.tables(pos, grid_key="g") is t1
        rope.freqs.mul_(2.0)  # an optimizer step bumps the version: the cache must not serve stale tables
        t2 = rope.tables(pos, grid_key="g")
    assert t2 is not t1 and not torch.allclose(t1[0], t2[0])
    # Training: the fast path's tables come from the frozen frequencies alone (the learnable basis acts
    # on the weights), so they stay cached; learnable frequencies, or the matrix impl's block
    # matrices (which hold the basis), are rebuilt on every forward.
    assert rope.tables(pos, grid_key="g") is rope.tables(pos, grid_key="g")
    for options in ({"learnable": True}, {"impl": "matrix"}):
        other = make_rope("axial_block", head_dim=12, num_heads=2, block=3, **options)
        assert other.tables(pos, grid_key="g") is not other.tables(pos, grid_key="g")


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(name="rope2d"), f"allowed values: {', '.join(registry.rotary_names())}"),
        (
            dict(name="axial_block", block=1),
            "block=1 is not allowed for pe='axial_block'; allowed values: an integer in 2..16 for head_dim 16",
        ),
        (
            dict(name="axial_block", block=17),
            "block=17 is not allowed for pe='axial_block'; allowed values: an integer in 2..16 for head_dim 16",
        ),
        (
            dict(name="lie_block", block=5, head_dim=4),
            "block=5 is not allowed for pe='lie_block'; allowed values: an integer in 2..4 for head_dim 4",
        ),
        (dict(name="axial_block", block=2.5), "block=2.5 is not allowed"),
        (
            dict(name="axial_block", dims=3),
            "dims=3 is not allowed for pe='axial_block'; allowed values: 1, 2",
        ),
        (
            dict(name="axial_block", impl="sparse"),
            "impl='sparse' is not allowed for pe='axial_block'; allowed values: 'fast', 'matrix'",
        ),
        (dict(name="axial_block", init="random"), "init='random' is not allowed"),
        (dict(name="axial_block", theta=-1.0), "theta=-1.0 is not allowed"),
        (dict(name="axial_block", theta=float("nan")), "theta=nan is not allowed"),
        (dict(name="axial2_complex", theta=float("inf")), "theta=inf is not allowed"),
        (dict(name="axial_block", colour="red"), "unknown option"),
        (dict(name="axial2_complex", block=4), "block=4 is not allowed for pe='axial2_complex'"),
        (
            dict(name="axial2_matrix", mixed=True),
            "mixed=True is not allowed for pe='axial2_matrix'; allowed values: False",
        ),
        (
            dict(name="lie_block", impl="fast"),
            "impl='fast' is not allowed for pe='lie_block'; allowed values: 'matrix'",
        ),
        (dict(name="axial_block", init="identity", learnable=False), "learnable=False is not allowed"),
        (dict(name="axial_block", coords="pixel"), "coords='pixel' is not allowed for pe='axial_block'"),
        (dict(name="axial_block", layout_of=3), "layout_of=3 is not allowed for pe='axial_block'"),
        (dict(name="axial_block", block=2, layout_of=17), "allowed values: null or an integer in 2..16"),
        (dict(name="axial2_complex", layout_of=3), "layout_of=3 is not allowed for pe='axial2_complex'"),
        (dict(name="axial_block", augment={"shift": 1}), "augment is not an option of one rotary layer"),
    ],
)
def test_bad_options_raise_value_error_naming_allowed_values(kwargs, match):
    kwargs = {"head_dim": 16, "num_heads": 2, **kwargs}
    name = kwargs.pop("name")
    with pytest.raises(ValueError, match=match.replace("(", r"\(").replace(".", r"\.")):
        make_rope(name, **kwargs)


@pytest.mark.parametrize("pos_shape", [(5,), (5, 3), (5, 1), (4, 2)])
def test_positions_of_wrong_shape_raise(pos_shape):
    rope = make_rope("axial_block", head_dim=12, num_heads=2, block=3)
    with pytest.raises(ValueError, match="positions"):
        rope(torch.randn(1, 2, 5, 12), torch.zeros(pos_shape))
    if len(pos_shape) != 2 or pos_shape[1] != 2:
        with pytest.raises(ValueError, match=r"shape \[T, dims=2\]"):
            rope.rotation(torch.zeros(pos_shape))


def test_identity_init_is_the_identity_and_learnable():
    rope = make_rope("axial_block", head_dim=12, num_heads=2, block=4, init="identity")
    assert isinstance(rope, BlockRotary) and rope.freqs.requires_grad
    x, pos = torch.randn(2, 2, 6, 12), torch.randn(6, 2) * 10
    torch.testing.assert_close(rope(x, pos), x)


@pytest.mark.parametrize("block", [3, 4, 5, 6])
def test_basis_matrix_is_the_to_basis_map(block):
    rope = perturbed("axial_block", head_dim=16, num_heads=2, block=block)
    x = torch.randn(3, 2, 7, 16, dtype=torch.float64)
    b = rope.basis_matrix()
    torch.testing.assert_close(torch.einsum("hij,bhtj->bhti", b, x), to_basis(x, rope.basis(), block))
    torch.testing.assert_close(b @ b.transpose(-1, -2), torch.eye(16, dtype=torch.float64).expand_as(b))


# -- the spec: one place for every option and default --------------------------------------------------


@pytest.mark.parametrize("name", names())
def test_a_layer_built_without_options_runs_the_spec_defaults(name):
    """make_rope with no options holds the resolved spec validate_pe returns, and its values are
    RopeSpec's field defaults or, where a field defaults to None, the encoding's own default."""
    rope = make_rope(name, head_dim=24, num_heads=2)
    spec, defaults, info = validate_pe(name, {}), RopeSpec(), registry.get(name)
    assert type(rope) is info.layer and rope.spec == spec and rope.spec.name == name
    for key in ("mixed", "dims", "init", "coords", "augment", "layout_of"):
        assert getattr(spec, key) == getattr(defaults, key), key
    accepts = info.accepts
    assert rope.block == spec.block == (accepts.block or accepts.default_block)
    assert rope.impl == spec.impl == accepts.impls[0]
    assert rope.theta == spec.theta == accepts.theta
    assert spec.learnable is (not accepts.learnable_false)
    assert spec.basis == ("learned" if info.learned_basis and spec.block > 2 else None)
    assert rope.options() == {k: v for k, v in spec.options().items() if k != "augment"}


def test_mixed_and_identity_defaults_come_from_the_spec():
    mixed = make_rope("axial_block", head_dim=24, num_heads=2, mixed=True)
    assert mixed.theta == THETA_MIXED and mixed.learnable and mixed.freqs.requires_grad
    identity = make_rope("axial_block", head_dim=24, num_heads=2, init="identity")
    assert identity.theta == registry.get("axial_block").accepts.theta and identity.learnable
    # a spec goes in as it came out: the same layer as from the name and options
    spec = validate_pe("axial_block", {"block": 4, "impl": "matrix", "theta": 50})
    assert (
        make_rope(spec, head_dim=24, num_heads=2).options()
        == make_rope("axial_block", head_dim=24, num_heads=2, block=4, impl="matrix", theta=50).options()
    )
    with pytest.raises(ValueError, match="block=4 is not allowed .*2..3 for head_dim 3"):
        make_rope(spec, head_dim=3, num_heads=2)


def test_none_takes_options_only_at_their_defaults():
    assert validate_pe("none", RopeSpec().options()) == RopeSpec()
    with pytest.raises(ValueError, match="pe.coords set with pe='none'"):
        validate_pe("none", {"coords": "normalized"}, prefix="pe.")


def _schema():
    """RopeSpec as OmegaConf's structured config, made writable as a Hydra group schema must be."""
    from omegaconf import OmegaConf

    def writable(node):
        OmegaConf.set_readonly(node, None)
        for key in node:
            child = node._get_node(key)
            if OmegaConf.is_config(child):
                writable(child)
        return node

    return writable(OmegaConf.structured(RopeSpec))


@pytest.mark.parametrize("path", sorted((REPO / "conf" / "pe").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_pe_file_fits_the_spec_as_a_structured_config(path):
    """RopeSpec as OmegaConf schema: each conf/pe file merges onto it (no unknown key, every type
    right), and the spec that comes out validates to what the file's own options give."""
    from omegaconf import OmegaConf

    text = OmegaConf.load(path)
    merged = OmegaConf.merge(_schema(), text)
    spec = OmegaConf.to_object(merged)
    assert isinstance(spec, RopeSpec) and spec.name == path.stem
    written = {k: v for k, v in OmegaConf.to_container(text).items() if k != "name" and v is not None}
    assert validate_pe(spec.name, spec) == validate_pe(text.name, written)
