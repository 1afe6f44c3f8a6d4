"""Crash recovery of a checkpoint save (``rope_ext.checkpoint.save``) that never destroys a checkpoint.

``save`` writes checkpoint.pt.tmp, then checkpoint.json.tmp, then renames both into place. ``recover``
turns what a crash left into a consistent pair, but a leftover pair replaces the checkpoint in place only
once verified to be the complete, newer save of the same run: its record's format and sha256, a
``weights_only`` load (no code runs), the run's fingerprint, the model's tensor names, shapes and dtypes
and a progress no earlier than the checkpoint in place. A planted, foreign, older or damaged pair is
renamed aside (``*.tmp.rejected-<UTC time>-<pid>``) with a warning in the log, never over a good
checkpoint; a ``*.tmp`` without a readable record (a crash mid-write) is removed.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

from rope_ext import safe_io
from rope_ext.checkpoint.files import (
    CKPT_NAME,
    FORMAT,
    RECORD_NAME,
    CheckpointError,
    fingerprint_mismatch,
    pair_paths,
    read_record,
    sha256_of,
)
from rope_ext.util import is_int

log = logging.getLogger("rope_ext.checkpoint")  # one logger for checkpoints, as in train.log


def recover(run_dir: Path, fingerprint: dict[str, Any] | None = None) -> None:
    """Complete or set aside a save that a crash interrupted, so that ``run_dir`` holds a consistent pair.

    ``save`` writes checkpoint.pt.tmp, then checkpoint.json.tmp (with the sha256 of the former), then
    renames the first, then the second. What a crash leaves is completed only once verified
    (``_pending_problem``: format, hash, a weights-only load, this run's ``fingerprint``, the model's
    shapes and a progress no earlier than the checkpoint in place), so that a planted or damaged pair
    never replaces a good checkpoint: a complete pair that fails is renamed aside
    (``*.tmp.rejected-<time>``, a warning in the log says why) and the checkpoint in place is kept.
    A ``*.tmp`` without a readable record is what a crash mid-write leaves and is removed. Any of the
    four names being a link raises ``safe_io.UnsafePathError``.
    """
    run_dir = Path(run_dir)
    ckpt, rec, ckpt_tmp, rec_tmp = pair_paths(run_dir)
    pending = read_record(rec_tmp) if rec_tmp.exists() else None
    if ckpt_tmp.exists():
        if pending is None:
            log.warning("removing %s, left incomplete by a save that was interrupted", ckpt_tmp)
            ckpt_tmp.unlink()
        else:
            problem = _pending_problem(run_dir, ckpt_tmp, pending, fingerprint)
            if problem:
                _set_aside(run_dir, problem)
                return
            log.warning("completing the checkpoint save that was interrupted before its renames")
            os.replace(ckpt_tmp, ckpt)
            os.replace(rec_tmp, rec)
            safe_io.fsync_dir(run_dir)
            return
    if rec_tmp.exists():
        if pending is None:
            log.warning("removing %s, left incomplete by a save that was interrupted", rec_tmp)
            rec_tmp.unlink()
            return
        problem = _pending_record_problem(run_dir, pending, fingerprint)
        if problem:
            _set_aside(run_dir, problem)
            return
        log.warning("completing the checkpoint save that was interrupted between its renames")
        os.replace(rec_tmp, rec)
        safe_io.fsync_dir(run_dir)


def _pending_problem(
    run_dir: Path, ckpt_tmp: Path, pending: dict[str, Any], fingerprint: dict[str, Any] | None
) -> str | None:
    """Why the pair checkpoint.pt.tmp + checkpoint.json.tmp must not replace the checkpoint in place
    (None when it is the complete, newer save of this same run that a crash interrupted)."""
    if pending.get("format") != FORMAT or pending.get("file") != CKPT_NAME:
        return f"its record is not a {FORMAT} record of {CKPT_NAME}"
    if pending.get("sha256") != sha256_of(ckpt_tmp):
        return "its sha256 differs from the one its record holds"
    current = _verified_record(run_dir)
    problem = _fingerprint_problem(pending, fingerprint, current)
    if problem:
        return problem
    new_state = _load_weights_only(ckpt_tmp)
    if isinstance(new_state, str):
        return new_state
    if current is None:
        return None
    old_state = _load_weights_only(run_dir / CKPT_NAME)
    if isinstance(old_state, str):  # unreadable in place: load() will refuse it, recovery keeps it
        return f"the checkpoint in place cannot be compared with it ({old_state})"
    return _shape_problem(old_state, new_state) or _progress_problem(old_state, new_state)


def _pending_record_problem(
    run_dir: Path, pending: dict[str, Any], fingerprint: dict[str, Any] | None
) -> str | None:
    """Why checkpoint.json.tmp (alone) must not replace checkpoint.json: it completes an interrupted
    save only when it records checkpoint.pt as it is and checkpoint.json does not."""
    ckpt, rec = run_dir / CKPT_NAME, run_dir / RECORD_NAME
    if pending.get("format") != FORMAT or pending.get("file") != CKPT_NAME:
        return f"its record is not a {FORMAT} record of {CKPT_NAME}"
    if not ckpt.exists() or pending.get("sha256") != sha256_of(ckpt):
        return f"it does not record {ckpt} as it is"
    if _verified_record(run_dir) is not None:
        return f"{rec} already records {ckpt} as it is"
    return _fingerprint_problem(pending, fingerprint, None)


def _verified_record(run_dir: Path) -> dict[str, Any] | None:
    """checkpoint.json when it is a record of checkpoint.pt as it is (its sha256), else None."""
    ckpt, rec = run_dir / CKPT_NAME, run_dir / RECORD_NAME
    if not ckpt.exists():
        return None
    record = read_record(rec)
    return record if record is not None and record.get("sha256") == sha256_of(ckpt) else None


def _fingerprint_problem(
    pending: dict[str, Any], fingerprint: dict[str, Any] | None, current: dict[str, Any] | None
) -> str | None:
    """A mismatch of the pending record's fingerprint with the run's (or, without one, with the
    checkpoint in place's record)."""
    if fingerprint is None:
        if current is None:
            return None
        fingerprint = current.get("fingerprint") if current.get("fingerprint_format") == 2 else None
        if not isinstance(fingerprint, dict):
            return None
    try:
        mismatch = fingerprint_mismatch(pending, fingerprint)
    except CheckpointError as err:
        return str(err).split(". ")[0]
    if mismatch:
        return f"it was trained with other settings ({', '.join(sorted(mismatch))})"
    return None


def _load_weights_only(path: Path) -> dict[str, Any] | str:
    """The state in ``path`` (``weights_only``: no code runs), or why it is not a rope-ext checkpoint."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # torch raises many types for a foreign or damaged file
        return f"torch cannot load it with weights_only=True ({str(err).strip().splitlines()[0][:200]})"
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        return "it is not a rope-ext training checkpoint"
    return state


def _shapes(state: dict[str, Any]) -> dict[str, tuple[tuple[int, ...], torch.dtype]] | None:
    model = state.get("model")
    if not isinstance(model, dict) or not all(isinstance(v, torch.Tensor) for v in model.values()):
        return None
    return {str(k): (tuple(v.shape), v.dtype) for k, v in model.items()}


def _shape_problem(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    old_shapes, new_shapes = _shapes(old), _shapes(new)
    if new_shapes is None:
        return "its model is not a dict of tensors"
    if old_shapes is not None and old_shapes != new_shapes:
        differ = sorted(
            k for k in set(old_shapes) | set(new_shapes) if old_shapes.get(k) != new_shapes.get(k)
        )
        return (
            f"its model's tensors differ in name, shape or dtype from the checkpoint in place ({differ[:3]})"
        )
    return None


def _progress_problem(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """An interrupted save is never behind the checkpoint it was to replace."""
    for key in ("global_step", "epoch"):
        before, after = old.get(key), new.get(key)
        if is_int(before) and is_int(after):
            if after < before:
                return f"it is older than the checkpoint in place ({key} {after} < {before})"
            return None
    return None


def _set_aside(run_dir: Path, problem: str) -> None:
    """Rename the pending ``*.tmp`` files to ``*.tmp.rejected-<UTC time>`` and say why in the log."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + f"-{os.getpid()}"
    moved = []
    for tmp in (safe_io.tmp_path(run_dir / CKPT_NAME), safe_io.tmp_path(run_dir / RECORD_NAME)):
        if tmp.exists():
            aside = tmp.with_name(f"{tmp.name}.rejected-{stamp}")
            os.rename(tmp, aside)  # renames a link planted at ``aside`` away, never writes through it
            moved.append(aside.name)
    safe_io.fsync_dir(run_dir)
    log.warning(
        "set aside the unfinished checkpoint save in %s as %s: %s. The checkpoint in place is kept; "
        "delete the set-aside files once you have looked at them",
        run_dir,
        " and ".join(moved),
        problem,
    )
