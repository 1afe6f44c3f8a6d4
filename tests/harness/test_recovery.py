"""Crash recovery never destroys: a leftover checkpoint.pt.tmp + checkpoint.json.tmp pair replaces the
checkpoint in place only when it is the complete, newer save of the same run; anything else is renamed
aside (``*.tmp.rejected-<time>``) with a warning, and the good checkpoint stays and resumes."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from harness_helpers import TINY, output, run_train

from rope_ext import checkpoint

FP = {"pe": "a"}


def _save(run_dir: Path, epoch: int, fingerprint: dict | None = None, width: int = 3) -> Path:
    state = {"model": {"w": torch.ones(width) * epoch}, "epoch": epoch, "global_step": 10 * epoch}
    record = {"fingerprint": fingerprint or FP, "fingerprint_format": 2, "epoch": epoch}
    checkpoint.save(run_dir, state, record)
    return run_dir


def _plant(run_dir: Path, ckpt_bytes: bytes, record: dict) -> None:
    """checkpoint.pt.tmp and a checkpoint.json.tmp that records its sha256 (a complete-looking pair)."""
    (run_dir / "checkpoint.pt.tmp").write_bytes(ckpt_bytes)
    record = {**record, "sha256": hashlib.sha256(ckpt_bytes).hexdigest()}
    (run_dir / "checkpoint.json.tmp").write_text(json.dumps(record))


def _plant_copy(run_dir: Path, source: Path) -> None:
    shutil.copy(source / "checkpoint.pt", run_dir / "checkpoint.pt.tmp")
    shutil.copy(source / "checkpoint.json", run_dir / "checkpoint.json.tmp")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class _Payload:
    def __reduce__(self):
        return (print, ("code ran",))


def _pickled_payload() -> bytes:
    blob = io.BytesIO()
    torch.save({"format": checkpoint.FORMAT, "model": _Payload()}, blob)
    return blob.getvalue()


def _pair_of(tmp_path: Path, case: str) -> None:
    """Plant, next to the run's epoch-2 checkpoint in ``tmp_path / 'run'``, the pair of ``case``."""
    run = tmp_path / "run"
    if case == "older save of the same run":
        _plant_copy(run, _save(tmp_path / "older", 1))
    elif case == "another run's checkpoint":
        _plant_copy(run, _save(tmp_path / "other", 3, fingerprint={"pe": "b"}))
    elif case == "other shapes, same fingerprint":
        _plant_copy(run, _save(tmp_path / "wide", 3, width=5))
    elif case == "bytes torch cannot read":
        _plant(run, b"not a checkpoint", {"format": checkpoint.FORMAT, "file": "checkpoint.pt"})
    elif case == "a pickle payload":
        _plant(run, _pickled_payload(), {"format": checkpoint.FORMAT, "file": "checkpoint.pt"})
    elif case == "a foreign record format":
        _plant(run, (tmp_path / "run" / "checkpoint.pt").read_bytes(), {"format": "x", "file": "y"})
    else:  # a record whose hash is not the file's
        _plant_copy(run, _save(tmp_path / "newer", 3))
        (run / "checkpoint.pt.tmp").write_bytes(b"x" + (run / "checkpoint.pt.tmp").read_bytes())


CASES = [
    "older save of the same run",
    "another run's checkpoint",
    "other shapes, same fingerprint",
    "bytes torch cannot read",
    "a pickle payload",
    "a foreign record format",
    "a record whose hash is not the file's",
]


@pytest.mark.parametrize("case", CASES)
def test_a_bad_pending_pair_is_set_aside_and_the_checkpoint_kept(tmp_path, case, caplog, capfd):
    run = _save(tmp_path / "run", 2)
    good, record = _sha(run / "checkpoint.pt"), (run / "checkpoint.json").read_text()
    _pair_of(tmp_path, case)
    with caplog.at_level(logging.WARNING, logger="rope_ext.checkpoint"):
        state = checkpoint.load(run, FP)
    assert state["epoch"] == 2 and float(state["model"]["w"][0]) == 2.0
    assert _sha(run / "checkpoint.pt") == good and (run / "checkpoint.json").read_text() == record
    assert not list(run.glob("*.tmp"))
    aside = sorted(p.name for p in run.glob("*.rejected-*"))
    assert [n.split(".rejected-")[0] for n in aside] == ["checkpoint.json.tmp", "checkpoint.pt.tmp"]
    assert "set aside the unfinished checkpoint save" in caplog.text and "is kept" in caplog.text
    assert "code ran" not in capfd.readouterr().out


def test_the_newer_save_of_the_same_run_is_completed(tmp_path):
    run = _save(tmp_path / "run", 1)
    _plant_copy(run, _save(tmp_path / "newer", 2))  # died after writing both files, before the renames
    assert checkpoint.load(run, FP)["epoch"] == 2
    assert not list(run.glob("*.tmp")) and not list(run.glob("*.rejected-*"))
    assert _sha(run / "checkpoint.pt") == _sha(tmp_path / "newer" / "checkpoint.pt")


def test_a_planted_record_alone_does_not_replace_a_consistent_one(tmp_path):
    run = _save(tmp_path / "run", 2)
    record = json.loads((run / "checkpoint.json").read_text())
    forged = {**record, "fingerprint": {"pe": "b"}, "epoch": 99}
    (run / "checkpoint.json.tmp").write_text(json.dumps(forged))
    before = (run / "checkpoint.json").read_text()
    assert checkpoint.load(run, FP)["epoch"] == 2
    assert (run / "checkpoint.json").read_text() == before
    assert [p.name.split(".rejected-")[0] for p in run.glob("*.rejected-*")] == ["checkpoint.json.tmp"]


def test_a_pending_record_of_another_run_is_not_completed(tmp_path):
    """Between the renames (checkpoint.pt new, checkpoint.json old), a record naming other settings is
    set aside: load then refuses the pair as a mismatch instead of trusting the forged record."""
    run = _save(tmp_path / "run", 1)
    old = (run / "checkpoint.json").read_text()
    _save(run, 2)
    record = json.loads((run / "checkpoint.json").read_text())
    (run / "checkpoint.json.tmp").write_text(json.dumps({**record, "fingerprint": {"pe": "b"}}))
    (run / "checkpoint.json").write_text(old)
    with pytest.raises(checkpoint.CheckpointError, match="is corrupt"):
        checkpoint.load(run, FP)
    assert (run / "checkpoint.json").read_text() == old and list(run.glob("checkpoint.json.tmp.rejected-*"))


def test_a_deeply_nested_record_is_refused_with_a_message(tmp_path):
    run = _save(tmp_path / "run", 1)
    (run / "checkpoint.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(checkpoint.CheckpointError, match="nests 100000 levels deep"):
        checkpoint.load(run, FP)


def test_pickle_payload_helper_really_runs_code_when_unpickled(capfd):
    """The payload case above is meaningful: loaded without weights_only, it runs code."""
    torch.load(io.BytesIO(_pickled_payload()), weights_only=False)
    assert "code ran" in capfd.readouterr().out
    assert pickle.loads(pickle.dumps(_Payload())) is None


@pytest.mark.slow
def test_a_finished_run_with_a_planted_pair_keeps_its_checkpoint(tmp_path):
    """A finished run, another run's checkpoint planted as its pending save: the rerun sets it aside,
    finds the run complete and exits 0; the real checkpoint is untouched."""
    args = [*TINY, "run_id=done"]
    assert run_train(args, tmp_path).returncode == 0
    assert run_train([*TINY, "run_id=other", "pe=none"], tmp_path).returncode == 0
    run, other = tmp_path / "outputs" / "done", tmp_path / "outputs" / "other"
    good = _sha(run / "checkpoint.pt")
    _plant_copy(run, other)
    again = run_train(args, tmp_path)
    assert again.returncode == 0, output(again)
    assert "set aside the unfinished checkpoint save" in output(again) and "Traceback" not in output(again)
    assert _sha(run / "checkpoint.pt") == good
    assert len(list(run.glob("*.rejected-*"))) == 2
    assert "set aside" in (run / "train.log").read_text()
