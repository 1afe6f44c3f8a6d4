"""Run discovery: every run directory under a root, its config, overrides and records (``Run``).

A run directory holds ``run.json`` (the run's own record of its resolved config and command-line
overrides, written by the trainer when the run starts from scratch: ``record_run``) and/or Hydra's
``.hydra/config.yaml`` (a single run's output directory or one job of a multirun); its ``metrics.json``
and ``failure.json`` are read through ``rope_ext.metrics``. A run's identity comes from ``run.json``:
Hydra rewrites ``.hydra/`` at every attempt, refused ones included, so ``.hydra/`` is read only for runs
written before ``run.json`` existed. Run files are data: YAML is read by ``yaml.SafeLoader`` with aliases
refused and nothing resolved (``${...}`` stays its literal text), JSON with its nesting bounded. The report, the tuner and the sweep
summary all find their runs here.
"""

from __future__ import annotations

import json
import math
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from rope_ext.encoding.spec import ENCODINGS, OPTION_KEYS, PE_NAMES
from rope_ext.metrics import FAILURE_NAME, METRICS_NAME, RUN_NAME, job_result, read_record, record_run
from rope_ext.schema import replicate_keys, unnamed_keys

__all__ = ["FIXED_BLOCK", "FREE_BLOCK", "PE_OPTIONS", "RUN_NAME", "Run", "find_runs", "record_run"]


SPEEDS = ("train_img_per_s", "infer_img_per_s", "infer_latency_ms")
RATIO_SUFFIX = "_ratio_vs_none"
# report.csv's pe columns: the options that existed when its layout was fixed; the position options
# (coords, augment, layout_of) show in report.md's `other` column when they vary, not in the CSV.
PE_OPTIONS = tuple(k for k in OPTION_KEYS if k not in ("coords", "augment", "layout_of"))
# variants whose block size is not a choice (none has no block; axial2_* are 2 by definition)
FIXED_BLOCK = frozenset(n for n in PE_NAMES if n not in ENCODINGS or ENCODINGS[n].block is not None)
# variants with a block size N to choose (their impl and N name them in labels)
FREE_BLOCK = frozenset(n for n, spec in ENCODINGS.items() if spec.block is None)
VARIANT_ORDER = {name: i for i, name in enumerate(PE_NAMES)}
# keys of the run config that never make two runs different experiments: the schema's keys that don't
# name the run directory (names_run=False), and seeds (replicates of one experiment)
IGNORED_TOP = {"hydra", *(k for k in unnamed_keys() if "." not in k)}
IGNORED_LEAF = {k.rsplit(".", 1)[-1] for k in replicate_keys()}
# identifying fields of failed or missing runs, read from the config when the metrics lack them
_CONFIG_FALLBACK = {
    "model": "model.name",
    "dataset": "dataset.name",
    "input_size": "dataset.input_size",
    "seed": "seed",
    "batch_size": "train.batch_size",
}


# metric fields that must be finite numbers (or null) for the report to use a record
_NUMBERS = (
    "test_acc",
    "val_acc",
    "best_val_acc",
    "best_epoch",
    "relative_error",
    "shift_error",
    "test_acc_shifted",
    *SPEEDS,
    "peak_mem_mb",
    "params",
    "epochs_done",
    "input_size",
    "seed",
    "batch_size",
)


class UnreadableRun(ValueError):
    """A run directory whose files the readers cannot use (corrupt YAML/JSON, wrong types)."""


# a run file larger than this is not one the trainer wrote (a run.json or config.yaml is a few kB)
MAX_RUN_FILE_BYTES = 16 * 2**20


class _NoAliasLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses aliases (``*name``): the trainer and Hydra never write them, and a
    kilobyte of nested aliases expands to gigabytes (a "billion laughs" file) before any check could run."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise UnreadableRun(
                f"YAML alias *{event.anchor} at line {event.start_mark.line + 1}: run files are read without "
                "aliases (a few of them nested expand without bound)"
            )
        return super().compose_node(parent, index)


def _text(path: Path) -> str:
    """A run file's text, refused beyond ``MAX_RUN_FILE_BYTES``."""
    size = path.stat().st_size
    if size > MAX_RUN_FILE_BYTES:
        raise UnreadableRun(f"{path.name} is {size} bytes; a run file is at most {MAX_RUN_FILE_BYTES}")
    return path.read_text()


def load_yaml(path: Path) -> Any:
    """A run file's YAML as plain data, read as written: ``yaml.SafeLoader`` without aliases, nothing
    resolved (``${...}``, escaped or not, stays its literal text; no environment variable is read)."""
    return yaml.load(_text(path), Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass


def load_json(path: Path) -> Any:
    """A run file's JSON; ``UnreadableRun`` for nesting deeper than the parser's recursion limit."""
    try:
        return json.loads(_text(path))
    except RecursionError:
        raise UnreadableRun(
            f"{path.name} nests deeper than the JSON reader's limit (about 1000 levels)"
        ) from None


def _read_record(path: Path) -> dict[str, Any] | None:
    """``metrics.read_record`` with a record nested too deeply for the JSON parser as a failed record."""
    try:
        return read_record(path)
    except RecursionError:
        return {"status": "failed", "error": f"unreadable {path.name}: nested deeper than about 1000 levels"}


@dataclass
class Run:
    """One run directory: its records (empty when missing), its config and overrides (read on first use:
    the sweep summary needs only the records) and what the report derives (``ratios``, ``arm_label``)."""

    path: Path
    sweep: str
    metrics: dict[str, Any]
    failure: dict[str, Any] = field(default_factory=dict)
    ratios: dict[str, float | None] = field(default_factory=dict)
    # the arm's name within its sweep (the swept overrides that set it apart), set by the report
    arm_label: str = ""

    @cached_property
    def recorded(self) -> dict[str, Any] | None:
        """``run.json`` (None for runs written before it existed)."""
        path = self.path / RUN_NAME
        if not path.is_file():
            return None
        data = load_json(path)
        if not (
            isinstance(data, dict)
            and isinstance(data.get("config"), dict)
            and isinstance(data.get("overrides"), list)
        ):
            raise UnreadableRun(f"{RUN_NAME} is not a run record (an object with config and overrides)")
        return data

    @cached_property
    def config(self) -> dict[str, Any]:
        """The run's resolved config: ``run.json``'s, else ``.hydra/config.yaml`` (see the module doc)."""
        if self.recorded is not None:
            return self.recorded["config"]
        path = self.path / ".hydra" / "config.yaml"
        if not path.is_file():
            return {}
        data = load_yaml(path)
        if not isinstance(data, dict):
            raise UnreadableRun(".hydra/config.yaml is not a mapping")
        return data

    @cached_property
    def overrides(self) -> list[str]:
        """The run's command-line overrides: ``run.json``'s, else ``.hydra/overrides.yaml`` (none when
        absent)."""
        if self.recorded is not None:
            return [str(o) for o in self.recorded["overrides"]]
        path = self.path / ".hydra" / "overrides.yaml"
        if not path.is_file():
            return []
        loaded = load_yaml(path)
        if loaded is None:
            return []
        if not isinstance(loaded, list):
            raise UnreadableRun(".hydra/overrides.yaml is not a list")
        return [str(o) for o in loaded]

    @cached_property
    def status(self) -> str:
        """ok, failed or interrupted by the one rule of a job's state (``rope_ext.metrics.job_result``: an ok
        metrics.json unless a newer failure.json says the latest attempt failed); missing when neither
        record exists."""
        if not self.metrics and not self.failure:
            return "missing"
        try:
            status = str(job_result(self.path).get("status") or "failed")
        except RecursionError:  # a record nested too deeply: _read_record made it a failed one
            return "failed"
        return interrupted_or(status, self.failure)

    @property
    def error(self) -> str:
        """Why the run is not ok ("" when it is)."""
        if self.status == "ok":
            return ""
        record = self.failure or self.metrics
        if not record:
            return f"neither {METRICS_NAME} nor {FAILURE_NAME} (the job did not finish or never started)"
        return str(record.get("error") or record.get("reason") or "")

    @property
    def arm(self) -> str:
        """The ``experiment/arm`` the job ran (from its overrides), else the pe variant's name."""
        for override in self.overrides:
            key, _, value = override.lstrip("+~").partition("=")
            if key == "experiment/arm" or key.startswith("experiment/tuned/"):
                return value
        return self.variant

    def command(self) -> str:
        """The command that reruns exactly this job as a single run (its Hydra task overrides)."""
        kept = [o for o in self.overrides if not o.lstrip("+~").startswith(("launcher", "hydra."))]
        return " ".join(["python train.py", *(shlex.quote(o) for o in kept)])

    def cfg(self, dotted: str, default: Any = None) -> Any:
        """A value of the run's config by dotted key, ``default`` when absent."""
        node: Any = self.config
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    @cached_property
    def options(self) -> dict[str, Any]:
        """The encoding's options as the model used them: metrics.json's ``pe`` (resolved by the trainer)
        over the config's ``pe``, which stands in for records without it (failed or missing runs)."""
        out = {**_as_dict(self.cfg("pe")), **_as_dict(self.metrics.get("pe"))}
        spec = ENCODINGS.get(self.variant)
        if out.get("block") is None and spec is not None and spec.block is not None:
            out["block"] = spec.block  # a config leaves axial2_*'s fixed block unset
        return out

    def pe(self, key: str) -> Any:
        """One resolved pe option (see ``options``)."""
        return self.options.get(key)

    @property
    def variant(self) -> str:
        """The encoding's name: the recorded one, else the config's (``?`` when it has none)."""
        return str(_as_dict(self.metrics.get("pe")).get("name") or self.cfg("pe.name", "?"))

    def field_value(self, name: str) -> Any:
        """A metric, with the config as fallback for the identifying fields of failed or missing runs."""
        if self.metrics.get(name) is not None:
            return self.metrics[name]
        if name in _CONFIG_FALLBACK:
            return self.cfg(_CONFIG_FALLBACK[name])
        return None

    def identity(self) -> tuple[tuple[str, str], ...]:
        """What makes an experiment: the flattened config without seeds, paths of Hydra and W&B."""
        flat = _flatten({k: v for k, v in self.config.items() if k not in IGNORED_TOP})
        items = [
            (k, v if isinstance(v, str) else json.dumps(v))
            for k, v in flat.items()
            if k.rsplit(".", 1)[-1] not in IGNORED_LEAF
        ]
        return (("__sweep__", self.sweep), *sorted(items))

    def row(self, eval_sizes: Sequence[int], root: Path) -> dict[str, Any]:
        """The run's report.csv row, ``run_dir`` relative to the report's ``root``."""
        row: dict[str, Any] = {
            "run_dir": self.relpath(root),
            "sweep": self.sweep,
            "arm": self.arm_label,
            "status": self.status,
            "error": self.error,
            "variant": self.variant,
            "overrides": " ".join(self.overrides),
        }
        for key in PE_OPTIONS:
            row[key] = self.pe(key)
        for key in ("model", "dataset", "input_size", "batch_size", "seed"):
            row[key] = self.field_value(key)
        for key in (
            "test_acc",
            "val_acc",
            "best_val_acc",
            "best_epoch",
            "relative_error",
            *SPEEDS,
            "peak_mem_mb",
            "params",
            "epochs_done",
        ):
            row[key] = self.metrics.get(key)
        for speed in SPEEDS:
            row[speed + RATIO_SUFFIX] = self.ratios.get(speed)
        for size in eval_sizes:
            row[f"test_acc_at_{size}"] = self.acc_at(size)
        return row

    def acc_at(self, size: int) -> Any:
        """Test accuracy at evaluation input size ``size`` (None when not evaluated)."""
        acc_at = self.metrics.get("test_acc_at") or {}
        return acc_at.get(str(size), acc_at.get(size))

    def relpath(self, root: Path) -> str:
        """The run directory relative to ``root`` (``.`` for the root itself)."""
        return self.path.relative_to(root).as_posix() if self.path != root else "."

    def check(self) -> None:
        """Raise ``UnreadableRun`` (or the reader's own error) unless the config, the overrides and the
        records are usable: every metric a finite number or null, ``pe`` and ``test_acc_at`` objects."""
        _ = self.config, self.overrides
        for name, record in ((METRICS_NAME, self.metrics), (FAILURE_NAME, self.failure)):
            for key in _NUMBERS:
                if not _finite_or_none(record.get(key)):
                    raise UnreadableRun(f"{name}: {key}={record.get(key)!r} is not a finite number or null")
            acc_at = record.get("test_acc_at")
            if acc_at is not None and not (
                isinstance(acc_at, dict) and all(_finite_or_none(v) for v in acc_at.values())
            ):
                raise UnreadableRun(f"{name}: test_acc_at={acc_at!r} is not an object of finite numbers")
            if record.get("pe") is not None and not isinstance(record.get("pe"), dict):
                raise UnreadableRun(f"{name}: pe={record.get('pe')!r} is not an object")


def interrupted_or(status: str, failure: dict[str, Any]) -> str:
    """``interrupted`` where the job's latest record (``status`` from ``job_result``) is a user stop
    (failure.json ``"status": "interrupted"``: resumable, not a failure), else ``status``."""
    if status == "failed" and failure.get("status") == "interrupted":
        return "interrupted"
    return status


def _finite_or_none(value: Any) -> bool:
    if value is None:
        return True
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def find_runs(
    root: str | os.PathLike[str],
    *,
    jobs_only: bool = False,
    skipped: list[tuple[Path, str]] | None = None,
) -> list[Run]:
    """Every run directory under ``root`` (``root`` itself included), sorted by path: a directory with
    ``run.json`` or ``.hydra/config.yaml``. A run's ``sweep`` is its parent directory relative to ``root``,
    named after ``root`` itself where that is ``root`` (or the run is ``root``).

    ``jobs_only``: only ``root``'s direct children (the job directories of one multirun sweep).
    ``skipped``: when given, runs that fail ``Run.check`` are left out and listed in it as (path, why).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"report: DIR={str(root)!r} is not a directory")
    markers = (RUN_NAME, ".hydra/config.yaml")
    found: set[Path] = set()
    for marker in markers:
        pattern = f"*/{marker}" if jobs_only else f"**/{marker}"
        candidates = [root / marker] if not jobs_only and (root / marker).is_file() else []
        for path in [*candidates, *root.glob(pattern)]:
            found.add(path.parent.parent if marker.startswith(".hydra") else path.parent)
    runs = []
    for run_dir in sorted(found):
        if any(part == "wandb" for part in run_dir.relative_to(root).parts):
            continue  # W&B's own run directories copy the config
        parent = run_dir.parent.relative_to(root).as_posix() if run_dir != root else "."
        sweep = parent if parent != "." else (root.resolve().name or ".")
        metrics, failure = _read_record(run_dir / METRICS_NAME), _read_record(run_dir / FAILURE_NAME)
        run = Run(run_dir, sweep, metrics or {}, failure or {})
        if skipped is not None:
            try:
                run.check()
            except Exception as exc:  # noqa: BLE001 - whatever a foreign file holds: skip and say why
                skipped.append(
                    (run_dir, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
                )
                continue
        runs.append(run)
    return runs
