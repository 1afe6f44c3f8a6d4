"""The config check answers before the heavy imports: a refused command, ``--help`` and ``rope_ext.jobs``
import no torch, timm or wandb (read from ``python -X importtime``); the registries still hand out the real
layer classes, imported on first use."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from harness_helpers import REPO, TRAIN, env

import rope_ext
from rope_ext.config.arch import _registered_in_sources, is_timm_model
from rope_ext.encoding import registry, spec
from rope_ext.encoding.registry import Accepts, EncodingInfo

HEAVY = ("torch", "timm", "wandb", "torchvision")


def imported(args: list[str]) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run ``python -X importtime <args>`` from the repository; the top-level modules it imported."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *args],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=REPO,
        env=env(),
    )
    names = re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s+([\w.]+)$", done.stderr, re.MULTILINE)
    return done, {name.split(".")[0] for name in names}


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, code, says",
    [
        ([TRAIN, "pe.blok=3"], 2, "unknown key pe.blok=3 (did you mean pe.block?)"),
        ([TRAIN, "pe=axial_block", "pe.block=1"], 2, "pe.block"),
        ([TRAIN, "--help"], 0, "== rope-ext train.py =="),
        (["-m", "rope_ext.jobs", "pe.block=2,3"], 0, "2 jobs"),
        (
            ["-m", "rope_ext.jobs", "--check", "pe=axial_block", "pe.block=2,3"],
            0,
            "#1 pe=axial_block pe.block=3",
        ),
    ],
)
def test_the_check_imports_no_torch_timm_or_wandb(args, code, says):
    done, modules = imported(args)
    assert done.returncode == code, done.stdout + done.stderr[-3000:]
    assert says in done.stdout + done.stderr
    assert not modules & set(HEAVY)
    assert "rope_ext" in modules  # the parse read the importtime lines


def test_builtin_layers_are_named_and_imported_on_first_read():
    from rope_ext.encoding.encodings.axial_block import BlockRotary
    from rope_ext.encoding.encodings.lie_block import LieBlockRotary

    refs = {info.name: info.layer_ref for info in registry.infos()}
    assert refs["none"] is None
    assert refs["axial_block"] == "rope_ext.encoding.encodings.axial_block:BlockRotary"
    for name in ("axial2_matrix", "axial2_complex", "axial_block"):
        assert registry.get(name).layer is BlockRotary
    assert registry.get("lie_block").layer is LieBlockRotary
    layer = spec.make_rope("axial_block", head_dim=12, num_heads=2, block=3)
    assert type(layer) is BlockRotary and layer.block == 3


@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch):
    registry.names()
    monkeypatch.setattr(registry, "_infos", dict(registry._infos))
    return registry


def _info(name: str, layer: object) -> EncodingInfo:
    accepts = Accepts(block=2, impls=("fast",), mixed=False, layout_of=False, learnable_false=True)
    return EncodingInfo(name=name, layer=layer, summary="x", accepts=accepts)


def test_a_user_encoding_may_name_its_layer_too(isolated):
    info = registry.register(_info("by_reference", "rope_ext.encoding.encodings.axial_block:BlockRotary"))
    assert info.layer_ref == "rope_ext.encoding.encodings.axial_block:BlockRotary"
    assert type(spec.make_rope("by_reference", head_dim=8, num_heads=1)).__name__ == "BlockRotary"
    with pytest.raises(
        ValueError, match="EncodingInfo.layer='BlockRotary' is not allowed.*'package.module:Class'"
    ):
        registry.register(_info("no_module", "BlockRotary"))
    registry.register(_info("not_a_class", "rope_ext.encoding.spec:is_int"))
    with pytest.raises(TypeError, match="names a function, not a class"):
        registry.get("not_a_class").layer  # noqa: B018
    with pytest.raises(ModuleNotFoundError):
        registry.register(_info("no_such_module", "rope_ext.no_such_module:Layer")).layer  # noqa: B018


def test_the_package_names_are_lazy_and_listed():
    assert set(rope_ext.__all__) <= set(dir(rope_ext))
    assert rope_ext.create_vit.__module__ == "rope_ext.encoding.vit"
    assert rope_ext.EncodingInfo is EncodingInfo
    import rope_ext.encoding as encoding

    assert set(encoding.__all__) <= set(dir(encoding)) and encoding.validate_pe is spec.validate_pe
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        rope_ext.nope  # noqa: B018
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        encoding.nope  # noqa: B018


def test_values_written_out_for_a_torch_free_check_match_their_source():
    from rope_ext import relpos
    from rope_ext.data import registry as datasets
    from rope_ext.encoding import vit

    assert datasets.get("relpos").num_classes == relpos.NUM_CLASSES
    assert (spec.POOLS, spec.POS_EMBEDS) == (vit.POOLS, vit.POS_EMBEDS)


def test_timm_names_from_its_sources_are_timm_s():
    import timm

    for name in timm.list_models("vit_*"):
        assert _registered_in_sources(name), name
    assert not _registered_in_sources("vit_tiny_patch16_2244")
    for name in ("vit_tiny_patch16_224", "vit_small_patch16_224.augreg_in21k", "resnet18", "vit_nope", "a.b"):
        assert is_timm_model(name) == timm.is_model(name), name
