"""What a job says once at start-up when its settings cannot do what they say: a recipe's schedule
(``rope_ext.recipe.schedule_warnings``), a SLURM memory request below the measured peak
(``rope_ext.launch.memory_warning``), and the training images each epoch leaves out (``rope_ext.loader``)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from harness_helpers import compose_job
from omegaconf import OmegaConf
from test_imagefolder import write_digits_folder

from rope_ext import launch, recipe
from rope_ext.data import build_datasets
from rope_ext.loader import Batches, BatchTransform


def test_deit_with_fewer_epochs_than_its_warm_up_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    cfg = compose_job(["recipe=deit", "train.epochs=2", "train.batch_size=512"])[0]
    with caplog.at_level(logging.WARNING, logger="rope_ext.recipe"):
        assert recipe.peak_lr(cfg, world_size=1) == pytest.approx(5e-4)  # global batch 512: as the recipe
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1, warnings
    assert "train.epochs=2" in warnings[0] and "train.warmup_epochs=5" in warnings[0]
    assert "the whole run is warm-up" in warnings[0]
    caplog.clear()
    recipe.peak_lr(compose_job(["recipe=deit", "train.epochs=6", "train.batch_size=512"])[0], world_size=1)
    assert not caplog.records  # a run longer than its warm-up has its cosine decay


def test_deit_at_a_small_batch_names_the_scaled_lr(caplog: pytest.LogCaptureFixture) -> None:
    cfg = compose_job(["recipe=deit", "train.batch_size=64"])[0]  # 300 epochs: no warm-up warning
    with caplog.at_level(logging.WARNING, logger="rope_ext.recipe"):
        peak = recipe.peak_lr(cfg, world_size=1)
    assert peak == pytest.approx(6.25e-5)  # 5e-4 x 64 / 512
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "recipe.lr_batch=512" in warning and "train.lr=0.0005" in warning and "6.25e-05" in warning
    assert "global batch 64" in warning and "recipe.lr_batch=64" in warning  # how to train at the recipe's lr
    caplog.clear()
    # four processes of 64 (global 256): half the recipe's lr, within the rule; rank > 0 says nothing
    assert recipe.schedule_warnings(cfg, 4, recipe.peak_lr(cfg, 4, warn=False)) == []
    recipe.peak_lr(cfg, world_size=1, warn=False)
    assert not caplog.records


def test_basic_recipe_without_batch_scaling_has_no_lr_warning() -> None:
    cfg = compose_job(["train.batch_size=8"])[0]
    assert recipe.schedule_warnings(cfg, 1, recipe.peak_lr(cfg, 1, warn=False)) == []


def slurm(*overrides: str):
    return compose_job(["launcher=slurm", "hardware=cpu", *overrides])[1]


def test_slurm_memory_below_the_measured_peak_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    cfg = slurm("launcher.mem_gb=1", "dataset=relpos")
    assert launch.estimated_peak_mb(cfg) == launch.CPU_PEAK_MB["relpos"]
    with caplog.at_level(logging.WARNING, logger="rope_ext.launch"):
        launch.SlurmMemory().on_multirun_start(cfg)
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "launcher.mem_gb=1" in warning and "1,290 MB" in warning and "launcher.mem_gb=2" in warning
    # two processes per node need twice the memory
    two = slurm("launcher.mem_gb=2", "hardware.devices=2")
    assert launch.estimated_peak_mb(two) == 2 * launch.CPU_PEAK_MB["digits"]
    assert "launcher.mem_gb=2" in launch.memory_warning(two) and "launcher.mem_gb=4" in launch.memory_warning(
        two
    )


@pytest.mark.parametrize(
    "overrides",
    [
        ["launcher.mem_gb=2"],  # the recipe's request: above the estimate
        ["launcher.mem_gb=1", "dataset=cifar10"],  # not measured: no estimate, no check
        ["launcher.mem_gb=1", "model.embed_dim=384", "model.num_heads=6"],  # larger than the measured runs
        ["launcher.mem_gb=1", "train.batch_size=256"],
    ],
)
def test_slurm_memory_without_a_problem_or_an_estimate_says_nothing(overrides: list[str]) -> None:
    assert launch.memory_warning(slurm(*overrides)) is None


def test_memory_check_is_for_cpu_slurm_jobs_only() -> None:
    gpu = compose_job(["launcher=slurm", "hardware=gpu", "launcher.mem_gb=1"])[1]
    assert launch.estimated_peak_mb(gpu) is None and launch.memory_warning(gpu) is None
    local = compose_job(["hardware=cpu"])[1]
    assert launch.memory_warning(local) is None
    assert "slurm_memory" in slurm().hydra.callbacks  # conf/launcher/slurm.yaml installs the check


def folder_batches(root: Path, batch_size: int, rank: int = 0, world_size: int = 1) -> Batches:
    dataset = compose_job(
        ["dataset=imagefolder", f"dataset.root={root}", "dataset.val_fraction=0", "dataset.input_size=8"]
    )[0].dataset
    train = build_datasets(dataset).train
    tf = BatchTransform(8, OmegaConf.to_object(dataset.mean), OmegaConf.to_object(dataset.std), train=False)
    return Batches(
        train,
        batch_size=batch_size,
        device=torch.device("cpu"),
        transform=tf,
        train=True,
        rank=rank,
        world_size=world_size,
        in_memory=False,
    )


def test_an_image_folder_not_a_multiple_of_the_batch_says_how_many_images_are_left_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = write_digits_folder(tmp_path / "folder", classes=3, train=7, val=1)  # 21 training images
    with caplog.at_level(logging.INFO, logger="rope_ext.loader"):
        batches = folder_batches(root, batch_size=8)
    (record,) = caplog.records
    assert record.levelno == logging.WARNING  # 5 of 21: a warning
    assert "21 images" in record.getMessage() and "leaves out 5" in record.getMessage()
    assert batches.num_batches == 2 and batches.left_out == 5
    seen = []
    for epoch in range(2):
        batches.set_epoch(epoch)
        sizes = [len(y) for _, y in batches]
        assert sizes == [8, 8]  # full batches only
        seen.append(set(batches.indices()))
    assert seen[0] != seen[1]  # a different 5 left out each epoch
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="rope_ext.loader"):
        assert folder_batches(root, batch_size=7).left_out == 0  # 7 divides 21: every image, every epoch
        assert folder_batches(root, batch_size=8, rank=1, world_size=2).left_out == 5  # 2 x 8 of 21
    assert not caplog.records  # said by rank 0 only


def test_a_small_share_left_out_is_a_note_not_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = write_digits_folder(tmp_path / "folder", classes=3, train=14, val=1)  # 42 training images
    with caplog.at_level(logging.INFO, logger="rope_ext.loader"):
        assert folder_batches(root, batch_size=41).left_out == 1
    (record,) = caplog.records
    assert record.levelno == logging.INFO and "leaves out 1" in record.getMessage()
