"""A train.py command at Hydra's edges: configuration is data, one rule for where files go, no link or
unwritable disk found only after Hydra wrote, values that mean what they say, bounded sweeps. Each case
is checked in-process with ``check_command`` (nothing is written), one through train.py itself."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rope_ext.config import ConfigError, check_command
from rope_ext.config.sweep import MAX_JOBS, check_jobs, hydra_overrides, list_jobs
from rope_ext.safety import RunDirUnwritable

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # outputs/ and multirun/ are relative to the working directory


def refused(argv: list[str], *words: str) -> str:
    with pytest.raises(ConfigError) as err:
        check_command(argv)
    for word in words:
        assert word in str(err.value), str(err.value)
    assert not Path("outputs").exists() and not Path("multirun").exists()
    return str(err.value)


# configuration is data ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        [
            "+hydra.callbacks.e._target_=builtins.open",
            "+hydra.callbacks.e.file=victim",
            "+hydra.callbacks.e.mode=w",
        ],
        ["+hydra.callbacks.e._target_=torch.load", "+hydra.callbacks.e.f=evil.pt"],
        ["hydra.launcher._target_=builtins.exec"],
        ["hydra.sweeper._target_=builtins.exec"],
    ],
)
def test_a_foreign_target_is_refused(argv: list[str]) -> None:
    refused(argv, "_target_", "allowed: hydra._internal")
    assert not Path("victim").exists()


def test_experimental_rerun_is_refused() -> None:
    refused(["--experimental-rerun", "evil.pkl"], "--experimental-rerun", "unpickles")


def _preset_dir(tmp_path: Path, text: str) -> Path:
    presets = tmp_path / "presets"
    (presets / "experiment").mkdir(parents=True)
    (presets / "experiment" / "mine.yaml").write_text("# @package _global_\n" + text)
    return presets


def test_config_dir_presets_are_checked_completely(tmp_path: Path) -> None:
    evil = "hydra:\n  callbacks:\n    e:\n      _target_: builtins.open\n      file: victim\n      mode: w\n"
    presets = _preset_dir(tmp_path, evil)
    refused(["--config-dir", str(presets), "experiment=mine"], "hydra.callbacks.e._target_")
    refused(["--config-dir", str(presets), "train.epochs=0"], "train.epochs")
    good = _preset_dir(tmp_path / "good", "train:\n  epochs: 1\n")
    check_command(["--config-dir", str(good), "experiment=mine"])


def test_a_searchpath_is_composed_and_checked(tmp_path: Path) -> None:
    presets = _preset_dir(
        tmp_path, "hydra:\n  callbacks:\n    e:\n      _target_: os.remove\n      path: x\n"
    )
    refused([f"hydra.searchpath=[file://{presets}]", "experiment=mine"], "os.remove")


@pytest.mark.parametrize(
    "argv, key",
    [
        (["+hydra.job_logging.handlers.file.()=builtins.exec"], "()"),
        (["hydra.job_logging.handlers.console.stream=ext://evil.stream"], "stream"),
        (["+hydra.job.env_set.LD_PRELOAD=/tmp/x.so"], "hydra.job.env_set.LD_PRELOAD"),
    ],
)
def test_logging_factories_and_environment_are_refused(argv: list[str], key: str) -> None:
    refused(argv, key)


# one rule for where files go ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, key",
    [
        (["hydra.run.dir=/tmp/escape"], "hydra.run.dir"),
        (["hydra.run.dir=outputs/../../escape"], "hydra.run.dir"),
        (["hydra.run.dir=elsewhere/x"], "hydra.run.dir"),
        (["-m", "hydra.sweep.dir=/tmp/escape", "seed=0,1"], "hydra.sweep.dir"),
        (["-m", "hydra.sweep.dir=../..", "seed=0,1"], "hydra.sweep.dir"),
        (["-m", "hydra.sweep.subdir=../../x", "seed=0,1"], "hydra.sweep.subdir"),
        (["hydra.output_subdir=/tmp/escape"], "hydra.output_subdir"),
        (["hydra.output_subdir=../../.."], "hydra.output_subdir"),
        (["hydra.job.name=../../../../x"], "hydra.job.name"),
        (["hydra.job_logging.handlers.file.filename=/tmp/escape.log"], "filename"),
        (["hydra.mode=MULTIRUN", "hydra.sweep.dir=/tmp/escape"], "hydra.sweep.dir"),
        (["run_id=" + "a" * 300], "at most 255"),
    ],
)
def test_every_path_key_stays_below_outputs_or_multirun(argv: list[str], key: str) -> None:
    refused(argv, key)


def test_jobs_check_refuses_an_escaping_subdir() -> None:
    overrides = ["hydra.sweep.subdir=../../x", "seed=0,1"]
    problems = check_jobs(list_jobs(overrides), own=hydra_overrides(overrides))
    assert all(p and "hydra.sweep.subdir" in p for p in problems)


# before Hydra writes: links, files in the way, a disk that cannot be written ----------------------------


@pytest.mark.parametrize(
    "planted",
    [
        "outputs/r",
        "outputs/r/.hydra",
        "outputs/r/.hydra/config.yaml",
        "outputs/r/.hydra/overrides.yaml",
        "outputs/r/train.log",
    ],
)
def test_a_planted_link_is_refused_naming_it(tmp_path: Path, planted: str) -> None:
    victim = tmp_path / "victim"
    victim.mkdir() if planted.endswith(("r", ".hydra")) else victim.write_text("keep")
    Path(planted).parent.mkdir(parents=True, exist_ok=True)
    Path(planted).symlink_to(victim)
    with pytest.raises(ConfigError, match="symbolic link") as err:
        check_command(["run_id=r"])
    assert planted in str(err.value)


@pytest.mark.parametrize("planted", ["multirun/s/multirun.yaml", "multirun/s/seed=1/train.log"])
def test_a_planted_link_in_a_sweep_is_refused_naming_it(tmp_path: Path, planted: str) -> None:
    (tmp_path / "victim").write_text("keep")
    Path(planted).parent.mkdir(parents=True)
    Path(planted).symlink_to(tmp_path / "victim")
    with pytest.raises(ConfigError, match="symbolic link") as err:
        check_command(["-m", "hydra.sweep.dir=multirun/s", "seed=0,1"])
    assert planted in str(err.value)


def test_a_file_where_the_run_directory_goes_is_refused() -> None:
    Path("outputs").mkdir()
    Path("outputs/r").write_text("not a directory")
    with pytest.raises(ConfigError, match="not a directory"):
        check_command(["run_id=r"])


@pytest.mark.parametrize("code", ["ENOSPC", "EROFS", "EACCES"])
def test_a_full_or_read_only_disk_is_exit_4(monkeypatch: pytest.MonkeyPatch, code: str) -> None:
    """The probe's write fails as the kernel's would (a full disk cannot be made here, and root writes
    to read-only directories): the refusal is exit 4 with the system's reason."""
    import errno

    real_write, number = os.write, getattr(errno, code)

    def failing(fd: int, data: bytes) -> int:
        if os.readlink(f"/proc/self/fd/{fd}").rpartition("/")[2].startswith(".rope_ext-probe"):
            raise OSError(number, os.strerror(number))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", failing)
    with pytest.raises(RunDirUnwritable, match=os.strerror(number)) as err:
        check_command(["run_id=r"])
    assert err.value.exit_code == 4 and "cannot be written" in str(err.value)
    assert not list(Path().iterdir())  # the probe file is gone


# values mean what they say -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv", [["run_id=${now:%H}"], ["wandb.project=${oc.env:HOME}"], ["run_id=a${oc.select:pe.block}"]]
)
def test_resolvers_in_values_are_refused(argv: list[str]) -> None:
    refused(argv, "without resolvers", "reads the clock or the environment")


def test_a_reference_to_the_config_is_allowed() -> None:
    check_command(["run_id=blk${pe.block}"])


def test_a_repeated_key_is_refused_naming_both() -> None:
    refused(["train.epochs=1", "train.epochs=2"], "train.epochs=1", "train.epochs=2")


# sweeps are bounded ------------------------------------------------------------------------------------


def test_a_huge_sweep_is_refused_before_any_job_is_composed() -> None:
    start = time.monotonic()
    text = refused(["-m", "seed=range(0,10000)"], f"at most {MAX_JOBS} jobs", "10000")
    assert time.monotonic() - start < 5, text
    refused(["-m", "seed=range(0,64)", "train.epochs=range(1,65)", "train.lr=0.1,0.2"], "8192")


@pytest.mark.slow
def test_train_py_refuses_before_hydra_writes(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        str(ROOT / "train.py"),
        "+hydra.callbacks.e._target_=builtins.open",
        "+hydra.callbacks.e.file=victim",
        "+hydra.callbacks.e.mode=w",
    ]
    Path("victim").write_text("keep")
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "builtins.open" in out.stderr and Path("victim").read_text() == "keep"
    assert not Path("outputs").exists()


@pytest.mark.parametrize(
    "argv, words",
    [
        (["pe.theta=1e308"], ["pe.theta", "[1, 1e+06]"]),
        (["pe.theta=0.5"], ["pe.theta"]),
        (["dataset.input_size=4", "model.patch_size=4"], ["dataset.input_size", "at least 8 px"]),
        (["eval.input_sizes=[]"], ["eval.input_sizes", "non-empty"]),
        (["eval.input_sizes=[4]", "model.patch_size=4"], ["eval.input_sizes", "at least 8 px"]),
        (["dataset.subset=1"], ["dataset.subset", ">= 5"]),
    ],
)
def test_degenerate_values_are_refused_with_the_allowed_range(argv: list[str], words: list[str]) -> None:
    refused(argv, *words)


def test_a_file_that_is_no_checkpoint_is_refused_before_writing(tmp_path: Path) -> None:
    text = tmp_path / "passwd"
    text.write_text("root:x:0:0:root:/root:/bin/bash\n")
    refused([f"model.checkpoint={text}"], "model.checkpoint", "torch checkpoint")
    os.mkfifo(tmp_path / "fifo.pth")  # never opened: no hang
    refused([f"model.checkpoint={tmp_path / 'fifo.pth'}"], "model.checkpoint")


# refuse before writing: the files the command names ----------------------------------------------------


def _cifar(root: Path, classes: int = 10) -> None:
    import pickle

    import numpy as np

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": np.zeros((10, 3072), dtype=np.uint8), "labels": list(range(10))}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(classes)]}))


def test_cifar_files_are_checked_before_writing(tmp_path: Path) -> None:
    good, bad = tmp_path / "good", tmp_path / "bad"
    _cifar(good)
    _cifar(bad, classes=3)
    check_command(["dataset=cifar10", f"dataset.root={good}", "dataset.download=false"])
    refused(["dataset=cifar10", f"dataset.root={bad}", "dataset.download=false"], "3 class names")
    (good / "cifar-10-batches-py" / "test_batch").write_bytes(b"\x80\x02garbage")
    refused(["dataset=cifar10", f"dataset.root={good}", "dataset.download=false"], "test_batch")
    refused(["dataset=cifar10", f"dataset.root={tmp_path / 'none'}", "dataset.download=false"], "missing")


def test_an_image_folder_is_checked_before_writing(tmp_path: Path) -> None:
    root = tmp_path / "images"
    (root / "train" / "a").mkdir(parents=True)  # no val/ split
    refused(["dataset=imagefolder", f"dataset.root={root}", "dataset.in_memory=false"], "imagefolder")


def test_the_cifar_file_lists_are_torchvisions() -> None:
    import torchvision.datasets as tv

    from rope_ext.data.cifar import _FILES

    for name, cls in (("cifar10", tv.CIFAR10), ("cifar100", tv.CIFAR100)):
        assert _FILES[name] == (
            [f for f, _ in cls.train_list + cls.test_list],
            (cls.meta["filename"], cls.meta["key"]),
        )


def test_every_target_the_project_ships_is_allowed() -> None:
    """The allow-list names every ``_target_`` in conf/ (a new callback of the project's own that is not
    on it would be refused at every command that composes it)."""
    from rope_ext.config.hydra_node import ALLOWED_TARGETS

    shipped = {
        line.split("_target_:", 1)[1].strip()
        for path in (ROOT / "conf").rglob("*.yaml")
        for line in path.read_text().splitlines()
        if "_target_:" in line and not line.lstrip().startswith("#")
    }
    assert shipped and shipped <= ALLOWED_TARGETS, shipped - ALLOWED_TARGETS
