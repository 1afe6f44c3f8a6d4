"""The install check: this venv's torch and torchvision pass; real mismatches get the fix in one paragraph."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision

from rope_ext import install_check
from rope_ext.install_check import Install, build_of_version, check_torchvision, diagnose

TRAIN = Path(__file__).resolve().parents[2] / "train.py"
NMS_MISSING = "RuntimeError: operator torchvision::nms does not exist"


def test_this_venv_passes_and_is_described_as_installed():
    assert check_torchvision() is None
    found = install_check.probe()
    assert found.torch_version == torch.__version__
    assert found.torch_cuda == torch.version.cuda
    assert found.torchvision_version == torchvision.__version__  # with its build suffix, read without import
    assert found.ops_error is None


@pytest.mark.parametrize(
    "version, build",
    [
        ("2.14.1+cpu", "CPU"),
        ("0.29.1+cu130", "CUDA 13.0"),
        ("2.5.1+cu124", "CUDA 12.4"),
        ("0.16.0+cu118", "CUDA 11.8"),
        ("2.9.0+rocm6.4", "ROCm 6.4"),
        ("2.14.1", None),  # PyPI's default wheel names no build
    ],
)
def test_build_of_version(version, build):
    assert build_of_version(version) == build


@pytest.mark.parametrize(
    "install, said",
    [
        # the install that half-worked: CPU index unreachable, CPU torch beside PyPI's CUDA torchvision
        (
            Install("2.14.1+cpu", None, "0.29.1", ops_error=NMS_MISSING),
            ["operator torchvision::nms does not exist"],
        ),
        (
            Install("2.14.1+cpu", None, "0.29.1+cu130", ops_error=NMS_MISSING),
            ["torch is a CPU build and torchvision a CUDA 13.0 build", "nms does not exist"],
        ),
        (
            Install("2.14.1+cu130", "13.0", "0.29.1+cpu"),
            ["torch is a CUDA 13.0 build and torchvision a CPU build"],
        ),
        (
            Install("2.14.1+cu130", "13.0", "0.29.1+cu128"),
            ["CUDA 13.0 build and torchvision a CUDA 12.8 build"],
        ),
        (Install("2.14.1", "13.0", "0.28.0", "13.0"), ["torch 2.14.1 is released with torchvision 0.29.x"]),
        (Install("2.14.1+cu130", "13.0", None), ["torchvision is not installed"]),
    ],
)
def test_a_mismatch_gets_the_fix(install, said):
    message = diagnose(install)
    assert message is not None
    for part in said:
        assert part in message
    assert "fresh virtual environment" in message and "pip uninstall -y torch torchvision" in message
    assert "ONE index" in message and "python -m rope_ext.install_check" in message
    assert "\n" not in message  # one paragraph


@pytest.mark.parametrize(
    "install",
    [
        Install("2.14.1+cpu", None, "0.29.1+cpu"),
        Install("2.14.1+cu130", "13.0", "0.29.1+cu130", "13.0"),
        Install("2.14.1", "13.0", "0.29.1", "13.0"),  # both from PyPI: no suffixes, the ops say CUDA 13.0
        Install("2.5.1+cu124", "12.4", "0.20.1+cu124", "12.4"),
        Install("2.9.0+rocm6.4", None, "0.24.0+rocm6.4"),
    ],
)
def test_matching_builds_pass(install):
    assert diagnose(install) is None


def _run(args: list[str], env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=240, env=env, cwd=cwd
    )


@pytest.mark.slow
def test_cli_passes_here():
    done = _run(["-m", "rope_ext.install_check"], dict(os.environ))
    assert done.returncode == 0, done.stderr
    assert f"torch {torch.__version__}: " in done.stdout
    assert f"torchvision {torchvision.__version__}: " in done.stdout
    assert "compiled ops load" in done.stdout


@pytest.mark.slow
def test_a_torchvision_whose_compiled_ops_do_not_load(tmp_path: Path):
    # This venv's own torchvision without its compiled libraries, first on the path: what a torchvision
    # built for another torch amounts to (its libraries do not load), and the same RuntimeError on import.
    shutil.copytree(
        Path(torchvision.__file__).parent,
        tmp_path / "torchvision",
        ignore=shutil.ignore_patterns("*.so", "*.so.*", "*.pyd", "*.dylib", "__pycache__"),
    )
    path = os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    done = _run(["-m", "rope_ext.install_check"], env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "compiled ops DO NOT load" in done.stdout
    stderr = " ".join(done.stderr.split())
    assert "operator torchvision::nms does not exist" in stderr
    assert "pip uninstall -y torch torchvision" in stderr
    assert "Traceback" not in done.stderr

    # train.py: the config is checked first (torch-free), then the install, before anything is written
    run_dir = tmp_path / "outputs" / "run"
    args = [str(TRAIN), "dataset=fake", "train.epochs=1", "run_id=run"]
    done = _run(args, env, cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    stderr = " ".join(done.stderr.split())
    assert "operator torchvision::nms does not exist" in stderr and "fresh virtual environment" in stderr
    assert "Nothing was written" in stderr and "Traceback" not in done.stderr
    assert not run_dir.exists()
