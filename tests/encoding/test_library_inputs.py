"""Bad input to the library's public functions: a TypeError / ValueError naming the argument, before
any work; the input size bound; checkpoints with the wrong dtypes or non-finite weights."""

from __future__ import annotations

import time

import pytest
import torch
from safetensors.torch import save_file

from rope_ext import basis_motion, create_vit, fold_for_inference, make_rope, relative_property_error
from rope_ext.encoding.inputs import MAX_TOKENS
from rope_ext.encoding.relativity import shift_error
from rope_ext.encoding.weights import CheckpointFileError

TINY = dict(num_classes=3, img_size=32, patch_size=4, embed_dim=32, depth=1, num_heads=2)


def vit(pe: str = "axial_block", **kw: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_vit("vit_tiny_patch16_224", pe=pe, **{**TINY, **kw}).eval()


BAD_IMAGES = [
    ("a string", "abc", TypeError, r"images must be a tensor \[B, C, H, W\]; got str"),
    ("3-D", torch.zeros(3, 32, 32), ValueError, r"images must have shape \[B, C, H, W\]; got \(3, 32, 32\)"),
    ("empty batch", torch.zeros(0, 3, 32, 32), ValueError, "images is an empty batch"),
    ("integers", torch.zeros(1, 3, 32, 32, dtype=torch.long), TypeError, "must be a floating tensor; got dtype torch.int64"),
    ("fp16 for fp32 weights", torch.zeros(1, 3, 32, 32, dtype=torch.float16), TypeError,
     "images has dtype torch.float16 but the model's weights are torch.float32"),
    ("one channel", torch.zeros(1, 1, 32, 32), ValueError, "images has 1 channels; the model takes 3"),
    ("not a patch multiple", torch.zeros(1, 3, 30, 32), ValueError, r"30x32 px are not allowed; allowed: sizes that are multiples of the patch \(4x4\)"),
]  # fmt: skip


@pytest.mark.parametrize("pe", ["none", "axial_block"])
@pytest.mark.parametrize("what,images,error,match", BAD_IMAGES, ids=[case[0] for case in BAD_IMAGES])
def test_a_model_refuses_bad_images_naming_them(pe, what, images, error, match):
    with pytest.raises(error, match=match):
        vit(pe)(images)


def test_an_image_too_large_is_refused_at_once_naming_the_bound():
    """A 16-px model given a 4096² image: 65536 patches of 16 px, over MAX_TOKENS."""
    for pe in ("none", "axial2_complex"):
        model = create_vit("vit_tiny_patch16_224", pe=pe, num_classes=10, img_size=16, depth=1)
        start = time.monotonic()
        with pytest.raises(
            ValueError,
            match=f"give 65536 patches of 16x16 px per image; allowed: at most MAX_TOKENS = {MAX_TOKENS}",
        ):
            model(torch.zeros(1, 3, 4096, 4096))
        assert time.monotonic() - start < 5
    side = int(MAX_TOKENS**0.5) * 16
    assert model.patch_embed.dynamic_feat_size((side, side)) == (128, 128)  # the bound itself is allowed


def test_images_are_checked_under_autocast_and_by_keyword_too():
    model = vit()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 3)
    assert model(x=torch.zeros(1, 3, 32, 32)).shape == (1, 3)
    with pytest.raises(ValueError, match="x is an empty batch"):
        model.forward_features(torch.zeros(0, 3, 32, 32))


@pytest.mark.parametrize(
    "pe,options", [("axial_block", {"block": 3}), ("lie_block", {"block": 3}), ("axial2_complex", {})]
)
def test_a_half_precision_model_runs_on_cpu(pe, options):
    model = vit(pe, pe_options=options).half()
    out = model(torch.randn(2, 3, 32, 32).half())
    assert out.dtype == torch.float16 and torch.isfinite(out).all()


def test_the_measurements_and_the_fold_name_a_bad_model_or_argument():
    for fn in (fold_for_inference, relative_property_error, basis_motion):
        with pytest.raises(TypeError, match="model must be a torch.nn.Module .*got str"):
            fn("model")
    model = vit()
    with pytest.raises(ValueError, match="grid=0 is not allowed; allowed values: an integer >= 1"):
        relative_property_error(model, grid=0)
    with pytest.raises(ValueError, match=r"shift=\(nan,\) is not allowed"):
        relative_property_error(model, shift=(float("nan"),))
    with pytest.raises(TypeError, match="images must be a tensor"):
        shift_error(model, [[1.0]], 1.0)
    with pytest.raises(ValueError, match="images is an empty batch"):
        shift_error(model, torch.zeros(0, 3, 32, 32), 1.0)


def test_create_vit_and_a_layer_name_a_bad_argument():
    with pytest.raises(TypeError, match="model_name must be a timm model name"):
        create_vit(3, pe="axial_block", num_classes=3, img_size=32)
    with pytest.raises(TypeError, match="pe_options must be a mapping .*got int"):
        create_vit("vit_tiny_patch16_224", pe="axial_block", pe_options=3, num_classes=3, img_size=32)
    rope = make_rope("axial_block", head_dim=12, num_heads=2)
    with pytest.raises(TypeError, match=r"x must be a tensor \[\.\.\., H, T, D=12\]; got list"):
        rope([1.0], torch.zeros(1, 2))
    with pytest.raises(ValueError, match=r"x must have shape \[\.\.\., H=2, T, D=12\]; got \(1, 3, 4, 12\)"):
        rope(torch.zeros(1, 3, 4, 12), torch.zeros(4, 2))


def _saved(tmp_path, state: dict[str, torch.Tensor]):
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, path)
    return path


def test_a_checkpoint_with_integer_or_non_finite_weights_is_refused(tmp_path):
    state = vit("none").state_dict()
    ints = {k: (v * 100).long() if k.endswith("qkv.weight") else v for k, v in state.items()}
    with pytest.raises(
        CheckpointFileError,
        match=r"1 weights are not floating point: blocks\.0\.attn\.qkv\.weight \(torch\.int64\)",
    ):
        vit("none", checkpoint=_saved(tmp_path, ints))
    nan = {k: torch.full_like(v, float("nan")) if k == "head.weight" else v for k, v in state.items()}
    with pytest.raises(
        CheckpointFileError, match=r"head\.weight holds 96 non-finite values \(NaN or inf\) of 96"
    ):
        vit("none", checkpoint=_saved(tmp_path, nan))


def test_a_float64_checkpoint_loads_converted_to_the_model_s_dtype(tmp_path):
    state = {k: v.double() * 1.5 for k, v in vit("none").state_dict().items()}
    model = vit("none", checkpoint=_saved(tmp_path, state))
    weight = model.blocks[0].attn.qkv.weight
    assert weight.dtype == torch.float32 and torch.equal(weight, state["blocks.0.attn.qkv.weight"].float())
