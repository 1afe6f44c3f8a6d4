"""The fine-tune path of study/digits_finetune and original/finetune_*: a run's own checkpoint.pt given
to another run as ``model.checkpoint`` (the path a user gives timm weights offline), RoPE added to the
pretrained APE, and the identity start (``pe.init=identity``) that leaves the pretrained function unchanged.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from harness_helpers import TINY, metrics, output, run_train

import rope_ext
from rope_ext.encoding import registry

SHAPE = dict(patch_size=4, embed_dim=24, depth=1, num_heads=2)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pretrained model: a plain ViT with APE trained one epoch at 32 px; its run's checkpoint.pt."""
    cwd = tmp_path_factory.mktemp("finetune")
    done = run_train([*TINY, "pe=none", "model.pos_embed=learn", "hydra.run.dir=outputs/source"], cwd)
    assert done.returncode == 0, output(done)
    return cwd / "outputs" / "source" / "checkpoint.pt"


def test_a_run_fine_tunes_another_runs_checkpoint_and_its_record_names_the_weights(source: Path) -> None:
    """RoPE + APE at another input size (the 8x8 APE resampled to 4x4 by timm's filter); the record's
    provenance names the starting weights by their SHA-256."""
    cwd = source.parents[2]
    args = [*TINY, "pe=axial_block", "pe.block=3", "pe.init=identity", "model.pos_embed=learn"]
    args += ["dataset.input_size=16", f"model.checkpoint={source}", "hydra.run.dir=outputs/target"]
    done = run_train(args, cwd)
    assert done.returncode == 0, output(done)
    record = metrics(cwd / "outputs" / "target")
    assert record["status"] == "ok" and record["pe"]["init"] == "identity"
    weights = record["provenance"]["weights"]
    assert weights["path"] == str(source)
    assert weights["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()


IDENTITY = [info.name for info in registry.infos() if info.rotary]


@pytest.mark.parametrize("name", IDENTITY)
def test_the_identity_start_leaves_the_pretrained_function_unchanged(source: Path, name: str) -> None:
    """At step 0 a rotary encoding with init=identity (R = I) added to the pretrained APE model computes
    what the pretrained model computes, for every encoding that accepts it; the axial start does not."""
    torch.manual_seed(0)
    images = torch.randn(3, 3, 32, 32)
    kw = dict(num_classes=10, img_size=32, checkpoint=source, pos_embed="learn", **SHAPE)
    plain = rope_ext.create_vit("vit_tiny_patch16_224", pe="none", **kw).eval()
    rotary = rope_ext.create_vit("vit_tiny_patch16_224", pe=name, pe_options={"init": "identity"}, **kw)
    axial = rope_ext.create_vit("vit_tiny_patch16_224", pe=name, pe_options={"init": "axial"}, **kw)
    with torch.no_grad():
        expected = plain.forward_features(images)
        same = (rotary.eval().forward_features(images) - expected).abs().max().item()
        moved = (axial.eval().forward_features(images) - expected).abs().max().item()
    assert same < 1e-5 and moved > 100 * max(same, 1e-7), (same, moved)
