"""Faults: resume after SIGKILL / SIGTERM, NaN stop, corrupt or foreign checkpoints, failure isolation."""

from __future__ import annotations

import hashlib
import json
import signal
from pathlib import Path

import pytest
import torch
from harness_helpers import TINY, failure, metrics, output, run_train, start_train, wait_for_epoch

from rope_ext import checkpoint
from rope_ext.checkpoint import CheckpointError
from rope_ext.run.hooks import FAULT_ENV

# 4 epochs of 8 steps; the loop checks for signals after every step
RUN = [*TINY, "train.epochs=4", "dataset.train_size=128", "train.log_every=1"]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def same_result(a: dict, b: dict) -> None:
    assert a["epochs_done"] == b["epochs_done"] == 4
    assert a["test_acc"] == pytest.approx(b["test_acc"], abs=1e-6)
    assert a["test_acc_at"] == pytest.approx(b["test_acc_at"], abs=1e-6)
    for ha, hb in zip(a["history"], b["history"], strict=True):
        assert ha["train_loss"] == pytest.approx(hb["train_loss"], rel=1e-5, abs=1e-6)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """An uninterrupted run of the same experiment and seed."""
    cwd = tmp_path_factory.mktemp("reference")
    proc = run_train([*RUN, "run_id=ref"], cwd)
    assert proc.returncode == 0, output(proc)
    return metrics(cwd / "outputs" / "ref")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killed_run_resumes_at_the_right_epoch_with_the_same_result(tmp_path, reference, sig):
    args = [*RUN, "run_id=victim"]
    run_dir = tmp_path / "outputs" / "victim"
    proc = start_train(args, tmp_path)
    wait_for_epoch(run_dir, proc, 1)
    proc.send_signal(sig)
    text = proc.communicate(timeout=120)[0]
    record = json.loads((run_dir / "checkpoint.json").read_text())
    done, step = record["epoch"], record["step_in_epoch"]
    assert done < 4, "the run finished before the signal: the test proves nothing"
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL and step == 0  # loses at most the epoch in progress
    else:  # SIGTERM: checkpoint at the next step boundary, then exit 128 + 15
        assert proc.returncode == 143, text
        assert "interrupted by SIGTERM" in text
        assert failure(run_dir)["status"] == "interrupted"  # resumable, not a failure
    resumed = run_train(args, tmp_path)
    assert resumed.returncode == 0, output(resumed)
    log = (run_dir / "train.log").read_text()
    expected = f"{done} of 4 epochs done" + (f" + {step} steps" if step else "")
    assert "Resuming from" in log and expected in log, log[-2000:]
    same_result(metrics(run_dir), reference)


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    good = run_train([*TINY, "run_id=nan"], tmp_path)
    assert good.returncode == 0, output(good)
    run_dir = tmp_path / "outputs" / "nan"
    before = sha(run_dir / "checkpoint.pt")
    # same run, one more epoch whose first step's loss is NaN: injected (ROPE_EXT_FAULT), not provoked
    # by a huge lr, whose first symptom (NaN, or a singular solve) depends on the processor
    bad = run_train([*TINY, "run_id=nan", "train.epochs=2"], tmp_path, extra_env={FAULT_ENV: "loss@2:1"})
    text = output(bad)
    assert bad.returncode == 3, text
    assert "not finite (loss nan) at epoch 2, step 1/" in text and "last good checkpoint" in text
    assert "Traceback" not in text
    assert sha(run_dir / "checkpoint.pt") == before
    assert json.loads((run_dir / "checkpoint.json").read_text())["epoch"] == 1
    m = failure(run_dir)
    assert m["status"] == "failed" and "not finite" in m["error"] and m["epochs_done"] == 1
    assert metrics(run_dir)["status"] == "ok"  # the finished 1-epoch result is kept beside the failure


@pytest.mark.slow
def test_a_huge_lr_stops_with_exit_3_whatever_diverges_first(tmp_path):
    """On some processors a singular solve comes before any NaN."""
    bad = run_train([*TINY, "run_id=lr", "train.lr=1e30"], tmp_path)
    text = output(bad)
    assert bad.returncode == 3, text
    assert "Training diverged" in text and "at epoch 1, step" in text and "Traceback" not in text
    assert not (tmp_path / "outputs" / "lr" / "metrics.json").exists()


@pytest.mark.slow
def test_corrupt_or_foreign_checkpoint_is_refused(tmp_path):
    args = [*TINY, "run_id=ck"]
    assert run_train(args, tmp_path).returncode == 0
    ckpt = tmp_path / "outputs" / "ck" / "checkpoint.pt"
    # another pe in the same directory
    foreign = run_train([*args, "pe=none"], tmp_path)
    assert foreign.returncode == 2, output(foreign)
    assert "trained with other settings" in output(foreign) and "pe.name" in output(foreign)
    # flipped bytes
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2] ^= 0xFF
    ckpt.write_bytes(bytes(data))
    corrupt = run_train(args, tmp_path)
    assert corrupt.returncode == 2, output(corrupt)
    assert "is corrupt" in output(corrupt) and "epoch 1/1" not in output(corrupt)
    assert ckpt.read_bytes() == bytes(data)  # never overwritten


@pytest.mark.slow
def test_a_failing_job_does_not_lose_the_others(tmp_path):
    proc = run_train(["-m", "dataset.noise=1e38,1.0", *TINY], tmp_path)
    text = output(proc)
    assert proc.returncode == 1, text
    [sweep] = list((tmp_path / "multirun").iterdir())
    [bad_dir] = list(sweep.glob("dataset.noise=1e*38"))  # Hydra writes the swept float as 1e+38
    failed, ok = failure(bad_dir), metrics(sweep / "dataset.noise=1.0")
    assert failed["status"] == "failed" and "not finite" in failed["error"]
    assert ok["status"] == "ok" and ok["epochs_done"] == 1
    assert "1 of 2 jobs FAILED" in proc.stderr and bad_dir.name in proc.stderr


# --- the checkpoint module on its own ------------------------------------------------------------


def _save(run_dir: Path, epoch: int = 1) -> None:
    checkpoint.save(
        run_dir,
        {"model": {"w": torch.ones(3) * epoch}, "epoch": epoch},
        {"fingerprint": {"pe": "a"}, "fingerprint_format": 2},
    )


def test_checkpoint_roundtrip_and_fingerprint(tmp_path):
    _save(tmp_path)
    assert checkpoint.load(tmp_path, {"pe": "a"})["epoch"] == 1
    with pytest.raises(CheckpointError, match="other settings"):
        checkpoint.load(tmp_path, {"pe": "b"})
    assert checkpoint.load(tmp_path / "empty", {"pe": "a"}) is None


def test_crash_between_the_two_renames_is_completed(tmp_path):
    _save(tmp_path, 1)
    old_record = (tmp_path / "checkpoint.json").read_text()
    _save(tmp_path, 2)
    # as if the process died after replacing checkpoint.pt but before replacing checkpoint.json
    (tmp_path / "checkpoint.json.tmp").write_text((tmp_path / "checkpoint.json").read_text())
    (tmp_path / "checkpoint.json").write_text(old_record)
    assert checkpoint.load(tmp_path, {"pe": "a"})["epoch"] == 2
    assert not (tmp_path / "checkpoint.json.tmp").exists()


def test_interrupted_save_leaves_the_previous_checkpoint(tmp_path):
    _save(tmp_path, 1)
    (tmp_path / "checkpoint.pt.tmp").write_bytes(b"half a checkpoint")
    assert checkpoint.load(tmp_path, {"pe": "a"})["epoch"] == 1
    assert not (tmp_path / "checkpoint.pt.tmp").exists()


@pytest.mark.parametrize("damage", ["truncate", "garbage", "no_record"])
def test_damaged_checkpoints_are_refused(tmp_path, damage):
    _save(tmp_path)
    ckpt = tmp_path / "checkpoint.pt"
    if damage == "truncate":
        ckpt.write_bytes(ckpt.read_bytes()[:100])
    elif damage == "garbage":
        ckpt.write_bytes(b"not a checkpoint")
    else:
        (tmp_path / "checkpoint.json").unlink()
    with pytest.raises(CheckpointError):
        checkpoint.load(tmp_path, {"pe": "a"})
