"""A ViT that is relative end to end: coordinates, their augmentation, pooling and shift_error."""

from __future__ import annotations

import json

import pytest
import torch
from encoding_cases import cases, names, rotary
from harness_helpers import TINY as TINY_RUN
from harness_helpers import TinyVit, run_train

from rope_ext import make_rope
from rope_ext.encoding.functional import augment_positions, grid_positions
from rope_ext.encoding.relativity import grid_offset, perturb, shift_error, shift_metrics, shifted_positions

EXACT = [case for info in rotary(exact_relative=True) for case in cases(info, extra=True)]


@pytest.fixture
def vit(tiny_vit: TinyVit) -> TinyVit:
    """Builds tiny ViTs with every rotary parameter and the class token perturbed (trained-like, not init)."""

    def build(pe: str, pool: str = "cls", seed: int = 0, **options: object) -> torch.nn.Module:
        model = tiny_vit(pe, seed, pool=pool, **options)
        return perturb(model, qkv_std=0.5).eval()  # timm's init leaves attention near uniform: sharpen it

    return build


IMAGES = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("pe,options", EXACT, ids=str)
def test_avg_pool_makes_every_exact_variant_shift_invariant(vit, pe, options):
    model = vit(pe, "avg", **options)
    assert model.cls_token is None and model.global_pool == "avg"
    for offset in (grid_offset(model, (32, 32), 1), grid_offset(model, (32, 32)), 2.5):
        assert shift_error(model, IMAGES, offset) < 1e-5
    # ...while the class token (unrotated) reads absolute position: the same check fails.
    assert shift_error(vit(pe, "cls", **options), IMAGES, grid_offset(model, (32, 32), 1)) > 1e-2


@pytest.mark.parametrize("pe", names(exact_relative=False))
@pytest.mark.parametrize("block", [3, 4])
def test_a_non_commuting_encoding_is_not_shift_invariant_even_with_avg_pool(vit, pe, block):
    model = vit(pe, "avg", block=block)
    assert shift_error(model, IMAGES, (1.0, 1.0)) > 1e-3


def test_shift_error_of_a_model_without_positions_is_not_measured_and_offsets_are_restored(vit):
    assert shift_error(vit("none", "avg"), IMAGES, (3.0, 3.0)) is None
    assert shift_error(vit("none", "cls"), IMAGES, (3.0, 3.0)) is None
    model = vit("axial_block", "cls", block=4)
    base = model(IMAGES)
    with shifted_positions(model, (8.0, 8.0)):
        moved = model(IMAGES)
    assert not torch.allclose(base, moved, atol=1e-3)
    torch.testing.assert_close(model(IMAGES), base)  # the offset is gone after the block
    with (
        pytest.raises(ValueError, match=r"one finite number per position axis \(2\)"),
        shifted_positions(model, (1.0, 2.0, 3.0)),
    ):
        pass


def test_grid_offsets_in_the_units_of_the_coordinates(vit):
    assert grid_offset(vit("axial_block", block=4), (32, 48)) == (6.0, 4.0)  # half of the 12 × 8 grid
    assert grid_offset(vit("axial_block", block=4, coords="normalized"), (32, 48), 1) == (2 / 12, 2 / 8)
    assert grid_offset(vit("axial_block", block=4, dims=1), (32, 32)) == (32.0,)
    assert grid_offset(vit("none"), (32, 32)) == ()


@pytest.mark.parametrize("offset", [float("nan"), (1.0, float("inf")), "one"])
def test_shift_error_refuses_a_bad_offset_before_any_forward(vit, offset):
    with pytest.raises(ValueError, match="offset=.* is not allowed; allowed values: a finite number"):
        shift_error(vit("axial_block", block=4), IMAGES, offset)


def test_shift_error_refuses_a_module_that_is_not_a_vit():
    with pytest.raises(ValueError, match="shift_error needs a timm VisionTransformer .*got Linear"):
        shift_error(torch.nn.Linear(3, 3), IMAGES, 1.0)


def test_shift_metrics_are_measured_or_absent(vit):
    """A model without rotary positions gets None for both (nothing was measured), and
    never runs the shifted evaluation; a rotary model gets both measured."""
    batches = [(IMAGES, torch.zeros(4))]

    def never() -> float:
        raise AssertionError("evaluated a model without positions")

    assert shift_metrics(vit("none"), batches, never) == {"shift_error": None, "test_acc_shifted": None}
    shifts = []
    model = vit("axial_block", "avg", block=4)
    got = shift_metrics(model, batches, lambda: shifts.append(model.position_offset) or 50.0)
    assert got["test_acc_shifted"] == 50.0 and 0 <= got["shift_error"] < 1e-5
    assert shifts == [(4.0, 4.0)] and model.position_offset is None  # half the 8x8 grid, then restored


# -- coordinates -------------------------------------------------------------------------------------


def test_normalized_coordinates_of_a_grid_and_its_2x_resize_coincide_at_shared_centres():
    """A 2× resize splits each patch in 2×2: their centres average to the coarse patch's centre, and
    both grids span the same [-1, 1] box. Patch coordinates fail the same check."""
    for coords, should_match in (("normalized", True), ("patch", False)):
        coarse = grid_positions(3, 5, 2, coords).view(3, 5, 2)
        fine = grid_positions(6, 10, 2, coords).view(3, 2, 5, 2, 2).mean(dim=(1, 3))
        assert torch.allclose(coarse, fine, atol=1e-6) == should_match
    norm = grid_positions(6, 10, 2, "normalized")
    assert norm.min() > -1 and norm.max() < 1
    torch.testing.assert_close(norm[:, 0].unique(), (torch.arange(10) + 0.5) / 10 * 2 - 1)


def test_normalized_frequencies_are_two_pi_times_the_patch_ones():
    patch = make_rope("axial_block", head_dim=24, num_heads=2, block=4)
    norm = make_rope("axial_block", head_dim=24, num_heads=2, block=4, coords="normalized")
    torch.testing.assert_close(norm.omega(), 2 * torch.pi * patch.omega())
    assert norm.coords == "normalized"


def test_a_normalized_model_runs_at_other_sizes_and_records_its_coords(vit):
    model = vit("axial_block", block=3, coords="normalized")
    for size in (32, 48, 64):
        assert model(torch.randn(1, 3, size, size)).shape == (1, 10)
    assert model.rope_spec.coords == "normalized"
    assert model.positions((48, 32), torch.device("cpu")).coords.abs().max() < 1


# -- augmentation ------------------------------------------------------------------------------------

AUGMENT = {"shift": 1.5, "jitter": 1.5, "rescale": 2.0}


def test_augment_positions_is_one_affine_draw_for_all_tokens():
    pos = grid_positions(4, 4, 2, "normalized")
    gen = torch.Generator().manual_seed(0)
    out = augment_positions(pos, **AUGMENT, generator=gen)
    scale = (out[1] - out[0]) / (pos[1] - pos[0]).clamp_min(1e-9)
    scale_y = (out[4] - out[0])[1] / (pos[4] - pos[0])[1]
    expected = pos * torch.stack((scale[0], scale_y))
    torch.testing.assert_close(out - expected, (out - expected)[:1].expand_as(out), atol=1e-5, rtol=0)
    assert not torch.allclose(out, pos)
    assert torch.equal(augment_positions(pos), pos)  # all off: unchanged


@pytest.mark.parametrize("learnable", [False, True])
def test_augmentation_acts_in_training_only_and_never_serves_stale_tables(vit, learnable):
    """Frozen 2×2 frequencies: tables are cached even in train mode, so a stale cache would show."""
    model = vit("axial_block", "cls", block=2, learnable=learnable, augment=AUGMENT)
    plain = vit("axial_block", "cls", block=2, learnable=learnable)
    with torch.no_grad():
        evals = [model.eval()(IMAGES) for _ in range(2)]
        torch.testing.assert_close(evals[0], evals[1])  # eval: deterministic...
        torch.testing.assert_close(evals[0], plain.eval()(IMAGES))  # ...and un-augmented
        model.train()
        trains = [model(IMAGES) for _ in range(3)]
    assert not torch.allclose(trains[0], trains[1], atol=1e-4)
    assert not torch.allclose(trains[1], trains[2], atol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(IMAGES), evals[0])  # back in eval: no leftover draw


def test_relative_property_survives_shift_augmentation(vit):
    """Shift augmentation is a translation of all positions: a model that is relative end to end
    (avg pool) gives the same logits in training as in eval; a class token model does not."""
    for pool, invariant in (("avg", True), ("cls", False)):
        model = vit("axial_block", pool, block=4, augment={"shift": 3.0})
        with torch.no_grad():
            ref = model.eval()(IMAGES)
            out = model.train()(IMAGES)  # drop rates are 0 in TINY: only the positions differ
        assert torch.allclose(out, ref, atol=1e-5) == invariant


def test_bad_pool_and_conflicting_timm_kwargs_are_rejected(tiny_vit, vit):
    with pytest.raises(ValueError, match="pool='mean' is not allowed; allowed values: cls, avg"):
        tiny_vit("axial2_complex", pool="mean")
    with pytest.raises(ValueError, match="class_token=True contradicts pool='avg'"):
        tiny_vit("none", pool="avg", vit_kwargs={"class_token": True})
    with pytest.raises(ValueError, match="augment.jitter=0.5 is not allowed"):
        vit("axial_block", block=3, augment={"jitter": 0.5})


# -- per run ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_run_records_shift_error_test_acc_shifted_and_the_resolved_options(tmp_path):
    args = [
        *TINY_RUN,
        "pe.block=4",
        "pe.coords=normalized",
        "pe.augment.shift=0.5",
        "model.pool=avg",
        "run_id=rel",
    ]
    proc = run_train(args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((tmp_path / "outputs" / "rel" / "metrics.json").read_text())
    assert m["shift_error"] < 1e-5 and 0 <= m["test_acc_shifted"] <= 100
    assert m["test_acc_shifted"] == pytest.approx(m["test_acc"], abs=1e-9)  # relative end to end
    assert m["pe"]["coords"] == "normalized" and m["pe"]["augment"] == {
        "shift": 0.5,
        "jitter": 0,
        "rescale": 0,
    }
    assert m["pe"]["block"] == 4 and m["pe"]["layout_of"] is None
    proc = run_train([*TINY_RUN, "pe.block=4", "run_id=cls"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((tmp_path / "outputs" / "cls" / "metrics.json").read_text())
    assert m["shift_error"] > 1e-4 and m["pe"]["coords"] == "patch"
