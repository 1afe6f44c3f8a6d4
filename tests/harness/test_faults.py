"""Faults of issues 20 and 21: divergence, signals at every kill point, SIGINT, links planted in a run
directory, full disks, strict JSON, hand-edited checkpoints.

Faults are injected at exact steps through ``ROPE_EXT_FAULT`` (``rope_ext.run.hooks.FAULT_ENV``, ``rope_ext.run.debug_faults``), so that
what happens does not depend on the processor (a huge learning rate makes NaN on one machine and a
singular linear solve on another). Most runs are the real job function on a composed config, in this
process (a few seconds each); the SIGINT tests are real subprocesses.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import math
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch
from harness_helpers import (
    TINY,
    compose_job,
    failure,
    metrics,
    output,
    run_train,
    start_train,
    wait_for_epoch,
)

from rope_ext import checkpoint, safe_io
from rope_ext.checkpoint import CheckpointWriteError
from rope_ext.config import ConfigError
from rope_ext.run.hooks import FAULT_ENV
from rope_ext.run.job import EXIT_CONFIG, EXIT_IO, EXIT_NONFINITE, run_job
from rope_ext.safety import RunLock
from rope_ext.tracking.records import FAILURE_NAME, METRICS_NAME, job_result, write_record

# 2 epochs of 3 steps (64 images, 6 held out for validation, batches of 16)
SMALL = [
    "dataset=fake",
    "dataset.train_size=64",
    "dataset.test_size=16",
    "model.depth=1",
    "model.embed_dim=24",
    "model.num_heads=2",
    "train.epochs=2",
    "train.batch_size=16",
    "eval.batch_size=16",
    "eval.bench_seconds=0",
    "wandb.mode=disabled",
]
STEPS = 3


def job(run_dir: Path, *overrides: str, fault: str | None = None, monkeypatch=None) -> int:
    """Run the job in this process; its exit code (0: finished)."""
    if monkeypatch is not None:
        if fault is None:
            monkeypatch.delenv(FAULT_ENV, raising=False)
        else:
            monkeypatch.setenv(FAULT_ENV, fault)
    task, _ = compose_job([*SMALL, *overrides], run_dir)
    try:
        run_job(task)
    except SystemExit as exit_:
        return int(exit_.code)
    return 0


def record(run_dir: Path) -> dict:
    return json.loads((run_dir / "checkpoint.json").read_text())


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def errors(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """The uninterrupted run every resumed one must reproduce."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    os.environ.pop(FAULT_ENV, None)
    assert job(run_dir) == 0
    return metrics(run_dir)


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory) -> Path:
    """A finished 1-epoch run directory (copied by the tests that edit it)."""
    run_dir = tmp_path_factory.mktemp("one_epoch") / "run"
    os.environ.pop(FAULT_ENV, None)
    assert job(run_dir, "train.epochs=1") == 0
    return run_dir


def copy_of(run_dir: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(run_dir, out, ignore=shutil.ignore_patterns(".lock"))
    return out


# --- divergence ------------------------------------------------------------------------------------

# (fault, what the message names, the checkpoint left: epochs done or None)
DIVERGENCES = {
    "NaN loss": (
        "loss@2:2",
        "the loss, the gradients and the weights after the update are not finite (loss nan) at epoch 2, step 2/3",
        1,
    ),
    "inf gradient": ("grad@2:1", "the gradients and the weights after the update are not finite", 1),
    "NaN weight after the update": ("param@2:3", "the weights after the update are not finite", 1),
    "singular solve": ("solve@2:2", "linear solve failed", 1),
    # lr=inf: the first update makes the weights NaN; the epoch's end must not save them
    "NaN weight in the last step of the only epoch": ("param@1:3", "at epoch 1, step 3/3", None),
}


@pytest.mark.parametrize("case", list(DIVERGENCES))
def test_divergence_stops_with_exit_3_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, caplog, case):
    fault, named, kept = DIVERGENCES[case]
    run_dir = tmp_path / "run"
    epochs = "train.epochs=2" if kept else "train.epochs=1"
    assert job(run_dir, epochs, fault=fault, monkeypatch=monkeypatch) == EXIT_NONFINITE
    [error] = errors(caplog)
    text = error.getMessage()
    assert "Training diverged" in text and named in text, text
    assert ("last good checkpoint (1 epoch(s) done) is kept" if kept else "no checkpoint was written") in text
    assert error.exc_info is None  # one paragraph, no traceback
    assert not (run_dir / METRICS_NAME).exists()  # no ok record
    assert failure(run_dir)["status"] == "failed" and failure(run_dir)["epochs_done"] == (kept or 0)
    if kept:
        assert record(run_dir)["epoch"] == kept and record(run_dir)["step_in_epoch"] == 0
        state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
        assert all(torch.isfinite(t).all() for t in state["model"].values())
        if case == "singular solve":  # the kept checkpoint resumes (one case: each run costs seconds)
            assert job(run_dir, monkeypatch=monkeypatch) == 0
            assert metrics(run_dir)["epochs_done"] == 2
    else:
        assert not list(run_dir.glob("checkpoint*"))


# --- signals: every kill point resumes to the uninterrupted result ---------------------------------

# (fault, exit code, the checkpoint left as (epochs done, steps of the next), the message's place)
KILL_POINTS = {
    "SIGTERM mid-epoch (in-step flag)": ("SIGTERM@1:2", 143, (0, 2), "at epoch 1 step 2/3"),
    "SIGUSR1 in an epoch's last step": ("SIGUSR1@1:3", 138, (1, 0), "after epoch 1's checkpoint"),
    "SIGUSR2 after an epoch's checkpoint (between steps)": ("SIGUSR2@1:end", 140, (1, 0), "after epoch 1"),
    "SIGINT in the last epoch's last step": ("SIGINT@2:3", 130, (2, 0), "after the last epoch"),
    "SIGTERM after the last epoch's checkpoint": ("SIGTERM@2:end", 143, (2, 0), "after the last epoch"),
    "SIGUSR2 in the first step": ("SIGUSR2@1:1", 140, (0, 1), "at epoch 1 step 1/3"),
}


@pytest.mark.parametrize("case", list(KILL_POINTS))
def test_a_signal_at_any_step_checkpoints_and_the_rerun_resumes_to_the_same_result(
    tmp_path, monkeypatch, caplog, reference, case
):
    fault, code, (epoch, step), where = KILL_POINTS[case]
    run_dir = tmp_path / "run"
    caplog.set_level(logging.INFO)
    assert job(run_dir, fault=fault, monkeypatch=monkeypatch) == code, caplog.text[-3000:]
    assert f"interrupted by {fault.split('@')[0]} {where}" in caplog.text
    # a stop that checkpointed is recorded as interrupted (resumable), not as a failure
    assert failure(run_dir)["status"] == "interrupted" and failure(run_dir)["epochs_done"] == epoch
    assert job_result(run_dir)["status"] == "interrupted"
    assert (record(run_dir)["epoch"], record(run_dir)["step_in_epoch"]) == (epoch, step)
    assert step < STEPS  # never "all steps of an epoch" as a mid-epoch checkpoint
    assert not errors(caplog) and not (run_dir / METRICS_NAME).exists()
    caplog.clear()
    assert job(run_dir, monkeypatch=monkeypatch) == 0, caplog.text[-3000:]
    resumed = f"{epoch} of 2 epochs done" + (f" + {step} steps" if step else "")
    assert resumed in caplog.text
    m = metrics(run_dir)
    assert m["resumed"] and m["epochs_done"] == 2
    assert m["test_acc"] == reference["test_acc"] and m["test_acc_at"] == reference["test_acc_at"]
    for a, b in zip(m["history"], reference["history"], strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6)
        assert a["val_acc"] == b["val_acc"]


# a signal during the final evaluation or the speed measurement, after the last checkpoint: (signal, the
# function it arrives in, exit code, the logged place)
AFTER_THE_LOOP = {
    "SIGUSR2 in the final evaluation (submitit's handler)": ("SIGUSR2", "final_evaluation", 140),
    "SIGTERM in the speed measurement": ("SIGTERM", "speeds", 143),
    "SIGINT in the final evaluation": ("SIGINT", "final_evaluation", 130),
}


@pytest.mark.parametrize("case", list(AFTER_THE_LOOP))
def test_a_signal_after_the_last_checkpoint_is_recorded_handed_over_and_the_rerun_only_evaluates(
    tmp_path, monkeypatch, caplog, reference, case
):
    """The stop is logged and recorded as interrupted before the signal reaches the handler that was
    there before the job (submitit's requeue: a spy here); the rerun finds every epoch done."""
    from rope_ext.run import training

    name, where, code = AFTER_THE_LOOP[case]
    signum = getattr(signal, name)
    real = getattr(training, where)

    def signalled(*args, **kwargs):
        os.kill(os.getpid(), signum)  # delivered at the next bytecode, inside this call
        return real(*args, **kwargs)

    handed_over: list[int] = []
    previous = signal.getsignal(signum)
    if name != "SIGINT":  # a handler of the launcher's, as submitit installs one for USR2 and TERM
        signal.signal(signum, lambda sig, frame: handed_over.append(sig))
    monkeypatch.setattr(training, where, signalled)
    run_dir = tmp_path / "run"
    caplog.set_level(logging.INFO)
    try:
        assert job(run_dir, monkeypatch=monkeypatch) == code, caplog.text[-3000:]
    finally:
        signal.signal(signum, previous)
    said = "outside the training loop" if name == "SIGINT" else "during the final evaluation"
    assert f"interrupted by {name} {said}" in caplog.text
    assert handed_over == ([] if name == "SIGINT" else [signum])
    assert failure(run_dir)["status"] == "interrupted" and failure(run_dir)["epochs_done"] == 2
    assert not errors(caplog) and not (run_dir / METRICS_NAME).exists()
    monkeypatch.setattr(training, where, real)
    caplog.clear()
    assert job(run_dir, monkeypatch=monkeypatch) == 0, caplog.text[-3000:]
    assert "2 of 2 epochs done" in caplog.text and "epoch 1 step" not in caplog.text
    m = metrics(run_dir)
    assert m["status"] == "ok" and m["test_acc"] == reference["test_acc"]
    assert not (run_dir / FAILURE_NAME).exists()


def test_a_signal_after_the_loops_last_check_is_not_lost(tmp_path, monkeypatch, caplog):
    """USR2 recorded by the loop's guard after its last look (as the loop returns): the final evaluation
    does not start; the stop is recorded and handed to the launcher's handler, as any other."""
    from rope_ext.run import training

    real = training.run_epochs

    def signalled(*args, **kwargs):
        real(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGUSR2)  # the loop's guard still holds the handlers

    handed_over: list[int] = []
    previous = signal.signal(signal.SIGUSR2, lambda sig, frame: handed_over.append(sig))
    monkeypatch.setattr(training, "run_epochs", signalled)
    run_dir = tmp_path / "run"
    try:
        assert job(run_dir, monkeypatch=monkeypatch) == 140, caplog.text[-3000:]
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert handed_over == [signal.SIGUSR2]
    assert "interrupted by SIGUSR2 during the final evaluation" in caplog.text
    assert failure(run_dir)["status"] == "interrupted" and not (run_dir / METRICS_NAME).exists()


def test_a_time_limit_while_the_record_is_written_neither_stops_nor_requeues_the_finished_job(
    tmp_path, monkeypatch, caplog
):
    """USR2 (SLURM's time-limit warning under submitit) while metrics.json is written: the job is done, so
    the launcher's handler (a requeue) is not called; the job ends ok and says why it went on."""
    from rope_ext.run import training

    real = training.publish

    def signalled(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGUSR2)
        return real(*args, **kwargs)

    handed_over: list[int] = []

    def launcher(sig, frame):
        handed_over.append(sig)

    previous = signal.signal(signal.SIGUSR2, launcher)
    monkeypatch.setattr(training, "publish", signalled)
    run_dir = tmp_path / "run"
    try:
        assert job(run_dir, monkeypatch=monkeypatch) == 0, caplog.text[-3000:]
        assert signal.getsignal(signal.SIGUSR2) is launcher  # the launcher's handler is back
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert handed_over == []
    assert "caught SIGUSR2 after the job finished" in caplog.text and "not requeued" in caplog.text
    assert metrics(run_dir)["status"] == "ok" and not (run_dir / FAILURE_NAME).exists()


def test_a_checkpoint_holding_all_of_an_epochs_steps_resumes(tmp_path, monkeypatch, caplog, reference):
    """A bricked run: earlier versions saved "epoch 1 + 3 of 3 steps" on a signal in an epoch's
    last step, and every rerun died on an empty batch. Such a checkpoint now ends that epoch."""
    run_dir = tmp_path / "run"
    assert job(run_dir, fault="SIGUSR1@1:3", monkeypatch=monkeypatch) == 138

    def as_before_the_epoch_end(state):  # the same weights, optimizer and RNG: only the bookkeeping
        [done] = state["history"]
        state.update(epoch=0, step_in_epoch=STEPS, history=[], best_val_acc=None, best_epoch=None)
        state["partial_loss"] = [done["train_loss"] * STEPS, float(STEPS)]

    _edit_pt(run_dir, as_before_the_epoch_end)
    caplog.set_level(logging.INFO)
    assert job(run_dir, monkeypatch=monkeypatch) == 0, caplog.text[-3000:]
    assert "0 of 2 epochs done + 3 steps" in caplog.text and "ending that epoch" in caplog.text
    m = metrics(run_dir)
    assert m["test_acc"] == reference["test_acc"]
    assert [h["val_acc"] for h in m["history"]] == [h["val_acc"] for h in reference["history"]]


def test_ctrl_c_before_training_is_one_line_and_exit_130(tmp_path, monkeypatch, caplog):
    from rope_ext.run import build

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(build, "build_datasets", interrupted)
    assert job(tmp_path / "run", monkeypatch=monkeypatch) == 130
    [line] = [r for r in caplog.records if "SIGINT" in r.getMessage()]
    assert line.exc_info is None and "no checkpoint was written" in line.getMessage()
    assert not errors(caplog)
    assert failure(tmp_path / "run")["status"] == "interrupted"


def test_the_fault_hook_is_not_loaded_unless_its_variable_is_set(monkeypatch):
    """Production runs never import the injector: the loop sees no hook at all."""
    import subprocess
    import sys

    code = (
        "import sys; from rope_ext.run import hooks, training; "
        "assert hooks.from_env() is None; assert 'rope_ext.run.debug_faults' not in sys.modules"
    )
    environ = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
    subprocess.run([sys.executable, "-c", code], env=environ, check=True, timeout=120)
    monkeypatch.setenv(FAULT_ENV, "SIGTERM@1:2,loss@2:end")
    from rope_ext.run import hooks

    assert hooks.from_env().faults == {(1, 2): {"SIGTERM"}, (2, None): {"loss"}}
    monkeypatch.setenv(FAULT_ENV, "SIGKILL@1:2")
    with pytest.raises(ConfigError, match=f"{FAULT_ENV}='SIGKILL@1:2'.*KIND one of SIGTERM"):
        hooks.from_env()


def test_count_of_kill_points():
    # the epoch boundaries (an epoch's last step, after its checkpoint, the last epoch) and both paths
    assert len(KILL_POINTS) == 6


@pytest.mark.slow
def test_ctrl_c_checkpoints_logs_one_line_and_exits_130(tmp_path):
    """A real SIGINT from outside, as a terminal's Ctrl-C sends it."""
    args = [*TINY, "run_id=int", "train.epochs=200", "dataset.train_size=256", "eval.bench_seconds=0"]
    run_dir = tmp_path / "outputs" / "int"
    proc = start_train(args, tmp_path)
    try:
        wait_for_epoch(run_dir, proc, 1)
        proc.send_signal(signal.SIGINT)
        text = proc.communicate(timeout=120)[0]
    finally:
        proc.kill()
    assert proc.returncode == 130, text
    assert "Traceback" not in text and "KeyboardInterrupt" not in text
    log = (run_dir / "train.log").read_text()
    [line] = [line for line in log.splitlines() if "interrupted by SIGINT" in line]
    assert "checkpoint saved, rerun the same command to resume" in line
    assert record(run_dir)["epoch"] >= 1 and failure(run_dir)["status"] == "interrupted"


@pytest.mark.slow
def test_a_second_ctrl_c_exits_at_once(tmp_path):
    proc = run_train(
        [*TINY, "run_id=int2", "train.epochs=2", "eval.bench_seconds=0"],
        tmp_path,
        extra_env={FAULT_ENV: "SIGINT2@2:1"},
    )
    text = output(proc)
    assert proc.returncode == 130, text
    assert "second SIGINT: exiting at once" in text and "Traceback" not in text
    run_dir = tmp_path / "outputs" / "int2"
    assert (record(run_dir)["epoch"], record(run_dir)["step_in_epoch"]) == (1, 0)  # the previous one


# --- links planted in the run directory ------------------------------------------------------------

NAMES = [
    ".lock",
    "metrics.json",
    "metrics.json.tmp",
    "failure.json",
    "failure.json.tmp",
    "checkpoint.pt",
    "checkpoint.pt.tmp",
    "checkpoint.json",
    "checkpoint.json.tmp",
]


def plant(run_dir: Path, name: str, tmp_path: Path) -> Path:
    """A link ``run_dir/name`` to a file outside the run directory; returns the target."""
    target = tmp_path / "outside" / f"target-of-{name}"
    target.parent.mkdir(exist_ok=True)
    target.write_text("precious")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / name).symlink_to(target)
    return target


@pytest.mark.parametrize("name", NAMES)
def test_no_write_lock_or_read_follows_a_planted_link(tmp_path, name):
    run_dir = tmp_path / "run"
    target = plant(run_dir, name, tmp_path)
    base = name.removesuffix(".tmp")
    with pytest.raises(safe_io.UnsafePathError, match="is a symbolic link"):
        if name == ".lock":
            RunLock(run_dir).acquire()
        elif base in (METRICS_NAME, FAILURE_NAME):
            write_record(run_dir / base, {"status": "ok"})
        else:
            checkpoint.save(run_dir, {"epoch": 1}, {"fingerprint": {}, "fingerprint_format": 2})
    if base.startswith("checkpoint"):
        with pytest.raises(safe_io.UnsafePathError):
            checkpoint.load(run_dir, {})
    assert target.read_text() == "precious"
    assert (run_dir / name).is_symlink()  # left for a person to look at
    assert not (run_dir / base).exists() or (run_dir / base).is_symlink()


@pytest.mark.parametrize("name", [".lock", "checkpoint.pt.tmp", "metrics.json.tmp"])
def test_the_run_refuses_a_planted_link_with_exit_4(tmp_path, monkeypatch, caplog, name):
    run_dir = tmp_path / "run"
    target = plant(run_dir, name, tmp_path)
    assert job(run_dir, "train.epochs=1", monkeypatch=monkeypatch) == EXIT_IO
    [error] = errors(caplog)
    assert error.exc_info is None and "is a symbolic link" in error.getMessage()
    assert str(run_dir / name) in error.getMessage()
    assert target.read_text() == "precious"
    assert not (run_dir / METRICS_NAME).exists()


# --- full disk and other write failures ------------------------------------------------------------


def _full_after(limit: int, torch_style: bool):
    """A _HashingWriter.write that fails as a full disk does once ``limit`` bytes went through: an
    OSError, or the RuntimeError torch's zip writer raises while handling it."""
    real = checkpoint.files._HashingWriter.write
    written = {"n": 0}

    def write(self, data):
        if written["n"] + len(data) > limit:
            err = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            if not torch_style:
                raise err
            try:
                raise err
            except OSError:
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")  # noqa: B904
        written["n"] += len(data)
        return real(self, data)

    return write


@pytest.mark.parametrize("torch_style", [False, True], ids=["OSError", "torch RuntimeError"])
def test_disk_full_in_a_save_keeps_the_previous_checkpoint_and_no_tmp(tmp_path, monkeypatch, torch_style):
    checkpoint.save(tmp_path, {"epoch": 1, "w": torch.ones(4)}, {"fingerprint": {}, "fingerprint_format": 2})
    before = sha(tmp_path / "checkpoint.pt")
    monkeypatch.setattr(checkpoint.files._HashingWriter, "write", _full_after(256, torch_style))
    with pytest.raises(CheckpointWriteError) as info:
        checkpoint.save(tmp_path, {"epoch": 2, "w": torch.ones(4096)}, {"fingerprint": {}})
    monkeypatch.undo()
    assert "errno 28 ENOSPC" in str(info.value) and "previous checkpoint" in str(info.value)
    assert not list(tmp_path.glob("*.tmp")) and sha(tmp_path / "checkpoint.pt") == before
    assert checkpoint.load(tmp_path, {})["epoch"] == 1


def test_disk_full_during_training_exits_4_with_one_paragraph(tmp_path, monkeypatch, caplog):
    """The second epoch's save hits the torch-style full disk: exit 4, epoch 1's checkpoint resumes."""
    run_dir = tmp_path / "run"
    real_save = checkpoint.save
    saves = {"n": 0}

    def second_save_fills_the_disk(*args, **kwargs):
        saves["n"] += 1
        if saves["n"] == 2:
            monkeypatch.setattr(checkpoint.files._HashingWriter, "write", _full_after(1024, True))
        return real_save(*args, **kwargs)

    monkeypatch.setattr(checkpoint, "save", second_save_fills_the_disk)
    assert job(run_dir, fault=None, monkeypatch=monkeypatch) == EXIT_IO
    [error] = errors(caplog)
    assert error.exc_info is None and "errno 28 ENOSPC" in error.getMessage()
    assert not list(run_dir.glob("*.tmp")) and record(run_dir)["epoch"] == 1
    assert failure(run_dir)["epochs_done"] == 1


def test_a_failed_metrics_write_leaves_no_tmp_and_exits_4(tmp_path, monkeypatch, caplog):
    run_dir = tmp_path / "run"
    real_fsync = os.fsync

    def fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith("metrics.json.tmp"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    assert job(run_dir, "train.epochs=1", monkeypatch=monkeypatch) == EXIT_IO
    assert "errno 28 ENOSPC" in errors(caplog)[0].getMessage()
    assert not list(run_dir.glob("*.tmp")) and not (run_dir / METRICS_NAME).exists()


# --- strict JSON -----------------------------------------------------------------------------------


def _strict(text: str):
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def test_records_are_strict_json_and_name_their_non_finite_values(tmp_path):
    write_record(
        tmp_path / METRICS_NAME, {"status": "ok", "shift_error": math.nan, "test_acc_at": {"8": math.inf}}
    )
    data = _strict((tmp_path / METRICS_NAME).read_text())
    assert data["shift_error"] is None and data["test_acc_at"] == {"8": None}
    assert data["nonfinite"] == ["shift_error", "test_acc_at.8"]
    fingerprint = {"pe.theta": math.inf}
    checkpoint.save(
        tmp_path,
        {"epoch": 1},
        {"best_val_acc": math.nan, "fingerprint": fingerprint, "fingerprint_format": 2},
    )
    assert _strict((tmp_path / "checkpoint.json").read_text())["best_val_acc"] is None
    assert checkpoint.load(tmp_path, fingerprint)["epoch"] == 1  # still resumes its own run


# --- hand-edited checkpoints -----------------------------------------------------------------------


def _edit_pt(run_dir: Path, change) -> None:
    """Change checkpoint.pt and record its new sha256, as someone editing both files would."""
    path = run_dir / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    change(state)
    torch.save(state, path)
    rec = record(run_dir)
    rec["sha256"] = sha(path)
    (run_dir / "checkpoint.json").write_text(json.dumps(rec))


def _first_weight(state, value):
    name = next(iter(state["model"]))
    state["model"][name] = value(state["model"][name])


EDITS = {
    "epoch=1e9": (lambda s: s.update(epoch=10**9), "epoch=1000000000"),
    "epoch a string": (lambda s: s.update(epoch="1"), "epoch='1'"),
    "step beyond the epoch": (lambda s: s.update(step_in_epoch=99), "step_in_epoch=99"),
    "best_val_acc inf": (lambda s: s.update(best_val_acc=math.inf), "best_val_acc=inf"),
    "history not a list": (lambda s: s.update(history={"a": 1}), "epoch=1"),
    "weight of another shape": (lambda s: _first_weight(s, lambda t: torch.zeros(3, 5)), "does not fit"),
    "NaN weights": (lambda s: _first_weight(s, lambda t: t * math.nan), "non-finite weights"),
    "optimizer state of another shape": (
        lambda s: s["optimizer"]["state"][0].update(exp_avg=torch.zeros(7)),
        "optimizer state exp_avg",
    ),
    "rng missing": (lambda s: s.pop("rng"), "rng"),
}
RECORD_EDITS = {
    "record is a list": (lambda r: [r], "no readable record"),
    "sha256 a number": (lambda r: {**r, "sha256": 12}, "is corrupt"),
    "fingerprint a string": (lambda r: {**r, "fingerprint": "x", "config": None}, "holds no config"),
}


@pytest.mark.parametrize("case", [*EDITS, *RECORD_EDITS])
def test_a_hand_edited_checkpoint_is_refused_with_one_paragraph(
    tmp_path, monkeypatch, caplog, one_epoch, case
):
    run_dir = copy_of(one_epoch, tmp_path)
    if case in EDITS:
        change, named = EDITS[case]
        _edit_pt(run_dir, change)
    else:
        change, named = RECORD_EDITS[case]
        (run_dir / "checkpoint.json").write_text(json.dumps(change(record(run_dir))))
    before = (run_dir / METRICS_NAME).read_bytes()
    assert job(run_dir, "train.epochs=2", monkeypatch=monkeypatch) == EXIT_CONFIG
    [error] = errors(caplog)
    assert error.exc_info is None and "Refusing the checkpoint" in error.getMessage()
    assert named in error.getMessage(), error.getMessage()
    assert (run_dir / METRICS_NAME).read_bytes() == before  # the finished result is untouched


# --- peak memory per job ---------------------------------------------------------------------------


def test_peak_memory_is_the_jobs_own_not_the_processes(tmp_path):
    from rope_ext.run import hardware

    cpu = torch.device("cpu")
    hardware.reset_peak_mem(cpu)
    big = torch.ones(64 * 2**20)  # 256 MiB, touched
    with_big = hardware.peak_mem_mb(cpu)
    del big
    hardware.reset_peak_mem(cpu)
    assert hardware.peak_mem_mb(cpu) < with_big - 200
