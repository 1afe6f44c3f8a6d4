"""dataset=imagefolder (your own images, timm's pipeline), the recipes, and the ImageNet-1k preset.

The folder is generated: scikit-learn's digits 0-2 written as PNG files in the ImageNet layout.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from harness_helpers import REPO, compose_job, env, output, run_train
from omegaconf import OmegaConf

from rope_ext import recipe
from rope_ext.config import ConfigError, check_keys, check_values
from rope_ext.imagefolder import Transformed, check_root, train_transform

TINY_IMG = [
    "hardware=cpu",
    "hardware.threads=1",
    "dataset=imagefolder",
    "dataset.input_size=16",
    "model.depth=1",
    "model.embed_dim=24",
    "model.num_heads=2",
    "train.epochs=2",
    "train.batch_size=8",
    "train.warmup_epochs=1",
    "eval.batch_size=32",
    "eval.bench_seconds=0.02",
]


def write_digits_folder(root: Path, classes: int = 3, train: int = 12, val: int = 4) -> Path:
    """``root/{train,val}/digit<c>/<i>.png``: the first digits of each class as 8x8 RGB PNG files."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for c in range(classes):
        idx = np.flatnonzero(digits.target == c)
        for split, picks in (("train", idx[:train]), ("val", idx[train : train + val])):
            folder = root / split / f"digit{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in picks:
                pixels = (digits.images[i] * 255 / 16).astype(np.uint8)
                Image.fromarray(pixels).convert("RGB").save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_digits_folder(tmp_path_factory.mktemp("digits_folder"))


def test_folder_checks_name_the_folder(tmp_path, digits_folder):
    assert check_root(digits_folder) == ["digit0", "digit1", "digit2"]
    with pytest.raises(ConfigError, match=f"{tmp_path / 'nothing'} is not a folder"):
        check_root(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=f"{tmp_path / 'empty' / 'train'} is missing"):
        check_root(tmp_path / "empty")
    bad = write_digits_folder(tmp_path / "bad", classes=2, train=2, val=1)
    (bad / "train" / "digit1" / "notes.txt").write_text("x")
    for png in (bad / "train" / "digit1").glob("*.png"):
        png.unlink()
    with pytest.raises(ConfigError, match=r"class folder\(s\) \['digit1'\] of .*train hold no images"):
        check_root(bad)
    other = write_digits_folder(tmp_path / "other", classes=2, train=2, val=1)
    (other / "val" / "digit1").rename(other / "val" / "digit9")
    with pytest.raises(ConfigError, match=r"only in train: \['digit1'\], only in val: \['digit9'\]"):
        check_root(other)


@pytest.mark.slow
def test_malformed_folder_exits_2_before_any_work(tmp_path):
    (tmp_path / "imgs" / "train").mkdir(parents=True)
    proc = run_train([*TINY_IMG, f"dataset.root={tmp_path / 'imgs'}", "run_id=bad"], tmp_path)
    assert proc.returncode == 2, output(proc)
    assert f"{tmp_path / 'imgs' / 'train'} has no class folders" in output(proc)
    assert not (tmp_path / "outputs" / "bad" / "checkpoint.pt").exists()


def test_per_image_augmentation_is_a_function_of_seed_epoch_index(digits_folder):
    """The random transform of image i in epoch e is the same in any process and leaves the caller's
    generators alone (what makes a mid-epoch resume exact with workers)."""
    from timm.data import create_dataset

    cfg = OmegaConf.create(
        {"input_size": 16, "mean": [0.5] * 3, "std": [0.5] * 3, "augment": {"hflip": True}}
    )
    deit = OmegaConf.create({"auto_augment": "rand-m9-mstd0.5-inc1", "re_prob": 0.25})
    base = create_dataset("", root=str(digits_folder), split="train")
    data = Transformed(base, train_transform(cfg, deit))
    before = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state())
    data.set_epoch(3, seed=0)
    a = torch.stack([data[i][0] for i in range(8)])
    assert torch.equal(a, torch.stack([data[i][0] for i in range(8)]))
    data.set_epoch(4, seed=0)
    assert not torch.equal(a, torch.stack([data[i][0] for i in range(8)]))
    data.set_epoch(3, seed=1)
    assert not torch.equal(a, torch.stack([data[i][0] for i in range(8)]))
    assert random.getstate() == before[0] and np.array_equal(np.random.get_state()[1], before[1])
    assert torch.equal(torch.get_rng_state(), before[2])


@pytest.mark.slow
def test_deit_recipe_is_the_same_run_with_or_without_workers(tmp_path, digits_folder):
    """recipe=deit (RandAugment, random erasing, Mixup/CutMix) trains; 2 DataLoader workers give the
    very weights of 0 workers: the per-image draws do not depend on the process that makes them."""
    weights = []
    for workers in (0, 2):
        run_id = f"deit_w{workers}"
        proc = run_train(
            [*TINY_IMG, f"dataset.root={digits_folder}", "recipe=deit", f"dataset.num_workers={workers}"]
            + [f"run_id={run_id}"],
            tmp_path,
        )
        assert proc.returncode == 0, output(proc)
        run = tmp_path / "outputs" / run_id
        weights.append(torch.load(run / "checkpoint.pt", weights_only=False)["model"])
        record = json.loads((run / "checkpoint.json").read_text())["config"]
        assert record["recipe"]["name"] == "deit" and record["train"]["epochs"] == 2
        assert record["train"]["lr"] == pytest.approx(5e-4 * 8 / 512)  # DeiT's linear scaling
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


@pytest.mark.slow
def test_sweep_and_report(tmp_path, digits_folder):
    """Two jobs train and evaluate on the folder through the app (-m), then rope_ext.report reads them."""
    proc = run_train(
        ["-m", *TINY_IMG, f"dataset.root={digits_folder}", "pe.block=2,3", "hydra.sweep.dir=multirun/sw"],
        tmp_path,
    )
    assert proc.returncode == 0, output(proc)
    for block in (2, 3):
        metrics = json.loads(
            (tmp_path / "multirun" / "sw" / f"pe.block={block}" / "metrics.json").read_text()
        )
        assert (
            metrics["status"] == "ok" and metrics["dataset"] == "imagefolder" and metrics["epochs_done"] == 2
        )
        # validation is held out of train/ (36 images, val_fraction 0.1); the test split is val/ (12 images)
        assert metrics["val_acc"] is not None
        correct = metrics["test_acc"] * 12 / 100
        assert abs(correct - round(correct)) < 1e-6
    rep = subprocess.run(
        [sys.executable, "-m", "rope_ext.report", str(tmp_path / "multirun" / "sw")],
        cwd=tmp_path,
        env=env(PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
    )
    assert rep.returncode == 0, output(rep)
    import csv

    with open(tmp_path / "multirun" / "sw" / "report.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["run_dir"] for r in rows) == ["pe.block=2", "pe.block=3"]
    assert {(r["dataset"], r["status"]) for r in rows} == {("imagefolder", "ok")}
    assert (tmp_path / "multirun" / "sw" / "report.md").is_file()


def test_recipes_compose_and_check():
    basic, _ = compose_job([])
    assert basic.recipe.name == "basic" and not recipe.mixing(basic)
    deit, _ = compose_job(["recipe=deit", "dataset=imagefolder", "dataset.root=/x", "train.batch_size=128"])
    assert (deit.recipe.auto_augment, deit.recipe.re_prob) == ("rand-m9-mstd0.5-inc1", 0.25)
    assert (deit.recipe.mixup, deit.recipe.cutmix, deit.train.label_smoothing) == (0.8, 1.0, 0.1)
    assert (deit.train.epochs, deit.train.warmup_epochs, deit.optimizer.name) == (300, 5, "adamw")
    assert deit.optimizer.weight_decay == 0.05
    assert recipe.peak_lr(deit, world_size=8) == pytest.approx(5e-4 * 1024 / 512)
    recipe.check(deit)
    with pytest.raises(ConfigError, match="dataset=digits add recipe.auto_augment=null recipe.re_prob=0"):
        recipe.check(compose_job(["recipe=deit"])[0])
    mixing_only, _ = compose_job(["recipe=deit", "recipe.auto_augment=null", "recipe.re_prob=0"])
    recipe.check(mixing_only)  # Mixup/CutMix on the in-memory digits
    typo, _ = compose_job(["recipe=deit", "+recipe.mixpu=0.5"])
    with pytest.raises(ConfigError, match=r"recipe.mixpu"):
        check_keys(typo)
    for bad in ("recipe.mixup=-1", "recipe.re_prob=1.5", "recipe.re_mode=zebra", "recipe.lr_batch=0"):
        with pytest.raises(ConfigError, match=bad.split("=")[0]):
            check_values(compose_job(["recipe=deit", bad])[0])
    with pytest.raises(ConfigError, match="train.batch_size=7"):
        recipe.check(compose_job(["recipe=deit", "dataset=imagefolder", "train.batch_size=7"])[0])


def test_imagenet_preset_lists_its_jobs():
    """The ImageNet-1k preset: ViT-S/16 and ViT-B/16 x APE, RoPE-Axial, RoPE-Mixed, one 8-GPU SLURM job each."""
    args = ["experiment=paper/heo2024_imagenet1k", "dataset.root=/data/imagenet"]
    proc = subprocess.run(
        [sys.executable, "-m", "rope_ext.jobs", *args],
        cwd=REPO,
        env=env(PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, output(proc)
    assert "6 jobs" in proc.stdout, proc.stdout
    for model in ("vit_s16", "vit_b16"):
        for arm in ("none", "axial2_complex", "axial_block_n2_mixed"):
            assert f"model={model} +experiment/arm={arm}" in proc.stdout, proc.stdout
    job, full = compose_job([*args, "model=vit_b16", "+experiment/arm=axial_block_n2_mixed"])
    assert (job.dataset.name, job.recipe.name, job.model.arch) == (
        "imagefolder",
        "deit",
        "vit_base_patch16_224",
    )
    assert (job.pe.name, job.pe.block, job.pe.mixed) == ("axial_block", 2, True)
    assert (job.hardware.devices, job.hardware.nodes, job.hardware.accelerator) == (8, 1, "gpu")
    assert full.hydra.launcher._target_.endswith("SlurmLauncher")
    assert recipe.peak_lr(job, world_size=8) == pytest.approx(1e-3)  # global batch 1024
    ape, _ = compose_job([*args, "model=vit_s16", "+experiment/arm=none"])
    assert (ape.pe.name, ape.model.pos_embed) == ("none", "learn")
