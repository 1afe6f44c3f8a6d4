"""Records for tests that write run directories by hand, built from the schema in ``rope_ext.tracking.records``."""

from __future__ import annotations

from typing import Any

from rope_ext.tracking.records import METRICS_KEYS, SCHEMA_VERSION, FailureRecord, RunMetrics

# one neutral value per RunMetrics key; a key added to the schema fails every test that builds a record
# until it gets a value here, so no fixture silently writes a record the trainer no longer would
_DEFAULTS: dict[str, Any] = {
    "schema_version": SCHEMA_VERSION,
    "status": "ok",
    "test_acc": 0.0,
    "val_acc": None,
    "best_val_acc": None,
    "best_epoch": None,
    "test_acc_at": {},
    "train_img_per_s": None,
    "infer_img_per_s": None,
    "infer_latency_ms": None,
    "peak_mem_mb": 0.0,
    "params": 0,
    "epochs_done": 1,
    "relative_error": 0.0,
    "shift_error": 0.0,
    "test_acc_shifted": None,
    "basis_motion": None,
    "pe": {"name": "none"},
    "model": "vit_cifar",
    "dataset": "fake",
    "input_size": 32,
    "seed": 0,
    "run_id": "test",
    "world_size": 1,
    "device": "cpu",
    "precision": "fp32",
    "batch_size": 16,
    "global_batch_size": 16,
    "train_loss": None,
    "history": [],
    "resumed": False,
    "wall_s": 0.0,
    "provenance": {},
}


def run_metrics(**values: Any) -> RunMetrics:
    """A complete ok ``metrics.json`` record: ``values`` over a neutral value for every schema key."""
    if set(_DEFAULTS) != set(METRICS_KEYS):
        raise KeyError(f"record_helpers is out of date with RunMetrics: {set(_DEFAULTS) ^ set(METRICS_KEYS)}")
    unknown = set(values) - set(METRICS_KEYS)
    if unknown:
        raise KeyError(f"not RunMetrics keys: {sorted(unknown)}")
    return RunMetrics(**{**_DEFAULTS, **values})  # type: ignore[typeddict-item]


def failure_record(error: str, **values: Any) -> FailureRecord:
    """A ``failure.json`` record (also what an old trainer left as a non-ok ``metrics.json``)."""
    unknown = set(values) - set(FailureRecord.__annotations__)
    if unknown:
        raise KeyError(f"not FailureRecord keys: {sorted(unknown)}")
    return FailureRecord(status="failed", error=error, **values)  # type: ignore[typeddict-item]
