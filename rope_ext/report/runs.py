"""Run discovery: every run directory under a root, its config, overrides and records (``Run``).

A run directory holds ``.hydra/config.yaml`` (a single run's Hydra output directory or one job of a
multirun); its ``metrics.json`` and ``failure.json`` are read through ``rope_ext.metrics``. The report, the
tuner and the sweep summary all find their runs here.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from rope_ext.encoding.rotary import ENCODINGS, OPTION_KEYS, PE_NAMES
from rope_ext.metrics import FAILURE_NAME, METRICS_NAME, job_result, read_record
from rope_ext.schema import replicate_keys, unnamed_keys

__all__ = ["FIXED_BLOCK", "FREE_BLOCK", "PE_OPTIONS", "Run", "find_runs"]

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
_IGNORED_TOP = {"hydra", *(k for k in unnamed_keys() if "." not in k)}
_IGNORED_LEAF = {k.rsplit(".", 1)[-1] for k in replicate_keys()}
# identifying fields of failed or missing runs, read from the config when the metrics lack them
_CONFIG_FALLBACK = {
    "model": "model.name",
    "dataset": "dataset.name",
    "input_size": "dataset.input_size",
    "seed": "seed",
    "batch_size": "train.batch_size",
}


@dataclass
class Run:
    """One run directory: its records (empty when missing), its config and overrides (read on first use:
    the sweep summary needs only the records) and what the report derives (``ratios``)."""

    path: Path
    sweep: str
    metrics: dict[str, Any]
    failure: dict[str, Any] = field(default_factory=dict)
    ratios: dict[str, float | None] = field(default_factory=dict)

    @cached_property
    def config(self) -> dict[str, Any]:
        """The job's composed config (``.hydra/config.yaml``), interpolations resolved where possible."""
        conf = OmegaConf.load(self.path / ".hydra" / "config.yaml")
        try:
            container = OmegaConf.to_container(conf, resolve=True)
        except Exception:  # interpolations needing Hydra's runtime (${hydra:...}): keep them unresolved
            container = OmegaConf.to_container(conf, resolve=False)
        return container if isinstance(container, dict) else {}

    @cached_property
    def overrides(self) -> list[str]:
        """The job's Hydra task overrides (``.hydra/overrides.yaml``; none when absent)."""
        path = self.path / ".hydra" / "overrides.yaml"
        if not path.is_file():
            return []
        loaded = OmegaConf.to_container(OmegaConf.load(path))
        return [str(o) for o in loaded] if isinstance(loaded, list) else []

    @cached_property
    def status(self) -> str:
        """ok or failed by the one rule of a job's state (``rope_ext.metrics.job_result``: an ok
        metrics.json unless a newer failure.json says the latest attempt failed); missing when neither
        record exists."""
        if not self.metrics and not self.failure:
            return "missing"
        return str(job_result(self.path).get("status") or "failed")

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
        flat = _flatten({k: v for k, v in self.config.items() if k not in _IGNORED_TOP})
        items = [
            (k, v if isinstance(v, str) else json.dumps(v))
            for k, v in flat.items()
            if k.rsplit(".", 1)[-1] not in _IGNORED_LEAF
        ]
        return (("__sweep__", self.sweep), *sorted(items))

    def row(self, eval_sizes: Sequence[int], root: Path) -> dict[str, Any]:
        """The run's report.csv row, ``run_dir`` relative to the report's ``root``."""
        row: dict[str, Any] = {
            "run_dir": self.relpath(root),
            "sweep": self.sweep,
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


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def find_runs(root: str | os.PathLike[str], *, jobs_only: bool = False) -> list[Run]:
    """Every run directory under ``root`` (``root`` itself included), sorted by path.

    ``jobs_only``: only ``root``'s direct children (the job directories of one multirun sweep).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"report: DIR={str(root)!r} is not a directory")
    pattern = "*/.hydra/config.yaml" if jobs_only else "**/.hydra/config.yaml"
    runs = []
    for config_path in sorted(root.glob(pattern)):
        run_dir = config_path.parent.parent
        if any(part == "wandb" for part in run_dir.relative_to(root).parts):
            continue  # W&B's own run directories copy the config
        sweep = run_dir.parent.relative_to(root).as_posix() if run_dir != root else "."
        metrics, failure = read_record(run_dir / METRICS_NAME), read_record(run_dir / FAILURE_NAME)
        runs.append(Run(run_dir, sweep, metrics or {}, failure or {}))
    return runs
