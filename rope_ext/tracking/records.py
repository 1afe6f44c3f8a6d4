"""A run's record on disk: the one schema of ``metrics.json`` and ``failure.json``.

The trainer writes these files, the sweep summary, the report, the tuner and the tests read them, all
through this module. ``metrics.json`` is written once, when a run finishes; ``failure.json`` is written
beside it (never over it) when an attempt fails. ``job_result`` says which one a job directory stands for.

Both are strict JSON (no NaN/Infinity tokens): a value that was NaN or infinite is written as null and
its key (a dotted path) listed in an extra ``nonfinite`` field, present only then.

Versions: 1 is the layout written before the schema carried a version (the same keys, no
``schema_version``); 2 adds ``schema_version``. Readers accept both.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NotRequired, TypedDict

from rope_ext import safe_io
from rope_ext.tracking.provenance import Provenance

if TYPE_CHECKING:
    from rope_ext.encoding.motion import LayerMotion

SCHEMA_VERSION = 2
METRICS_NAME = "metrics.json"
FAILURE_NAME = "failure.json"
RUN_NAME = "run.json"  # the run's own resolved config and overrides: readers take its identity from it


class EpochRecord(TypedDict):
    """One entry of ``history``: the end of one epoch."""

    epoch: int
    train_loss: float
    val_acc: float | None  # None when dataset.val_fraction=0
    lr: float
    # the commit whose code trained the epoch (provenance.process_revision; None where git could not tell,
    # absent in records written before it was kept)
    revision: NotRequired[str | None]


class RunMetrics(TypedDict):
    """``metrics.json`` of a finished run (accuracies in percent)."""

    schema_version: int
    status: Literal["ok"]
    test_acc: float  # the final model at the training size
    val_acc: float | None  # the final model; nothing is selected on the test split
    best_val_acc: float | None
    best_epoch: int | None
    test_acc_at: dict[str, float]  # str(input size) -> test accuracy, test images resized or redrawn
    train_img_per_s: float | None  # steady-state training speed, all ranks together
    infer_img_per_s: float | None
    infer_latency_ms: float | None
    # this job's peak: CUDA, memory allocated by torch; CPU, the resident set size (the process's peak is
    # reset at the job's start, so each job of an in-process sweep has its own; where the OS cannot
    # reset it, hardware.peak_mem_mb says so in the log and this is the process's peak so far)
    peak_mem_mb: float
    params: int
    epochs_done: int
    relative_error: float  # max over rotary layers of |R(p_i)^T R(p_j) - R(p_j - p_i)|
    # the whole model: logits moved by a one-patch shift of every position; None without rotary layers
    shift_error: float | None
    test_acc_shifted: float | None
    # per rotary layer, how far training moved the block bases Q (rope_ext.encoding.motion); None
    # where no layer has a basis (N = 2, no rotary encoding, lie_block)
    basis_motion: list[LayerMotion] | None
    pe: dict[str, Any]  # the encoding's resolved options (rotary.OPTION_KEYS and name)
    model: str
    dataset: str
    input_size: int
    seed: int
    run_id: str
    world_size: int
    device: str
    precision: str
    batch_size: int
    global_batch_size: int
    train_loss: float | None
    history: list[EpochRecord]
    resumed: bool
    wall_s: float
    provenance: Provenance  # versions, processor / GPU, threads, code revision (rope_ext.tracking.provenance)


# failure.json's status: "failed" (an error: bad input, divergence, I/O, a crash) or "interrupted" (a
# user's Ctrl-C, or a time limit / preemption signal that checkpointed: rerunning the command resumes)
FailureStatus = Literal["failed", "interrupted"]


class FailureRecord(TypedDict, total=False):
    """``failure.json``: the last attempt that did not finish (best effort: the config itself may be what
    failed). ``pe`` holds the encoding's resolved options where the config was valid."""

    schema_version: int
    status: FailureStatus
    error: str
    pe: dict[str, Any]
    epochs_done: int
    model: str | None
    dataset: str | None
    input_size: int | None
    seed: int | None
    failed_at: str
    provenance: Provenance


METRICS_KEYS: tuple[str, ...] = tuple(RunMetrics.__annotations__)


def write_record(path: Path, record: RunMetrics | FailureRecord | dict[str, Any]) -> None:
    """Write ``record`` as strict JSON atomically, never through a link (``rope_ext.safe_io``); stamps
    the version. Non-finite numbers are written as null and their keys listed in ``nonfinite``."""
    data, nonfinite = safe_io.strict_json({"schema_version": SCHEMA_VERSION, **record})
    if nonfinite or "nonfinite" in data:
        data["nonfinite"] = sorted(set(data.get("nonfinite") or []) | set(nonfinite))
    text = safe_io.dumps(data).encode()
    safe_io.write_atomic(path, lambda f: f.write(text))


def read_record(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when the file is missing, a failed record when it is unreadable."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return {"status": "failed", "error": f"unreadable {path.name}: {exc}"}
    if not isinstance(data, dict):
        return {"status": "failed", "error": f"{path.name} is not a JSON object"}
    version = data.get("schema_version", 1)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        return {
            "status": "failed",
            "error": f"{path.name} has schema_version={version!r}; this rope_ext reads 1..{SCHEMA_VERSION}",
        }
    return data


def job_result(job_dir: Path) -> dict[str, Any]:
    """A job's record: its ok ``metrics.json``, or its ``failure.json`` when that is newer (or alone).
    The one rule of a job's state: the sweep summary and the report (``Run.status``) both read it.

    A failure that follows an ok result carries ``kept_result`` (the ok metrics, still on disk) and an
    error that says so; a directory with neither file is a failure "no result". A failure.json keeps
    its status "interrupted" (resumable); any other non-ok status reads as "failed".
    """
    metrics_path, failure_path = job_dir / METRICS_NAME, job_dir / FAILURE_NAME
    metrics, failure = read_record(metrics_path), read_record(failure_path)
    ok = metrics if metrics is not None and metrics.get("status") == "ok" else None
    if failure is not None and (ok is None or failure_path.stat().st_mtime >= metrics_path.stat().st_mtime):
        status = "interrupted" if failure.get("status") == "interrupted" else "failed"
        failure = dict(failure, status=status)
        if ok is not None:
            failure["error"] = (
                f"{failure.get('error')} (the latest attempt failed; the previous ok result in "
                f"{metrics_path} is kept)"
            )
            failure["kept_result"] = ok
        return failure
    if ok is not None:
        return ok
    return {
        "status": "failed",
        "error": f"no result: neither an ok {METRICS_NAME} nor {FAILURE_NAME}",
    }


def record_run(run_dir: Path, config: dict[str, Any], overrides: Sequence[str]) -> None:
    """``run.json``: the run's resolved ``config`` and its command-line ``overrides``, written atomically by
    the trainer when a run starts from scratch; every reader (report, tune, summary) takes the run's
    identity from it, never from Hydra's latest attempt in ``.hydra/``."""
    write_record(Path(run_dir) / RUN_NAME, {"config": config, "overrides": [str(o) for o in overrides]})
