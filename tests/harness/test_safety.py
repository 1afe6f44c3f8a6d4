"""Safety and no-loss: each test reproduces an attack or a fault and checks the guarantee.

The counts the README quotes come from the parametrized lists here: ``BAD_VALUES`` (+ the run_id
cases) are the bad inputs tried, ``KILL_POINTS`` the crash points of a checkpoint save.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from harness_helpers import (
    TINY,
    TRAIN,
    compose_job,
    env,
    failure,
    free_port,
    metrics,
    output,
    run_lock_held,
    run_train,
    start_train,
    wait_for_epoch,
    wandb_history,
)

from rope_ext import checkpoint
from rope_ext.checkpoint import CheckpointError, CheckpointWriteError
from rope_ext.config import ConfigError, check_command
from rope_ext.safety import RunDirBusy, RunLock
from rope_ext.tracking.records import job_result

SMALL = [
    "dataset=fake",
    "dataset.train_size=32",
    "dataset.test_size=16",
    "model.depth=1",
    "model.embed_dim=24",
    "model.num_heads=2",
    "train.epochs=1",
    "train.batch_size=16",
    "eval.batch_size=16",
    "eval.bench_seconds=0.01",
    "wandb.mode=disabled",
]


class Evil:
    """A pickle payload: unpickling it creates ``path`` (the proof that code ran)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def _weights_files(tmp_path: Path) -> dict[str, Path]:
    files = {}
    evil = tmp_path / "evil.pth"
    torch.save({"pos_embed": torch.zeros(1), "payload": Evil(tmp_path / "PWNED")}, evil)
    files["evil"] = evil
    (tmp_path / "text.pth").write_text("these are not weights\n")
    files["text"] = tmp_path / "text.pth"
    (tmp_path / "random.pth").write_bytes(bytes(range(256)) * 8)
    files["random"] = tmp_path / "random.pth"
    torch.save([torch.ones(2), torch.zeros(2)], tmp_path / "list.pth")
    files["list"] = tmp_path / "list.pth"
    (tmp_path / "bad.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    files["safetensors"] = tmp_path / "bad.safetensors"
    return files


def _cifar_with_truncated_batch(root: Path) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    import numpy as np

    batch = {"data": np.zeros((2, 3072), dtype=np.uint8), "labels": [0, 1]}
    for name in [
        "data_batch_1",
        "data_batch_2",
        "data_batch_3",
        "data_batch_4",
        "data_batch_5",
        "test_batch",
    ]:
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(i) for i in range(10)]}))
    bad = folder / "data_batch_3"
    bad.write_bytes(bad.read_bytes()[:100])
    return bad


# (overrides, fragments the one-paragraph error must contain); "{tmp}" is the test's directory
BAD_VALUES = {
    "embed_dim not divisible by heads": (
        ["model.embed_dim=100", "model.num_heads=3"],
        ["model.embed_dim=100", "multiple of model.num_heads=3"],
    ),
    "num_heads=0": (["model.num_heads=0"], ["model.num_heads=0", "an integer >= 1"]),
    "patch_size=0": (["model.patch_size=0"], ["model.patch_size=0", "an integer >= 1"]),
    "depth=0": (["model.depth=0"], ["model.depth=0", "an integer >= 1"]),
    "mlp_ratio=0": (["model.mlp_ratio=0"], ["model.mlp_ratio=0", "a finite number > 0"]),
    "drop_path_rate=2": (["model.drop_path_rate=2"], ["model.drop_path_rate=2", ">= 0 and < 1"]),
    "arch unknown": (["model.arch=not_a_model"], ["model.arch='not_a_model'", "timm"]),
    "threads=-1": (["hardware.threads=-1"], ["hardware.threads=-1", "an integer >= 1", "or null"]),
    "num_workers=-1 streaming": (
        ["dataset.num_workers=-1", "dataset.in_memory=false"],
        ["dataset.num_workers=-1", "auto or an integer in [0, 1024]"],
    ),
    "betas out of range": (
        ["optimizer.betas=[2,0.9]"],
        ["optimizer.betas=[2.0, 0.9]", "two numbers in [0, 1)"],
    ),
    "weight_decay=-1": (["optimizer.weight_decay=-1"], ["optimizer.weight_decay=-1", ">= 0"]),
    "epochs=0": (["train.epochs=0"], ["train.epochs=0", ">= 1"]),
    "min_lr above lr": (["train.lr=0.001", "train.min_lr=0.01"], ["train.min_lr=0.01", "train.lr=0.001"]),
    "timeout_min=0": (  # timeout_min=abc: refused by composition (tests/harness/test_inputs.py)
        ["launcher=slurm", "launcher.timeout_min=0"],
        ["launcher.timeout_min=0", "an integer >= 1"],
    ),
    "checkpoint: code": (
        ["model.checkpoint={tmp}/evil.pth"],
        ["model.checkpoint=", "executing code", "posix.system", "safetensors"],
    ),
    "checkpoint: text": (
        ["model.checkpoint={tmp}/text.pth"],
        ["model.checkpoint=", "torch checkpoint", "nothing is unpickled"],
    ),
    "checkpoint: random bytes": (
        ["model.checkpoint={tmp}/random.pth"],
        ["model.checkpoint=", "torch checkpoint", "nothing is unpickled"],
    ),
    "checkpoint: pickled list": (
        ["model.checkpoint={tmp}/list.pth"],
        ["model.checkpoint=", "holds list, not a state dict"],
    ),
    "checkpoint: broken safetensors": (
        ["model.checkpoint={tmp}/bad.safetensors"],
        ["model.checkpoint=", "not a readable weights file"],
    ),
    "cifar: truncated batch": (
        ["dataset=cifar10", "dataset.root={tmp}/data", "dataset.download=false", "dataset.in_memory=true"],
        ["dataset=cifar10", "data_batch_3", "could not be read"],
    ),
    "run_id ..": (["run_id=.."], ["run_id='..'", "one path component"]),
    "run_id empty": (["run_id="], ["run_id=''", "one path component"]),
    "run_id escapes": (["run_id=../../escape"], ["run_id='../../escape'", "one path component"]),
}


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_bad_value_is_refused_cleanly_before_any_work(tmp_path, monkeypatch, caplog, case):
    """run_job on the composed config: exit 2, one paragraph naming key/value/allowed, no traceback,
    no checkpoint, no metrics.json, and a malicious pickle never runs."""
    from rope_ext.run.job import run_job

    _weights_files(tmp_path)
    if "cifar" in case:
        _cifar_with_truncated_batch(tmp_path / "data")
    overrides, expected = BAD_VALUES[case]
    run_dir = tmp_path / "run"
    base = [o for o in SMALL if not o.startswith("dataset")] if "cifar" in case else SMALL
    task, _ = compose_job([*base, *(o.format(tmp=tmp_path) for o in overrides)], run_dir)
    with pytest.raises(SystemExit) as info:
        run_job(task)
    assert info.value.code == 2
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and errors[0].exc_info is None, caplog.text
    for fragment in expected:
        assert fragment in errors[0].getMessage(), (fragment, errors[0].getMessage())
    assert "epoch 1" not in caplog.text
    assert not list(tmp_path.rglob("checkpoint.*")) and not list(tmp_path.rglob("metrics.json"))
    assert not (tmp_path / "PWNED").exists(), "the pickle's payload ran"


def test_count_of_bad_inputs():
    """The README quotes this count (bad inputs tried = rejected cleanly, the test above)."""
    assert len(BAD_VALUES) == 23


def test_the_malicious_payload_is_real(tmp_path):
    """Control: the same file does run its payload when unpickled with weights_only=False."""
    files = _weights_files(tmp_path)
    torch.load(files["evil"], weights_only=False)
    assert (tmp_path / "PWNED").exists()


def test_degenerate_values_warn(tmp_path, caplog):
    """dataset.subset above the dataset's size and launcher=slurm without -m are accepted with a warning."""
    from rope_ext.run.job import run_job

    run_dir = tmp_path / "run"
    task, _ = compose_job(
        [*SMALL, "dataset.subset=100000", "launcher=slurm", "eval.input_sizes=[32]"], run_dir
    )
    assert run_job(task) is not None
    assert "dataset.subset=100000 is larger than dataset=fake" in caplog.text
    assert "launcher=slurm applies to multiruns" in caplog.text and "runs locally" in caplog.text
    assert metrics(run_dir)["status"] == "ok"


@pytest.mark.parametrize("value", ["../../escape", "..", ".", "", "a/b", "x y", "/abs"])
def test_run_id_on_the_command_line_is_one_component(value):
    """Through train.py's own check of the command line, before Hydra creates the run directory."""
    with pytest.raises(ConfigError, match="run_id"):
        check_command([f"run_id={value}"])
    check_command(["run_id='pe.block=3,seed=1_x+y-z'"])  # what the override-derived ids look like


@pytest.mark.slow
def test_run_id_cannot_escape_outputs_through_the_app(tmp_path):
    cwd = tmp_path / "project"
    cwd.mkdir()
    for value in ("../../escape", "..", ""):
        proc = run_train([*TINY, f"run_id={value}"], cwd, timeout=120)
        assert proc.returncode == 2, output(proc)
        assert (
            "run_id" in proc.stderr and "one path component" in proc.stderr and "Traceback" not in proc.stderr
        )
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["project"], list(tmp_path.rglob("*"))


# --- a refused command changes nothing ----------------------------------------------------------


@pytest.mark.slow
def test_refused_commands_keep_the_finished_result(tmp_path):
    """A finished run, then commands refused for a bad value (before Hydra: nothing written, see
    tests/harness/test_inputs.py), another seed, another data subset: the good metrics.json and checkpoint stay
    byte for byte; failure.json says why; a good rerun clears it."""
    args = [*TINY, "run_id=base"]
    assert run_train(args, tmp_path).returncode == 0
    run_dir = tmp_path / "outputs" / "base"
    kept = {
        name: (run_dir / name).read_bytes() for name in ("metrics.json", "checkpoint.pt", "checkpoint.json")
    }
    for extra, fragment in (
        (["pe.block=13"], "pe.block=13"),
        (["seed=7"], "seed: checkpoint 0, this run 7"),
        (["dataset.subset=8"], "dataset.subset: checkpoint None, this run 8"),
        (["train.label_smoothing=0.2"], "train.label_smoothing"),
    ):
        proc = run_train([*args, *extra], tmp_path)
        assert proc.returncode == 2, output(proc)
        assert fragment in output(proc) and "Traceback" not in output(proc)
        assert {name: (run_dir / name).read_bytes() for name in kept} == kept
        if extra == ["pe.block=13"]:  # refused before Hydra starts: no record of an attempt
            assert "Nothing was written." in output(proc) and not (run_dir / "failure.json").exists()
            continue
        assert fragment in failure(run_dir)["error"]
        result = job_result(run_dir)
        assert result["status"] == "failed" and "previous ok result" in result["error"]
        assert result["kept_result"]["status"] == "ok"
    # allowed to change on resume: more epochs, another peak lr -> resumes, writes the new result
    proc = run_train([*args, "train.epochs=2", "train.lr=5e-4"], tmp_path)
    assert proc.returncode == 0, output(proc)
    assert metrics(run_dir)["epochs_done"] == 2 and not (run_dir / "failure.json").exists()
    assert job_result(run_dir)["status"] == "ok"


def test_sweep_summary_reports_failures_after_ok_results(tmp_path):
    ok, failed, newer_ok, nothing = (tmp_path / n for n in ("ok", "failed", "newer_ok", "nothing"))
    for d in (ok, failed, newer_ok, nothing):
        d.mkdir()
    (ok / "metrics.json").write_text(json.dumps({"status": "ok", "test_acc": 50.0}))
    (failed / "metrics.json").write_text(json.dumps({"status": "ok", "test_acc": 40.0}))
    (failed / "failure.json").write_text(json.dumps({"status": "failed", "error": "train.lr=-1 refused"}))
    (newer_ok / "failure.json").write_text(json.dumps({"status": "failed", "error": "old"}))
    (newer_ok / "metrics.json").write_text(json.dumps({"status": "ok", "test_acc": 60.0}))
    os.utime(newer_ok / "failure.json", (time.time() - 100, time.time() - 100))
    assert job_result(ok)["test_acc"] == 50.0
    res = job_result(failed)
    assert res["status"] == "failed" and "train.lr=-1 refused" in res["error"] and "is kept" in res["error"]
    assert job_result(newer_ok)["test_acc"] == 60.0
    assert job_result(nothing)["status"] == "failed" and "no result" in job_result(nothing)["error"]


# --- checkpoint saves: every kill point resumes ---------------------------------------------------


class Killed(BaseException):
    """SIGKILL stand-in: raised from a filesystem call, not caught by the save code (no cleanup runs)."""


FP = {"num_classes": 10, "seed": 0}
# (name, the filesystem call that dies, its 1-based occurrence, fraction of the file being written
# that reached the disk (None: all of it), which checkpoint the rerun finds: "new" or "previous")
KILL_POINTS = [
    ("checkpoint.pt.tmp half written", "fsync", 1, 0.5, "previous"),
    ("checkpoint.pt.tmp written, not synced", "fsync", 1, None, "previous"),
    ("checkpoint.json.tmp created, empty", "fsync", 2, 0.0, "previous"),
    ("checkpoint.json.tmp half written", "fsync", 2, 0.5, "previous"),
    ("both .tmp written, before the first rename", "replace", 1, None, "new"),
    ("after the first rename, before the second", "replace", 2, None, "new"),
    ("after the second rename, before the directory sync", "dir", 1, None, "new"),
]


def _state(epoch: int) -> dict:
    return {"model": {"w": torch.full((64,), float(epoch))}, "epoch": epoch, "rng": checkpoint.rng_state()}


def _record(epoch: int) -> dict:
    return {"epoch": epoch, "fingerprint": FP, "fingerprint_format": 2}


@pytest.mark.parametrize("previous", [False, True], ids=["first save", "later save"])
@pytest.mark.parametrize("point", KILL_POINTS, ids=[p[0] for p in KILL_POINTS])
def test_every_kill_point_of_a_save_leaves_a_resumable_directory(tmp_path, monkeypatch, point, previous):
    _, call, nth, kept, expected = point
    if previous:
        checkpoint.save(tmp_path, _state(1), _record(1))
    calls = {"fsync": 0, "replace": 0, "dir": 0}
    real_fsync, real_replace, real_open = os.fsync, os.replace, os.open

    def fsync(fd):
        calls["fsync"] += 1
        if call == "fsync" and calls["fsync"] == nth:
            name = os.readlink(f"/proc/self/fd/{fd}")
            if kept is not None:
                os.truncate(name, int(os.fstat(fd).st_size * kept))
            raise Killed(name)
        return real_fsync(fd)

    def replace(src, dst):
        calls["replace"] += 1
        if call == "replace" and calls["replace"] == nth:
            raise Killed(src)
        return real_replace(src, dst)

    def open_dir(path, flags, *args):
        if call == "dir" and Path(path) == tmp_path:
            raise Killed(path)
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "open", open_dir)
    with pytest.raises(Killed):
        checkpoint.save(tmp_path, _state(2), _record(2))
    monkeypatch.undo()

    # the same command resumes: load() recovers, and the pair it finds is consistent
    state = checkpoint.load(tmp_path, FP)
    found = None if state is None else state["epoch"]
    assert found == (2 if expected == "new" else 1 if previous else None)
    assert not list(tmp_path.glob("*.tmp"))
    again = checkpoint.load(tmp_path, FP)  # stable on a second look
    assert (None if again is None else again["epoch"]) == found
    # and the next save works normally
    checkpoint.save(tmp_path, _state(3), _record(3))
    assert checkpoint.load(tmp_path, FP)["epoch"] == 3


def test_count_of_kill_points():
    assert len(KILL_POINTS) * 2 == 14


@pytest.mark.slow
def test_a_run_killed_before_its_first_renames_resumes(tmp_path):
    """The issue's case: both .tmp files complete, nothing renamed yet, no previous checkpoint."""
    args = [*TINY, "run_id=k"]
    assert run_train(args, tmp_path).returncode == 0
    run_dir = tmp_path / "outputs" / "k"
    for name in ("checkpoint.pt", "checkpoint.json"):
        (run_dir / name).rename(run_dir / (name + ".tmp"))
    (run_dir / "metrics.json").unlink()
    proc = run_train([*args, "train.epochs=2"], tmp_path)
    assert proc.returncode == 0, output(proc)
    assert "1 of 2 epochs done" in (run_dir / "train.log").read_text()
    assert metrics(run_dir)["epochs_done"] == 2


# --- disk full / read-only output -------------------------------------------------------------------


def test_disk_full_during_a_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    checkpoint.save(tmp_path, _state(1), _record(1))
    before = (tmp_path / "checkpoint.pt").read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.readlink(f"/proc/self/fd/{fd}"))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(CheckpointWriteError) as info:
        checkpoint.save(tmp_path, _state(2), _record(2))
    monkeypatch.undo()
    text = str(info.value)
    assert "errno 28 ENOSPC" in text and "checkpoint.pt.tmp" in text and "previous checkpoint" in text
    assert not list(tmp_path.glob("*.tmp"))
    assert (tmp_path / "checkpoint.pt").read_bytes() == before
    assert checkpoint.load(tmp_path, FP)["epoch"] == 1


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EROFS], ids=["disk full", "read-only"])
def test_unwritable_output_stops_the_run_with_one_paragraph(tmp_path, monkeypatch, caplog, err):
    """The real run: every fsync fails as on a full disk / read-only mount -> exit 4, path and errno."""
    from rope_ext.run.job import EXIT_IO, run_job

    run_dir = tmp_path / "run"
    task, _ = compose_job(SMALL, run_dir)

    def fail(fd):
        raise OSError(err, os.strerror(err), os.readlink(f"/proc/self/fd/{fd}"))

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(SystemExit) as info:
        run_job(task)
    monkeypatch.undo()
    assert info.value.code == EXIT_IO
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and errors[0].exc_info is None, caplog.text
    message = errors[0].getMessage()
    # the run's first write is its own record (run.json), before any checkpoint
    assert f"errno {err} {errno.errorcode[err]}" in message and str(run_dir / "run.json.tmp") in message
    assert not list(run_dir.glob("*.tmp")) and not (run_dir / "metrics.json").exists()


# --- W&B online with the server down -----------------------------------------------------------------


@pytest.mark.slow
def test_wandb_online_falls_back_to_offline_when_the_server_is_down(tmp_path):
    port = free_port()  # nothing listens there
    start = time.time()
    proc = run_train(
        [*TINY, "run_id=wb", "wandb.mode=online", "wandb.init_timeout=5"],
        tmp_path,
        extra_env={
            "WANDB_MODE": "online",
            "WANDB_BASE_URL": f"http://127.0.0.1:{port}",
            "WANDB_API_KEY": "x" * 40,
        },
    )
    elapsed = time.time() - start
    text = output(proc)
    assert proc.returncode == 0, text
    assert "W&B online start failed" in text and "wandb sync" in text
    run_dir = tmp_path / "outputs" / "wb"
    [log_file] = list((run_dir / "wandb").glob("offline-run-*/*.wandb"))
    rows = wandb_history(log_file)
    assert any("train/loss" in r for r in rows) and any("epoch/val_acc" in r for r in rows)
    assert metrics(run_dir)["status"] == "ok"
    run_id = (run_dir / "wandb_id.txt").read_text().strip()
    assert run_id in log_file.parent.name  # the same id: wandb sync continues the online run
    assert elapsed < 90, elapsed  # bounded by wandb.init_timeout, not hung


# --- one process per run directory ---------------------------------------------------------------


def test_run_lock_is_exclusive_and_names_the_holder(tmp_path):
    with (
        run_lock_held(tmp_path, 60) as holder,
        pytest.raises(RunDirBusy, match=f"in use by process {holder.pid}"),
    ):
        RunLock(tmp_path).acquire()
    lock = RunLock(tmp_path)  # the OS released it with the process
    lock.acquire()
    lock.release()


@pytest.mark.slow
def test_a_second_process_on_the_same_run_is_refused(tmp_path):
    args = [*TINY, "run_id=busy", "train.epochs=200", "dataset.train_size=256"]
    first = start_train(args, tmp_path)
    run_dir = tmp_path / "outputs" / "busy"
    try:
        wait_for_epoch(run_dir, first, 0, timeout=120)  # locked and training
        second = run_train(args, tmp_path, timeout=120)
        assert second.returncode == 2, output(second)
        assert f"in use by process {first.pid}" in output(second)
        assert not (run_dir / "failure.json").exists()  # the running job is not marked failed
        assert first.poll() is None
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()


# --- SIGTERM after the last step ---------------------------------------------------------------------


def test_sigterm_after_the_last_step_exits_143_and_the_rerun_only_evaluates(tmp_path, monkeypatch, caplog):
    from rope_ext.run.job import run_job

    run_dir = tmp_path / "run"
    real_save = checkpoint.save

    def save_then_term(*args, **kwargs):
        out = real_save(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)  # arrives after the final checkpoint, before evaluation
        return out

    monkeypatch.setattr(checkpoint, "save", save_then_term)
    task, _ = compose_job(SMALL, run_dir)
    with pytest.raises(SystemExit) as info:
        run_job(task)
    assert info.value.code == 143
    assert "after the last epoch" in caplog.text and not (run_dir / "metrics.json").exists()
    assert json.loads((run_dir / "checkpoint.json").read_text())["epoch"] == 1
    monkeypatch.undo()
    caplog.clear()
    caplog.set_level(logging.INFO)
    task, _ = compose_job(SMALL, run_dir)
    assert run_job(task) is not None
    assert "1 of 1 epochs done" in caplog.text and "epoch 1 step" not in caplog.text
    assert metrics(run_dir)["status"] == "ok" and not (run_dir / "failure.json").exists()


# --- the fingerprint ---------------------------------------------------------------------------------


def test_fingerprint_covers_the_trajectory_and_allows_the_listed_keys():
    base, _ = compose_job(SMALL)
    from omegaconf import OmegaConf

    def fp(overrides):
        task, _ = compose_job([*SMALL, *overrides])
        return checkpoint.fingerprint_of(OmegaConf.to_container(task, resolve=True), 10)

    ref = fp([])
    for changed in (
        "seed=7",
        "dataset.subset=8",
        "dataset.train_size=48",
        "dataset.augment.hflip=true",
        "train.warmup_epochs=2",
        "train.min_lr=1e-5",
        "train.batch_size=8",
        "optimizer.weight_decay=0.1",
        "optimizer=sgd",
        "model.drop_path_rate=0.1",
        "pe.theta=50",
    ):
        assert fp([changed]) != ref, changed
    for allowed in (
        "train.epochs=5",
        "train.lr=5e-4",
        "wandb.mode=offline",
        "hardware=cpu",
        "eval.bench_seconds=1",
        "run_id=x",
    ):
        assert fp([allowed]) == ref, allowed


def test_old_checkpoints_are_compared_through_their_recorded_config(tmp_path):
    """A record from before full fingerprints: rebuilt from its ``config``; differences still refused."""
    checkpoint.save(tmp_path, _state(1), {"epoch": 1, "fingerprint": {"pe": {}}, "config": {"seed": 0}})
    assert checkpoint.load(tmp_path, {"num_classes": 10, "seed": 0})["epoch"] == 1
    with pytest.raises(CheckpointError, match="seed: checkpoint 0, this run 7"):
        checkpoint.load(tmp_path, {"num_classes": 10, "seed": 7})


def test_our_checkpoint_loads_without_code(tmp_path):
    """checkpoint.pt holds only what weights_only=True accepts (RNG states included)."""
    checkpoint.save(tmp_path, _state(1), _record(1))
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    checkpoint.set_rng_state(state["rng"])


@pytest.mark.slow
def test_a_refused_sweep_rerun_keeps_every_jobs_result(tmp_path):
    """The issue's sweep case: rerun a finished sweep with train.lr=-1 -> refused before any job (exit 2,
    nothing written), every metrics.json kept byte for byte; bad launcher values stop the sweep before
    any job (exit 2)."""
    sweep = ["-m", *TINY, "run_id=sw", "pe.block=2,3"]
    assert run_train(sweep, tmp_path).returncode == 0
    jobs = sorted((tmp_path / "multirun" / "sw").glob("*/metrics.json"))
    assert len(jobs) == 2
    kept = [p.read_bytes() for p in jobs]
    proc = run_train([*sweep, "train.lr=-1"], tmp_path)
    assert proc.returncode == 2, output(proc)
    assert [p.read_bytes() for p in jobs] == kept
    assert "train.lr=-1" in proc.stderr and "Nothing was written." in proc.stderr
    assert not list((tmp_path / "multirun" / "sw").glob("*/failure.json"))
    proc = run_train(
        ["-m", *TINY, "launcher=submitit_local", "launcher.timeout_min=abc", "pe.block=2,3"], tmp_path
    )
    assert proc.returncode == 2 and "launcher.timeout_min='abc'" in output(proc), output(proc)
    assert "Traceback" not in output(proc)


@pytest.mark.slow
def test_ddp_ranks_stop_together_when_rank_0_cannot_lock(tmp_path):
    """torchrun, 2 ranks: rank 0 finds the directory locked by another process; both ranks exit 2."""
    run_dir = tmp_path / "outputs" / "ddp"
    run_dir.mkdir(parents=True)
    with run_lock_held(run_dir, 120) as holder:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                "--nproc_per_node=2",
                TRAIN,
                *TINY,
                "hardware=cpu",
                "run_id=ddp",
            ],
            cwd=tmp_path,
            env=env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode != 0 and f"in use by process {holder.pid}" in output(proc), output(proc)
        assert "epoch 1" not in output(proc) and not (run_dir / "checkpoint.pt").exists()
        assert not (run_dir / "failure.json").exists()
