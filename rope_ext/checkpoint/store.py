"""Saving and loading a run's checkpoint pair; RNG state."""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rope_ext import safe_io
from rope_ext.checkpoint.files import (
    CKPT_NAME,
    FORMAT,
    HOW,
    RECORD_NAME,
    RESUMABLE_KEYS,
    CheckpointError,
    CheckpointWriteError,
    _fsync_write,
    _HashingWriter,
    fingerprint_mismatch,
    pair_paths,
    sha256_of,
)
from rope_ext.checkpoint.recovery import recover
from rope_ext.util import is_int, is_number

log = logging.getLogger("rope_ext.checkpoint")


def save(run_dir: Path, state: dict[str, Any], record: dict[str, Any]) -> Path:
    """Write ``state`` atomically to ``run_dir/checkpoint.pt`` with its ``checkpoint.json`` record.

    Nothing is written through a link (``safe_io.UnsafePathError``); ``record`` is strict JSON."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt, rec, ckpt_tmp, rec_tmp = pair_paths(run_dir)

    def write_ckpt(f: Any) -> str:
        writer = _HashingWriter(f)
        torch.save({"format": FORMAT, **state}, writer)
        return writer.sha.hexdigest()

    try:
        sha = _fsync_write(ckpt_tmp, write_ckpt)
        full_record, _ = safe_io.strict_json({"format": FORMAT, "sha256": sha, "file": CKPT_NAME, **record})
        text = safe_io.dumps(full_record).encode()
        _fsync_write(rec_tmp, lambda f: f.write(text))
        safe_io.refuse_link(ckpt)
        os.replace(ckpt_tmp, ckpt)
        safe_io.refuse_link(rec)
        os.replace(rec_tmp, rec)
        safe_io.fsync_dir(run_dir)
    except safe_io.UnsafePathError:
        raise
    except (OSError, RuntimeError) as err:  # torch's zip writer wraps a full disk in a RuntimeError
        # Before the first rename the previous pair is untouched and the temporary files are clutter.
        # After it, checkpoint.json.tmp is the record of the new checkpoint.pt: kept, recover() uses it.
        if ckpt_tmp.exists() and not ckpt_tmp.is_symlink():
            for tmp in (ckpt_tmp, rec_tmp):
                safe_io.remove_quietly(tmp)
        code, why = safe_io.describe(err, ckpt_tmp)
        raise CheckpointWriteError(
            code,
            f"could not write the checkpoint to {why}; its temporary files were removed and the previous "
            f"checkpoint in {run_dir} still resumes",
        ) from None
    return ckpt


def load(run_dir: Path, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint of ``run_dir`` (None when there is none), verified; raises CheckpointError."""
    run_dir = Path(run_dir)
    ckpt, rec = run_dir / CKPT_NAME, run_dir / RECORD_NAME
    recover(run_dir, fingerprint)
    if not ckpt.exists():
        if rec.exists():
            raise CheckpointError(
                f"{rec} exists but {ckpt} does not: the checkpoint was removed or lost. Refusing to start "
                "over in a directory that claims progress; delete the run directory or pick another run_id."
            )
        return None
    sha = sha256_of(ckpt)
    how = HOW
    try:
        record = safe_io.read_json(rec)
    except safe_io.BadJSON as err:
        raise CheckpointError(f"checkpoint {ckpt}: its record cannot be read: {err}. {how}") from None
    except FileNotFoundError:
        record = None
    if not isinstance(record, dict):
        raise CheckpointError(f"checkpoint {ckpt} has no readable record {rec}; refusing to load it. {how}")
    if record.get("sha256") != sha:
        raise CheckpointError(
            f"checkpoint {ckpt} is corrupt: its sha256 {sha[:12]}… differs from the {str(record.get('sha256', '?'))[:12]}… "
            f"recorded when it was written. {how}"
        )
    try:
        mismatch = fingerprint_mismatch(record, fingerprint)
    except CheckpointError as err:
        raise CheckpointError(f"checkpoint {ckpt}: {err}") from None
    if mismatch:
        detail = "; ".join(f"{k}: checkpoint {old!r}, this run {new!r}" for k, (old, new) in mismatch.items())
        raise CheckpointError(
            f"checkpoint {ckpt} was trained with other settings that change the run ({detail}); "
            f"only {', '.join(RESUMABLE_KEYS)} may change on resume. {how}"
        )
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"checkpoint {ckpt} could not be read ({err}). {how}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {ckpt} is not a rope-ext training checkpoint. {how}")
    return state


def check_progress(state: dict[str, Any], steps_per_epoch: int) -> None:
    """Refuse (CheckpointError) progress values no run saves: wrong types, an epoch without its history,
    a step beyond the epoch, non-finite numbers. A hand-edited file must not become a bogus record
    (``epochs_done: 1000000000, status: ok``)."""

    def bad(key: str, value: Any, allowed: str) -> CheckpointError:
        shown = repr(value) if len(repr(value)) < 80 else repr(value)[:77] + "..."
        return CheckpointError(f"checkpoint value {key}={shown} is not {allowed}. {HOW}")

    epoch, step, total = state.get("epoch"), state.get("step_in_epoch"), state.get("global_step")
    history = state.get("history")
    if not is_int(epoch) or epoch < 0:
        raise bad("epoch", epoch, "an integer >= 0")
    if not isinstance(history, list) or len(history) != epoch:
        n = len(history) if isinstance(history, list) else history
        raise bad("epoch", epoch, f"the number of epochs in its history ({n})")
    for i, entry in enumerate(history):
        if not isinstance(entry, dict) or entry.get("epoch") != i + 1:
            raise bad(f"history[{i}]", entry, f"the record of epoch {i + 1}")
        for key in ("train_loss", "lr", "val_acc"):
            if not (is_number(entry.get(key)) or (key == "val_acc" and entry.get(key) is None)):
                raise bad(f"history[{i}].{key}", entry.get(key), "a finite number")
    if not is_int(step) or not 0 <= step <= steps_per_epoch:
        raise bad("step_in_epoch", step, f"an integer in [0, {steps_per_epoch}] (steps per epoch)")
    if not is_int(total) or total < epoch + step:
        raise bad("global_step", total, f"an integer >= epoch + step_in_epoch = {epoch + step}")
    best, best_epoch = state.get("best_val_acc"), state.get("best_epoch")
    if best is not None and not (is_number(best) and 0 <= best <= 100):
        raise bad("best_val_acc", best, "null or a percentage")
    if best_epoch is not None and not (is_int(best_epoch) and 1 <= best_epoch <= epoch):
        raise bad("best_epoch", best_epoch, f"null or an integer in [1, {epoch}]")
    speed, partial = state.get("speed"), state.get("partial_loss")
    if not isinstance(speed, dict) or not all(is_number(speed.get(k)) for k in ("images", "seconds")):
        raise bad("speed", speed, "{'images': number, 'seconds': number}")
    if not isinstance(partial, list) or len(partial) != 2 or not all(is_number(v) for v in partial):
        raise bad("partial_loss", partial, "[sum, count] of finite numbers")
    rngs = state.get("rng")
    if not isinstance(rngs, list) or not rngs or not all(isinstance(r, dict) for r in rngs):
        raise bad("rng", type(rngs).__name__, "a list of RNG states, one per process")


def check_finite(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Refuse a checkpoint whose weights are NaN or infinite (written before the trainer checked)."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(
                f"checkpoint {path} holds non-finite weights ({name}): the run it continues had diverged. "
                f"{HOW}"
            )


def check_optimizer(optimizer: torch.optim.Optimizer) -> None:
    """Refuse optimizer state whose tensors do not match their parameters' shapes (a loaded state is
    otherwise only used, and fails, at the next step)."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            for key, value in optimizer.state.get(param, {}).items():
                if isinstance(value, torch.Tensor) and value.dim() and value.shape != param.shape:
                    raise CheckpointError(
                        f"checkpoint optimizer state {key} has shape {tuple(value.shape)} for a parameter "
                        f"of shape {tuple(param.shape)}. {HOW}"
                    )


def rng_state() -> dict[str, Any]:
    """This process's RNG states (python, numpy, torch CPU and CUDA) as torch-loadable values."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_tuples(state["python"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _tuples(value: Any) -> Any:
    """Python's RNG state wants tuples back where serialisation may have produced lists."""
    if isinstance(value, list | tuple):
        return tuple(_tuples(v) for v in value)
    return value
