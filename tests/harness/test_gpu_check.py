"""experiments/gpu_check.sh runs end to end on a CPU (``--device cpu``: tiny shapes, every stage), so the
first GPU minute is not spent on a typo; its Python side refuses bad arguments before building anything."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="bash not installed")


def _gpu_smoke():
    spec = importlib.util.spec_from_file_location("gpu_smoke", EXPERIMENTS / "gpu_smoke.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_gpu_check_runs_end_to_end_on_cpu(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHON=sys.executable, OUT=str(tmp_path))
    out = subprocess.run(
        ["bash", str(EXPERIMENTS / "gpu_check.sh"), "--device", "cpu"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    log = next(tmp_path.glob("gpu_check_*.log")).read_text()
    assert "kernel check: PASSED" in log and "gpu_check: PASSED" in log and "FAILED" not in log
    # both speed tables, every row with its ratio and spread, Eva's RoPE beside the plain ViT
    assert log.count("| model | variant | train ms |") == 2
    assert "| vit_small_patch16_224 | eva |" in log and "| vit_base_patch16_224 | axial_block:3:fast |" in log
    assert log.startswith("== gpu_check") and "device=cpu" in log


def test_gpu_check_refuses_an_unknown_argument(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHON=sys.executable, OUT=str(tmp_path))
    out = subprocess.run(
        ["bash", str(EXPERIMENTS / "gpu_check.sh"), "--device", "tpu"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert (
        out.returncode == 2
        and "usage: bash experiments/gpu_check.sh [--device cuda|cpu]; got: --device tpu" in out.stderr
    )
    assert not list(tmp_path.iterdir())  # refused before any log is written


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--modes", "eager,fast"], "--modes='eager,fast' is not allowed"),
        (["--speed-variants", "none,rope"], "--speed-variants: 'rope' is not allowed"),
        (["--speed-variants", "eva"], "must include 'none'"),
        (["--repeats", "0"], "must be >= 1"),
    ],
)
def test_speed_arguments_are_checked_before_any_model(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        _gpu_smoke().main(["--speed", "--device", "cpu", *argv])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_every_speed_variant_builds() -> None:
    """Each name in SPEED_VARIANTS builds a model (tiny shape): none of them is a typo."""
    smoke = _gpu_smoke()
    shape = {"patch_size": 16, "depth": 1, "embed_dim": 64, "num_heads": 2}
    for spec in smoke.SPEED_VARIANTS:
        model = smoke.build_speed_model("vit_small_patch16_224", spec, 32, shape)
        assert sum(p.numel() for p in model.parameters()) > 0


def _recorded_calls(tmp_path: Path, *argv: str) -> list[list[str]]:
    """The python command lines gpu_check.sh runs (PYTHON replaced by a recorder that succeeds)."""
    record = tmp_path / "calls"
    stub = tmp_path / "python"
    stub.write_text(f'#!/usr/bin/env bash\nprintf "%s\\x1f" "$@" >> {record}\necho >> {record}\n')
    stub.chmod(0o755)
    env = dict(os.environ, PYTHON=str(stub), OUT=str(tmp_path / "out"))
    out = subprocess.run(
        ["bash", str(EXPERIMENTS / "gpu_check.sh"), *argv], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return [line.rstrip("\x1f").split("\x1f") for line in record.read_text().splitlines()]


def test_gpu_stages_pass_arguments_the_script_accepts(tmp_path: Path) -> None:
    """On a GPU machine: the kernel check, both speed stages (the issue's models, batches and dtype)
    and the compiled training smoke, each command line accepted by gpu_smoke.py's own parser."""
    smoke = _gpu_smoke()
    calls = [c[1:] for c in _recorded_calls(tmp_path) if c[0].endswith("gpu_smoke.py")]
    parsed = [smoke.build_parser().parse_args(c) for c in calls]
    assert [(a.kernel_check, a.speed, a.modes if a.speed else None) for a in parsed] == [
        (True, False, None),
        (False, True, "eager"),
        (False, True, "compiled"),
        (False, False, None),
    ]
    kernel, eager, compiled, training = parsed
    assert kernel.device == "cuda" and kernel.kernel_shape == "8,12,14,64"
    for args in (eager, compiled):
        smoke._check_speed_args(smoke.build_parser(), args)
        assert (args.device, args.dtype, args.img_size, args.train_batch, args.infer_batch) == (
            "cuda",
            "bf16",
            224,
            64,
            256,
        )
    assert eager.models == "vit_base_patch16_224,vit_small_patch16_224"
    assert eager.speed_variants == ",".join(smoke.SPEED_VARIANTS)  # every variant, eager
    assert {"none", "eva", "axial_block:3:fast"} <= set(compiled.speed_variants.split(","))
    assert (
        training.compile and training.dtype == "bf16" and training.steps >= 200 and training.require_decrease
    )
