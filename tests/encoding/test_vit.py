"""Rotary encodings inside timm ViTs: create_vit, folding, checkpoints, training, gradients."""

from __future__ import annotations

import copy
import pickle
import time

import pytest
import torch
from encoding_cases import all_cases, case_id, names
from safetensors.torch import save_file

from rope_ext import create_vit, fold_for_inference, relative_property_error
from rope_ext.encoding import registry
from rope_ext.encoding.relativity import perturb_rotary
from rope_ext.encoding.vit import RopeAttention, RopeVisionTransformer, rotary_attentions

VARIANTS = all_cases()


@pytest.mark.parametrize("pe,options", VARIANTS, ids=case_id)
def test_every_variant_runs_at_train_size_and_other_sizes(tiny_vit, pe, options):
    model = tiny_vit(pe, **options).eval()
    assert (model.pos_embed is None) == (pe != "none")
    assert sum(isinstance(m, RopeAttention) for m in model.modules()) == (0 if pe == "none" else 2)
    with torch.no_grad():
        for size in [(32, 32), (48, 48), (40, 64)]:
            assert model(torch.randn(2, 3, *size)).shape == (2, 10)


@pytest.mark.parametrize("pe,options", VARIANTS, ids=case_id)
def test_two_training_steps_decrease_the_loss(tiny_vit, pe, options):
    model = tiny_vit(pe, **options).train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 3, 32, 32, generator=gen), torch.randint(0, 10, (16,), generator=gen)
    losses = []
    for _ in range(2):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():  # the loss after the two steps (a third step would not be measured)
        losses.append(torch.nn.functional.cross_entropy(model(x), y).item())
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]


@pytest.mark.parametrize(
    "pe,options",
    [
        ("axial_block", {"block": 3}),
        ("axial_block", {"block": 4, "impl": "matrix", "learnable": True}),
        ("axial_block", {"block": 6, "mixed": True}),
        ("axial2_complex", {"learnable": True}),
        ("lie_block", {"block": 5}),
    ],
)
def test_gradients_reach_every_learnable_rotary_parameter(tiny_vit, pe, options):
    model = tiny_vit(pe, **options)
    perturb_rotary(model, 0.3)  # away from Q = I, where in-plane basis directions have zero gradient
    model(torch.randn(4, 3, 32, 32)).square().sum().backward()
    rotary = {n: p for n, p in model.named_parameters() if ".rope." in n and p.requires_grad}
    assert rotary, "no learnable rotary parameters"
    for name, p in rotary.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("block", [2, 3, 4, 5, 6])
@pytest.mark.parametrize("impl,mixed", [("fast", False), ("matrix", False), ("fast", True)])
def test_fold_for_inference_keeps_logits_and_leaves_input_untouched(tiny_vit, block, impl, mixed):
    model = tiny_vit("axial_block", block=block, impl=impl, mixed=mixed).eval()
    perturb_rotary(model, 0.3)
    with torch.no_grad():  # a non-zero qkv bias, so the bias fold is exercised
        for attn in rotary_attentions(model):
            attn.qkv.bias.normal_()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_for_inference(model)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        ref, out = model(x), folded(x)
        out_big = folded(torch.randn(3, 3, 48, 48))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())
    assert out_big.shape == (3, 10)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the input is untouched
    assert not any("basis_skew" in k for k in folded.state_dict())
    for attn in rotary_attentions(folded):
        assert attn.rope.folded == (block > 2) and attn.rope.impl == ("fast" if block > 2 else impl)


@pytest.mark.parametrize("pe", ["none", *names(folds=False)])
def test_fold_leaves_variants_without_a_basis_unchanged(tiny_vit, pe):
    model = tiny_vit(pe)
    folded = fold_for_inference(model)
    assert folded is not model
    a, b = model.state_dict(), folded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_fold_refuses_qk_norm(tiny_vit):
    model = tiny_vit("axial_block", block=3, vit_kwargs={"qk_norm": True})
    model(torch.randn(1, 3, 32, 32))  # runs unfolded (basis applied after the norm)
    with pytest.raises(ValueError, match="qk_norm"):
        fold_for_inference(model)


def test_matrix_and_fast_models_exchange_state_dicts(tiny_vit):
    fast = tiny_vit("axial_block", block=5, impl="fast").eval()
    perturb_rotary(fast, 0.3)
    matrix = tiny_vit("axial_block", block=5, impl="matrix", seed=1).eval()
    matrix.load_state_dict(fast.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(matrix(x), fast(x), rtol=1e-5, atol=1e-5)
    complex_ = tiny_vit("axial2_complex").eval()
    mat2 = tiny_vit("axial2_matrix", seed=3).eval()
    mat2.load_state_dict(complex_.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(mat2(x), complex_(x), rtol=1e-5, atol=1e-5)


def test_class_token_is_not_rotated(tiny_vit):
    model = tiny_vit("axial_block", block=4)
    perturb_rotary(model, 0.3)
    attn = model.blocks[0].attn
    positions = model.positions((32, 32), torch.device("cpu"))  # an 8x8 grid after one class token
    assert positions.coords.shape == (64, 2) and positions.num_prefix == 1
    q = torch.randn(1, 2, 65, 24)
    qr = attn.rope.rotate(q, positions.coords, num_prefix=positions.num_prefix)
    torch.testing.assert_close(qr[..., 0, :], q[..., 0, :])
    assert not torch.allclose(qr[..., 1:, :], q[..., 1:, :])


def test_relative_property_error_of_models(tiny_vit):
    exact = tiny_vit("axial_block", block=4, mixed=True)
    lie = tiny_vit("lie_block", block=4)
    perturb_rotary(exact, 0.3)
    perturb_rotary(lie, 0.3)
    assert relative_property_error(tiny_vit("none")) == 0.0
    assert relative_property_error(exact) < 1e-10
    assert relative_property_error(lie) > 1e-3


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_checkpoint_loads_into_a_rotary_model(tiny_vit, tmp_path, suffix):
    plain = tiny_vit("none", seed=5)
    path = tmp_path / f"weights{suffix}"
    state = {k: v.contiguous() for k, v in plain.state_dict().items()}
    save_file(state, path) if suffix == ".safetensors" else torch.save(state, path)
    with pytest.warns(UserWarning, match="pos_embed"):  # the rotary model has no absolute embedding
        model = tiny_vit("axial_block", block=3, vit_kwargs={"checkpoint": path})
    mine = model.state_dict()
    assert torch.equal(mine["blocks.1.attn.qkv.weight"], state["blocks.1.attn.qkv.weight"])
    assert torch.equal(mine["head.weight"], state["head.weight"])
    assert "blocks.0.attn.rope.basis_skew" in mine  # freshly initialised


def test_timm_checkpoint_with_other_head_and_grid_is_adapted(tiny_vit, tmp_path):
    """An ImageNet-style checkpoint (1000 classes, 224 px grid) fine-tunes at 32 px, 10 classes."""
    src = tiny_vit(num_classes=1000, img_size=224, vit_kwargs={"patch_size": 16})
    path = tmp_path / "imagenet.pth"
    torch.save({"model": src.state_dict()}, path)
    model = tiny_vit(vit_kwargs={"patch_size": 16, "checkpoint": path})
    assert model.pos_embed.shape == (1, 1 + 4, 48)  # resampled by timm's filter
    assert model.head.weight.shape == (10, 48)
    assert torch.equal(model.blocks[0].mlp.fc1.weight, src.blocks[0].mlp.fc1.weight)


def test_checkpoint_of_another_model_is_refused(tiny_vit, tmp_path):
    other = tiny_vit(vit_kwargs={"depth": 1})
    path = tmp_path / "other.pth"
    torch.save(other.state_dict(), path)
    with pytest.raises(ValueError, match="does not fit this model"):
        tiny_vit(vit_kwargs={"checkpoint": path})
    with pytest.raises(FileNotFoundError, match="no such file"):
        tiny_vit(vit_kwargs={"checkpoint": tmp_path / "nope.pth"})


def test_pretrained_offline_fails_fast_and_names_checkpoint(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="checkpoint="):
        create_vit("vit_tiny_patch16_224", pe="axial2_complex", num_classes=10, img_size=32, pretrained=True)
    assert time.monotonic() - start < 30


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(pe="rope"), f"pe='rope' is not allowed; allowed values: {', '.join(registry.names())}"),
        (dict(pe="axial_block", pe_options={"block": 65}), "block=65 is not allowed"),
        (
            dict(pe="axial_block", pe_options={"block": 6}, embed_dim=8, num_heads=2),
            "block=6 is not allowed for pe='axial_block'; allowed values: an integer in 2..4 for head_dim 4",
        ),
        (dict(pe="axial_block", pe_options={"dims": 3}), "dims=3 is not allowed"),
        (dict(pe="none", pe_options={"block": 3}), "block set with pe='none', which takes no options"),
        (dict(pe="axial2_complex", pos_embed="sincos"), "pos_embed='sincos' is not allowed"),
    ],
)
def test_create_vit_bad_input(tiny_vit, kwargs, match):
    kwargs = dict(kwargs)  # the parametrize dict is shared between runs: pop from a copy
    pe, options = kwargs.pop("pe"), kwargs.pop("pe_options", {})
    with pytest.raises(ValueError, match=match.replace("(", r"\(")):
        tiny_vit(pe, vit_kwargs=kwargs, **options)


def test_pos_embed_choices(tiny_vit):
    assert tiny_vit("none").pos_embed is not None
    keep = tiny_vit("axial2_complex", vit_kwargs={"pos_embed": "learn"})
    assert keep.pos_embed is not None
    drop = tiny_vit("none", vit_kwargs={"pos_embed": "none"})
    assert drop.pos_embed is None


def _dotlist(options: dict) -> list[str]:
    return [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in options.items()]


RECORDED = [(pe, _dotlist(options)) for pe, options in all_cases()] + [
    ("axial_block", ["block=4", "impl=matrix", "theta=50"]),
    ("axial_block", ["block=2", "layout_of=3", "dims=1"]),
    ("axial_block", ["init=identity", "coords=normalized", "augment.shift=0.5"]),
    *[(name, ["learnable=true"]) for name in names()],
]


@pytest.mark.parametrize("pe,overrides", RECORDED, ids=[f"{p} {' '.join(o)}" for p, o in RECORDED])
def test_resolved_options_report_what_the_model_uses(tiny_vit, pe, overrides):
    """vit.resolved_options (what metrics.json records as ``pe``): every option a rotary model runs
    with, package defaults filled in, the configured values kept, and the rules the layers impose
    (a fixed block stays fixed, an encoding that refuses learnable=False always learns)."""
    from omegaconf import OmegaConf

    from rope_ext.config import pe_options
    from rope_ext.encoding.spec import OPTION_KEYS
    from rope_ext.encoding.vit import resolved_options, rotary_attentions

    cfg = OmegaConf.merge(OmegaConf.create({"name": pe}), OmegaConf.from_dotlist(overrides))
    model = tiny_vit(pe, **pe_options(cfg))
    got = resolved_options(model, cfg)
    assert set(got) == {"name", *OPTION_KEYS} and got["name"] == pe
    for key, value in OmegaConf.to_container(OmegaConf.from_dotlist(overrides)).items():
        if key != "augment":
            assert got[key] == value, key
    if pe == "none":
        return
    layer = next(rotary_attentions(model))
    assert got["block"] == layer.rope.block
    assert all(got[k] is not None for k in ("block", "impl", "dims", "theta", "learnable", "init", "coords"))
    accepts = registry.get(pe).accepts
    if accepts.block is not None:
        assert got["block"] == accepts.block
    if not accepts.learnable_false:
        assert got["learnable"] is True


# -- positions: computed once per forward, passed explicitly -------------------------------------------


def test_positions_are_computed_once_per_forward_and_tables_reused_across_steps(tiny_vit, monkeypatch):
    """One grid of positions per forward whatever the depth; the rotation tables of all layers are
    built together on the first forward and reused while positions and (frozen) parameters stay the same."""
    import rope_ext.encoding.vit as vit
    from rope_ext.encoding.encodings.axial_block import BlockRotary

    model = tiny_vit("axial_block", block=3, vit_kwargs={"depth": 3})
    grids, tables = [], []
    grid_positions, build_tables = vit.grid_positions, BlockRotary.tables_layers
    monkeypatch.setattr(vit, "grid_positions", lambda *a, **kw: grids.append(a) or grid_positions(*a, **kw))
    monkeypatch.setattr(
        BlockRotary,
        "tables_layers",
        lambda self, layers, *a: tables.extend(layers) or build_tables(self, layers, *a),
    )
    x = torch.randn(2, 3, 32, 32)
    for step in range(3):
        loss = model.train()(x).square().mean()
        loss.backward()
        assert len(grids) == step + 1 and grids[-1][:2] == (8, 8)
    assert len(tables) == 3 and {id(t) for t in tables} == {id(b.attn.rope) for b in model.blocks}
    model(torch.randn(1, 3, 48, 32))  # another grid: new positions, new tables
    assert grids[-1][:2] == (12, 8) and len(tables) == 6


def test_blocks_take_positions_explicitly(tiny_vit):
    model = tiny_vit("axial2_complex")
    assert isinstance(model, RopeVisionTransformer) and model.rope_spec.name == "axial2_complex"
    assert not model.patch_embed._forward_pre_hooks
    tokens = torch.randn(1, 65, 48)
    with pytest.raises(TypeError, match="positions"):
        model.blocks[0](tokens)
    out = model.blocks[0](tokens, model.positions((32, 32), torch.device("cpu")))
    assert out.shape == tokens.shape


@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_a_pickled_or_copied_model_runs_and_keeps_no_stale_tables(tiny_vit, how):
    model = tiny_vit("axial_block", block=4).eval()
    perturb_rotary(model, 0.3)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)  # fills every layer's table cache
        clone = pickle.loads(pickle.dumps(model)) if how == "pickle" else copy.deepcopy(model)
        assert type(clone) is RopeVisionTransformer and clone.rope_spec == model.rope_spec
        torch.testing.assert_close(clone(x), ref)
        assert clone(torch.randn(1, 3, 48, 48)).shape == (1, 10)
        for blk in clone.blocks:
            blk.attn.rope.freqs.mul_(1.5)
        assert not torch.allclose(clone(x), ref, atol=1e-4)  # new frequencies, new tables
        torch.testing.assert_close(model(x), ref)  # the original is untouched


@pytest.mark.parametrize("value", [-1, 2.5, True])
def test_create_vit_refuses_a_bad_class_count(tiny_vit, value):
    with pytest.raises(
        ValueError, match=f"num_classes={value!r} is not allowed; allowed values: an integer >= 0"
    ):
        tiny_vit("axial2_complex", num_classes=value)


def test_create_vit_takes_a_spec():
    from rope_ext import validate_pe

    spec = validate_pe("axial_block", {"block": 4, "coords": "normalized"})
    model = create_vit(
        "vit_tiny_patch16_224",
        pe=spec,
        num_classes=3,
        img_size=32,
        patch_size=4,
        embed_dim=48,
        depth=1,
        num_heads=2,
    )
    assert model.rope_spec == spec and model.blocks[0].attn.rope.spec == spec
    with pytest.raises(ValueError, match="RopeSpec or a pe name with pe_options, not both"):
        create_vit("vit_tiny_patch16_224", pe=spec, pe_options={"block": 3}, num_classes=3, img_size=32)


def test_gradient_checkpointing_passes_the_positions_too(tiny_vit):
    x = torch.randn(2, 3, 32, 32)
    grads = []
    for checkpointing in (False, True):
        model = tiny_vit("axial_block", block=3, learnable=True).train()
        model.set_grad_checkpointing(checkpointing)
        model(x).square().mean().backward()
        grads.append(model.blocks[1].attn.rope.freqs.grad)
    torch.testing.assert_close(grads[1], grads[0])
