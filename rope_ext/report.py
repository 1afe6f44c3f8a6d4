"""Compare the runs of a sweep: ``python -m rope_ext.report DIR``.

Finds every run under ``DIR`` (a directory holding ``.hydra/config.yaml``: a single run's Hydra output
directory or each job directory of a multirun), reads its ``metrics.json`` and config, and writes into
``DIR`` (or ``--out``):

* ``report.csv``: one row per run, failed and missing runs included (``status``), each speed figure also as
  a ratio to the mean of the ``pe=none`` runs of the same sweep, model, input size and batch size (columns
  ``*_ratio_vs_none``);
* ``stats.csv``: one row per arm (the runs that differ only in seed) of each table (a sweep on a dataset):
  final-model test accuracy as mean, 95 % t-CI and n, the difference to ``--baseline`` with 95 % CI,
  p-value (paired over common seeds, else Welch) and Holm-adjusted p, the same per evaluation size
  (``acc@S_*``), the minimal detectable difference at 80 % power and the ``command`` rerunning one seed
  (statistics from ``rope_ext.stats``, i.e. scipy.stats);
* ``report.md``: those tables (``n.s.`` where a difference's CI includes 0), every group as mean ± std
  (sample std over seeds) with the ``lie_block`` control's measured relative-property error beside its
  accuracy, and a list of the failed (``failure.json`` or a non-ok ``metrics.json``) and missing runs;
* ``acc_vs_block.png``, ``throughput_vs_block.png``, ``acc_vs_resolution.png`` with 95 % CI bars, the
  chance level and the baseline marked;
* a ``wandb.Table`` of the rows (and the plots) logged to each sweep's W&B group, in ``WANDB_MODE``
  (``offline`` when unset; ``disabled`` skips it). A W&B failure only warns.

A *sweep* is the directory holding the job directories (a multirun's sweep directory; for single runs,
their common parent).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shlex
import statistics
import sys
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from rope_ext import stats

__all__ = ["Run", "find_runs", "main", "write_report"]

SPEEDS = ("train_img_per_s", "infer_img_per_s", "infer_latency_ms")
RATIO_SUFFIX = "_ratio_vs_none"
PE_KEYS = ("name", "block", "impl", "mixed", "dims", "theta", "learnable", "init")
# keys of the run config that never make two runs different experiments
_IGNORED_TOP = {"hydra", "wandb", "run_id", "launcher"}
_IGNORED_LEAF = {"seed"}
# columns shown for a group in report.md; config differences outside these land in ``other``
_SHOWN_CONFIG = {"pe.name", "pe.block", "pe.impl", "pe.mixed", "pe.dims", "model.name", "dataset.name"}
_SHOWN_CONFIG |= {"dataset.input_size"}

CSV_COLUMNS = [
    "run_dir",
    "sweep",
    "status",
    "error",
    "variant",
    "block",
    "impl",
    "mixed",
    "dims",
    "theta",
    "learnable",
    "init",
    "model",
    "dataset",
    "input_size",
    "batch_size",
    "seed",
    "test_acc",
    "val_acc",
    "best_val_acc",
    "best_epoch",
    "relative_error",
    "train_img_per_s",
    "train_img_per_s" + RATIO_SUFFIX,
    "infer_img_per_s",
    "infer_img_per_s" + RATIO_SUFFIX,
    "infer_latency_ms",
    "infer_latency_ms" + RATIO_SUFFIX,
    "peak_mem_mb",
    "params",
    "epochs_done",
    "overrides",
]


@dataclass
class Run:
    """One run directory: its config, its metrics (empty when missing) and what the report derives."""

    path: Path
    sweep: str
    config: dict[str, Any]
    metrics: dict[str, Any]
    overrides: list[str] = field(default_factory=list)
    ratios: dict[str, float | None] = field(default_factory=dict)

    failure: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        """ok (a finished metrics.json), failed (failure.json or a non-ok metrics.json), or missing."""
        if self.metrics and self.metrics.get("status", "ok") == "ok":
            return "ok"
        if self.failure:
            return str(self.failure.get("status") or "failed")
        if not self.metrics:
            return "missing"
        return str(self.metrics.get("status"))

    @property
    def error(self) -> str:
        if self.status == "ok":
            return ""
        record = self.failure or self.metrics
        if not record:
            return "neither metrics.json nor failure.json (the job did not finish or never started)"
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
        node: Any = self.config
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    def pe(self, key: str) -> Any:
        pe = self.metrics.get("pe")
        if isinstance(pe, dict) and key in pe:
            value = pe[key]
        else:
            value = self.cfg(f"pe.{key}")
        if key == "block" and value is None and str(self.variant).startswith("axial2"):
            value = 2
        return value

    @property
    def variant(self) -> str:
        pe = self.metrics.get("pe")
        if isinstance(pe, dict) and pe.get("name"):
            return str(pe["name"])
        return str(self.cfg("pe.name", "?"))

    def field_value(self, name: str) -> Any:
        """A metric, with the config as fallback for the identifying fields of failed or missing runs."""
        fallbacks = {
            "model": "model.name",
            "dataset": "dataset.name",
            "input_size": "dataset.input_size",
            "seed": "seed",
            "batch_size": "train.batch_size",
        }
        if name in self.metrics and self.metrics[name] is not None:
            return self.metrics[name]
        if name in fallbacks:
            return self.cfg(fallbacks[name])
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

    def row(self, eval_sizes: Sequence[int]) -> dict[str, Any]:
        row: dict[str, Any] = {
            "run_dir": "",
            "sweep": self.sweep,
            "status": self.status,
            "error": self.error,
            "variant": self.variant,
            "overrides": " ".join(self.overrides),
        }
        for key in ("block", "impl", "mixed", "dims", "theta", "learnable", "init"):
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
        acc_at = self.metrics.get("test_acc_at") or {}
        for size in eval_sizes:
            row[f"test_acc_at_{size}"] = acc_at.get(str(size), acc_at.get(size))
        return row


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def _load_config(path: Path) -> dict[str, Any]:
    conf = OmegaConf.load(path)
    try:
        container = OmegaConf.to_container(conf, resolve=True)
    except Exception:  # interpolations needing Hydra's runtime (${hydra:...}): keep them unresolved
        container = OmegaConf.to_container(conf, resolve=False)
    return container if isinstance(container, dict) else {}


def find_runs(root: str | os.PathLike[str]) -> list[Run]:
    """Every run directory under ``root`` (``root`` itself included), sorted by path."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"report: DIR={str(root)!r} is not a directory")
    runs = []
    for config_path in sorted(root.rglob(".hydra/config.yaml")):
        run_dir = config_path.parent.parent
        if any(part == "wandb" for part in run_dir.relative_to(root).parts):
            continue
        metrics = _read_json(run_dir / "metrics.json")
        failure = _read_json(run_dir / "failure.json")
        overrides: list[str] = []
        overrides_path = run_dir / ".hydra" / "overrides.yaml"
        if overrides_path.is_file():
            loaded = OmegaConf.to_container(OmegaConf.load(overrides_path))
            overrides = [str(o) for o in loaded] if isinstance(loaded, list) else []
        sweep = run_dir.parent.relative_to(root).as_posix() if run_dir != root else "."
        runs.append(Run(run_dir, sweep, _load_config(config_path), metrics, overrides, failure=failure))
    return runs


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        return {"status": "failed", "error": f"unreadable {path.name}: {exc}"}
    return data if isinstance(data, dict) else {"status": "failed", "error": f"{path.name} is not an object"}


def _mean(values: Iterable[Any]) -> float | None:
    nums = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    nums = [v for v in nums if math.isfinite(v)]
    return statistics.fmean(nums) if nums else None


def _stats(values: Iterable[Any]) -> tuple[float | None, float | None, int]:
    nums = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    nums = [v for v in nums if math.isfinite(v)]
    if not nums:
        return None, None, 0
    std = statistics.stdev(nums) if len(nums) > 1 else None
    return statistics.fmean(nums), std, len(nums)


def _speed_key(run: Run) -> tuple[Any, ...]:
    return (run.sweep, run.field_value("model"), run.field_value("input_size"), run.field_value("batch_size"))


def compute_ratios(runs: Sequence[Run]) -> None:
    """Fill ``run.ratios``: each speed over the mean of the ok ``none`` runs with the same speed key."""
    baselines: dict[tuple[Any, ...], dict[str, float | None]] = {}
    by_key: dict[tuple[Any, ...], list[Run]] = {}
    for run in runs:
        if run.status == "ok" and run.variant == "none":
            by_key.setdefault(_speed_key(run), []).append(run)
    for key, group in by_key.items():
        baselines[key] = {s: _mean(r.metrics.get(s) for r in group) for s in SPEEDS}
    for run in runs:
        base = baselines.get(_speed_key(run), {})
        for speed in SPEEDS:
            value, ref = run.metrics.get(speed), base.get(speed)
            ok = isinstance(value, (int, float)) and ref not in (None, 0)
            run.ratios[speed] = float(value) / ref if ok else None


def _eval_sizes(runs: Sequence[Run]) -> list[int]:
    sizes: set[int] = set()
    for run in runs:
        for key in run.metrics.get("test_acc_at") or {}:
            try:
                sizes.add(int(key))
            except ValueError:
                continue
    return sorted(sizes)


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value != 0 and abs(value) < 10 ** (-digits):
            return f"{value:.1e}"
        return f"{value:.{digits}f}"
    return str(value)


def _fmt_stats(values: Iterable[Any], digits: int = 2) -> str:
    mean, std, n = _stats(values)
    if mean is None:
        return ""
    if std is None or n < 2:
        return _fmt(mean, digits)
    if mean != 0 and abs(mean) < 10 ** (-digits):  # tiny values (relative errors): scientific for both
        return f"{mean:.1e} ± {std:.1e}"
    return f"{_fmt(mean, digits)} ± {_fmt(std, digits)}"


@dataclass
class Group:
    """Runs that differ only in seed."""

    runs: list[Run]
    other: str = ""

    @property
    def first(self) -> Run:
        return self.runs[0]

    def values(self, key: str) -> list[Any]:
        return [r.metrics.get(key) for r in self.runs]

    def label(self) -> str:
        r = self.first
        parts = [r.variant]
        if r.variant not in ("none", "axial2_matrix", "axial2_complex") and r.pe("block") is not None:
            parts.append(f"N={r.pe('block')}")
        if r.pe("mixed"):
            parts.append("mixed")
        if r.pe("impl") and r.variant in ("axial_block", "lie_block"):
            parts.append(str(r.pe("impl")))
        if r.pe("dims") == 1:
            parts.append("1-D")
        return " ".join(parts)


def group_runs(runs: Sequence[Run]) -> list[Group]:
    """Group the ok runs by identity (config minus seed); name the config keys that differ elsewhere."""
    groups: dict[tuple[Any, ...], list[Run]] = {}
    for run in runs:
        if run.status == "ok":
            groups.setdefault(run.identity(), []).append(run)
    result = [Group(sorted(g, key=lambda r: str(r.field_value("seed")))) for g in groups.values()]
    # config keys that vary between groups but have no column of their own
    flats = [dict(g.first.identity()) for g in result]
    keys = sorted({k for f in flats for k in f})
    shown = [tuple(f.get(k) for k in sorted(_SHOWN_CONFIG)) for f in flats]

    def informative(key: str) -> bool:
        """Varies between groups and is not already determined by the shown columns (pe.init by pe.name)."""
        if key == "__sweep__" or key in _SHOWN_CONFIG or len({f.get(key) for f in flats}) < 2:
            return False
        by_shown: dict[tuple[Any, ...], set[Any]] = {}
        for s, f in zip(shown, flats):
            by_shown.setdefault(s, set()).add(f.get(key))
        return any(len(values) > 1 for values in by_shown.values())

    varying = [k for k in keys if informative(k)]
    for group, flat in zip(result, flats):
        # null means "the default" (e.g. model.pos_embed: none for rotary variants): not shown
        group.other = " ".join(f"{k}={flat[k]}" for k in varying if k in flat and flat[k] != "null")
    result.sort(key=_group_order)
    return result


_VARIANT_ORDER = {"none": 0, "axial2_matrix": 1, "axial2_complex": 2, "axial_block": 3, "lie_block": 4}


def _group_order(group: Group) -> tuple[Any, ...]:
    r = group.first
    block = r.pe("block") if isinstance(r.pe("block"), int) else 0
    return (
        r.sweep,
        str(r.field_value("dataset")),
        str(r.field_value("model")),
        _VARIANT_ORDER.get(r.variant, 9),
        bool(r.pe("mixed")),
        str(r.pe("impl")),
        block,
        str(r.field_value("input_size")),
        group.other,
    )


def write_csv(runs: Sequence[Run], path: Path, root: Path) -> list[str]:
    sizes = _eval_sizes(runs)
    columns = CSV_COLUMNS + [f"test_acc_at_{s}" for s in sizes]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for run in runs:
            row = run.row(sizes)
            row["run_dir"] = run.path.relative_to(root).as_posix() if run.path != root else "."
            writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in columns})
    return columns


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_markdown(
    runs: Sequence[Run], groups: Sequence[Group], path: Path, root: Path, stat_lines: Sequence[str] = ()
) -> None:
    sizes = _eval_sizes(runs)
    sweeps = sorted({g.first.sweep for g in groups})
    show_sweep = len(sweeps) > 1
    show_other = any(g.other for g in groups)
    header = ["sweep"] if show_sweep else []
    header += ["variant", "N", "impl", "mixed", "dims", "model", "dataset", "input"]
    header += ["other"] if show_other else []
    header += ["seeds", "test acc %", "val acc %", "rel. error"]
    header += [f"acc@{s} %" for s in sizes]
    header += ["train img/s", "train ×none", "infer img/s", "infer ×none", "latency ms", "peak MB", "params"]
    rows = []
    for g in groups:
        r = g.first
        row = [r.sweep] if show_sweep else []
        row += [
            r.variant,
            _fmt(r.pe("block")),
            _fmt(r.pe("impl")) if r.variant != "none" else "",
            _fmt(r.pe("mixed")) if r.variant != "none" else "",
            _fmt(r.pe("dims")) if r.variant != "none" else "",
            _fmt(r.field_value("model")),
            _fmt(r.field_value("dataset")),
            _fmt(r.field_value("input_size")),
        ]
        row += [g.other] if show_other else []
        seeds = ",".join(str(run.field_value("seed")) for run in g.runs)
        row += [
            seeds,
            _fmt_stats(g.values("test_acc")),
            _fmt_stats(g.values("val_acc")),
            _fmt_stats(g.values("relative_error"), 3),
        ]
        for size in sizes:
            row.append(_fmt_stats((run.metrics.get("test_acc_at") or {}).get(str(size)) for run in g.runs))
        row += [
            _fmt_stats(g.values("train_img_per_s"), 0),
            _fmt_stats((run.ratios.get("train_img_per_s") for run in g.runs), 3),
            _fmt_stats(g.values("infer_img_per_s"), 0),
            _fmt_stats((run.ratios.get("infer_img_per_s") for run in g.runs), 3),
            _fmt_stats(g.values("infer_latency_ms"), 2),
            _fmt_stats(g.values("peak_mem_mb"), 0),
            _fmt(r.metrics.get("params")),
        ]
        rows.append(row)
    bad = [run for run in runs if run.status != "ok"]
    n_ok = sum(run.status == "ok" for run in runs)
    text = [
        f"# Report: {root.name or root}",
        "",
        f"{len(runs)} runs: {n_ok} ok, {len(bad)} missing or failed. Accuracy is top-1 % on the test split; "
        "mean ± sample std over the seeds listed. `×none` is the speed over the mean of the `none` runs of "
        "the same sweep, model, input size and batch size (> 1 is faster for img/s). `rel. error` is the "
        "measured relative-property error (0 for exact encodings; the `lie_block` control breaks it). "
        "`acc@S` evaluates at an S-pixel input.",
        "",
        *stat_lines,
        "## All groups (mean ± sample std)",
        "",
        _md_table(header, rows) if rows else "No finished runs.",
        "",
        "## Missing or failed runs",
        "",
    ]
    if bad:
        for run in bad:
            rel = run.path.relative_to(root).as_posix() if run.path != root else "."
            ov = " ".join(run.overrides)
            text.append(f"- `{rel}` ({run.status}{': ' + ov if ov else ''}): {run.error}")
    else:
        text.append("None.")
    text.append("")
    plots = [p for p in PLOT_FILES if (path.parent / p).is_file()]
    if plots:
        text += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    path.write_text("\n".join(text))


STAT_COLUMNS = ["acc_mean", "acc_ci_low", "acc_ci_high", "n", "diff", "diff_ci_low", "diff_ci_high"]
STAT_COLUMNS += ["p_value", "p_holm"]


def _arm_name(group: Group) -> str:
    name = group.first.arm
    return f"{name} [{group.other}]" if group.other else name


def _table_key(group: Group) -> tuple[str, str]:
    """The runs one statistics table compares: one sweep on one dataset."""
    return (group.first.sweep, str(group.first.field_value("dataset")))


def _seed_values(group: Group, get: Any) -> dict[int, Any]:
    return {int(r.field_value("seed") or 0): get(r) for r in group.runs}


def _stat_block(prefix: str, group: Group, base: Group | None, get: Any) -> dict[str, Any]:
    """``<prefix>_mean, _ci_low, _ci_high, n`` and the difference to ``base`` (``diff``, CI, p-value)."""
    m = stats.mean_ci([get(r) for r in group.runs])
    out: dict[str, Any] = {f"{prefix}_mean": m.mean, f"{prefix}_ci_low": m.low, f"{prefix}_ci_high": m.high}
    out[f"{prefix}_n"] = m.n
    d = (
        stats.compare(_seed_values(group, get), _seed_values(base, get))
        if base and base is not group
        else None
    )
    pre = "" if prefix == "acc" else f"{prefix}_"
    out[f"{pre}diff"] = d.diff if d else None
    out[f"{pre}diff_ci_low"] = d.low if d else None
    out[f"{pre}diff_ci_high"] = d.high if d else None
    out[f"{pre}p_value"] = d.p_value if d else None
    out[f"{pre}paired"] = d.paired if d else None
    out[f"{pre}significant"] = d.significant if d else None
    return out


def arm_statistics(
    groups: Sequence[Group], baseline: str | None, sizes: Sequence[int]
) -> tuple[list[dict[str, Any]], dict[tuple[str, str], dict[str, Any]]]:
    """One row per arm (group of seeds): test accuracy of the final model as mean, 95 % t-CI, n; its
    difference to the ``baseline`` arm of the same table (paired over seeds when both ran the same seeds,
    Welch otherwise) with 95 % CI, p-value and Holm-adjusted p over the table's arms; the same for each
    evaluation size (``acc@S``); the command that reruns the arm's first seed. Also, per table, the
    pooled seed std and the minimal difference detectable at 80 % power with the table's median n."""
    tables: dict[tuple[str, str], list[Group]] = {}
    for g in groups:
        tables.setdefault(_table_key(g), []).append(g)
    rows: list[dict[str, Any]] = []
    info: dict[tuple[str, str], dict[str, Any]] = {}
    for key, members in tables.items():
        names = {id(g): _arm_name(g) for g in members}
        wanted = baseline if baseline is not None else "none"
        base = next((g for g in members if wanted in (names[id(g)], g.first.arm, g.label())), None)
        metrics: list[tuple[str, Any]] = [("acc", lambda r: r.metrics.get("test_acc"))]
        metrics += [
            (f"acc@{s}", lambda r, s=s: (r.metrics.get("test_acc_at") or {}).get(str(s))) for s in sizes
        ]
        table_rows = []
        for g in members:
            row: dict[str, Any] = {"table": f"{key[0]} / {key[1]}", "arm": names[id(g)]}
            row["baseline"] = names[id(base)] if base else ""
            row["seeds"] = ",".join(str(r.field_value("seed")) for r in g.runs)
            for prefix, get in metrics:
                row.update(_stat_block(prefix, g, base, get))
            row["n"] = row.pop("acc_n")
            for extra in ("val_acc", "test_acc_shifted", "shift_error"):
                row[f"{extra}_mean"] = stats.mean_ci(g.values(extra)).mean
            row["command"] = g.first.command()
            table_rows.append(row)
        for prefix in ["acc"] + [f"acc@{s}" for s in sizes]:
            pre = "" if prefix == "acc" else f"{prefix}_"
            adjusted = stats.holm([r[f"{pre}p_value"] for r in table_rows])
            for r, p in zip(table_rows, adjusted):
                r[f"{pre}p_holm"] = p
        std, df = stats.pooled_std([g.values("test_acc") for g in members])
        ns = sorted(r["n"] for r in table_rows)
        n = ns[len(ns) // 2] if ns else 0
        mdd = stats.min_detectable_diff(std, n) if std else None
        info[key] = {
            "pooled_std": std,
            "df": df,
            "n": n,
            "mdd": mdd,
            "baseline": names[id(base)] if base else "",
        }
        for r in table_rows:
            r["mdd_80"] = mdd
        rows += table_rows
    return rows, info


def _stat_columns(sizes: Sequence[int]) -> list[str]:
    cols = ["table", "arm", "baseline", "seeds", *STAT_COLUMNS, "paired"]
    for s in sizes:
        p = f"acc@{s}"
        cols += [f"{p}_mean", f"{p}_ci_low", f"{p}_ci_high", f"{p}_n", f"{p}_diff", f"{p}_diff_ci_low"]
        cols += [f"{p}_diff_ci_high", f"{p}_p_value", f"{p}_p_holm"]
    return cols + ["val_acc_mean", "test_acc_shifted_mean", "shift_error_mean", "mdd_80", "command"]


def write_stats_csv(rows: Sequence[dict[str, Any]], path: Path, sizes: Sequence[int]) -> None:
    columns = _stat_columns(sizes)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in columns})


def _ci(mean: Any, low: Any, high: Any, digits: int = 2) -> str:
    if mean is None:
        return ""
    if low is None:
        return _fmt(mean, digits)
    return f"{_fmt(mean, digits)} [{_fmt(low, digits)}, {_fmt(high, digits)}]"


def _diff_cell(row: dict[str, Any], pre: str = "") -> str:
    diff = row.get(f"{pre}diff")
    if diff is None or row["arm"] == row["baseline"]:
        return "baseline" if row["arm"] == row["baseline"] else ""
    cell = f"{diff:+.2f}"
    low, high = row.get(f"{pre}diff_ci_low"), row.get(f"{pre}diff_ci_high")
    if low is not None:
        cell += f" [{low:+.2f}, {high:+.2f}]"
    p, ph = row.get(f"{pre}p_value"), row.get(f"{pre}p_holm")
    if p is not None:
        cell += f" p={_fmt_p(p)} (Holm {_fmt_p(ph)})"
    if not row.get(f"{pre}significant"):
        cell += " n.s."
    return cell


def _fmt_p(p: Any) -> str:
    return "" if p is None else (f"{p:.1e}" if p < 1e-3 else f"{p:.3f}")


def statistics_markdown(
    rows: Sequence[dict[str, Any]], info: dict[Any, Any], sizes: Sequence[int]
) -> list[str]:
    """The per-table statistics section of report.md."""
    text = [
        "## Arms: mean, 95 % CI, difference to the baseline",
        "",
        "Accuracy is the test accuracy (%) of the final model (after the last epoch; validation selects the "
        "learning rate, nothing selects on test). `mean [95 % t-CI]` over the n seeds; `diff` is arm − "
        "baseline with its 95 % CI, p-value of a paired t-test over the seeds when both arms ran the same "
        "seeds (Welch's t-test otherwise) and the Holm-adjusted p over the arms of the table; `n.s.`: the "
        "CI includes 0. Computed with scipy.stats (rope_ext/stats.py).",
        "",
    ]
    by_table: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_table.setdefault(row["table"], []).append(row)
    for key, meta in info.items():
        name = f"{key[0]} / {key[1]}"
        table = by_table.get(name, [])
        header = ["arm", "n", "test acc %", "diff to " + (meta["baseline"] or "(no baseline)")]
        header += (
            [f"acc@{s} %" for s in sizes] + [f"diff@{s}" for s in sizes] + ["val acc %", "command (one seed)"]
        )
        body = []
        for r in table:
            cells = [
                r["arm"],
                str(r["n"]),
                _ci(r["acc_mean"], r["acc_ci_low"], r["acc_ci_high"]),
                _diff_cell(r),
            ]
            cells += [_ci(r[f"acc@{s}_mean"], r[f"acc@{s}_ci_low"], r[f"acc@{s}_ci_high"]) for s in sizes]
            cells += [_diff_cell(r, f"acc@{s}_") for s in sizes]
            cells += [_fmt(r["val_acc_mean"]), f"`{r['command']}`"]
            body.append(cells)
        mdd = meta["mdd"]
        text += [f"### {name}", "", _md_table(header, body), ""]
        if mdd is not None:
            text += [
                f"Pooled seed std {meta['pooled_std']:.2f} points ({meta['df']} df): with n = {meta['n']} seeds "
                f"per arm a two-sided t-test at 5 % detects a true difference of {mdd:.2f} points with 80 % "
                "power; smaller differences can go undetected.",
                "",
            ]
        else:
            text += ["Fewer than two seeds per arm: no CI, no minimal detectable difference.", ""]
    return text


PLOT_FILES = ("acc_vs_block.png", "throughput_vs_block.png", "acc_vs_resolution.png")


def _series(groups: Sequence[Group]) -> dict[str, list[Group]]:
    """Groups that differ only in block size form one line; label by what else varies."""
    series: dict[tuple[Any, ...], list[Group]] = {}
    for g in groups:
        key = tuple((k, v) for k, v in g.first.identity() if k != "pe.block" and k != "dataset.input_size")
        if g.first.variant in ("axial2_matrix", "axial2_complex", "none"):
            key = tuple((k, v) for k, v in g.first.identity() if k != "pe.block")
        series.setdefault(key, []).append(g)
    contexts = {
        (str(s[0].first.field_value("dataset")), str(s[0].first.field_value("model")), s[0].first.sweep)
        for s in series.values()
    }
    out: dict[str, list[Group]] = {}
    for gs in series.values():
        r = gs[0].first
        label = gs[0].label().replace(f" N={r.pe('block')}", "")
        if gs[0].other:
            label += f" [{gs[0].other}]"
        if len(contexts) > 1:
            label += f" ({r.field_value('dataset')}, {r.field_value('model')})"
        while label in out:
            label += "'"
        out[label] = sorted(gs, key=lambda g: g.first.pe("block") or 0)
    return out


def _x_block(group: Group) -> float | None:
    block = group.first.pe("block")
    return float(block) if isinstance(block, (int, float)) else None


_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")
_LINESTYLES = ("-", "--", "-.", ":")
_CHANCE = {"relpos": 12.5, "digits": 10.0, "cifar10": 10.0, "cifar100": 1.0}


def _chance(runs: Sequence[Run]) -> float | None:
    """Top-1 chance level (%) when all runs share one dataset with a known class count."""
    names = {str(r.field_value("dataset")) for r in runs}
    if len(names) != 1:
        return None
    name = names.pop()
    if name == "fake":
        classes = runs[0].cfg("dataset.num_classes")
        return 100.0 / classes if classes else None
    return _CHANCE.get(name)


def _ci_bars(values: Sequence[Any], nonneg: bool) -> tuple[float, float, float, int] | None:
    """(mean, lower error, upper error, n) of the 95 % t-CI; the lower bar stops at 0 for a quantity that
    cannot be negative. None without values."""
    m = stats.mean_ci(values)
    if m.mean is None:
        return None
    if m.low is None:
        return m.mean, 0.0, 0.0, m.n
    low = max(m.low, 0.0) if nonneg else m.low
    return m.mean, m.mean - low, m.high - m.mean, m.n


def _plot_metric_vs_block(
    ax: Any, groups: Sequence[Group], key: Any, ylabel: str, title: str, baseline: str | None = None
) -> bool:
    """One line per series with 95 % t-CI bars (markers, line styles and a small x offset keep overlapping
    series apart); variants without a block size as horizontal lines with a CI band. True if drawn."""
    drawn = False
    blocks: set[float] = set()
    for i, (label, gs) in enumerate(_series(groups).items()):
        color, marker, style = f"C{i % 10}", _MARKERS[i % len(_MARKERS)], _LINESTYLES[i % len(_LINESTYLES)]
        is_base = baseline is not None and any(baseline in (g.first.arm, _arm_name(g)) for g in gs)
        xs, means, lows, highs = [], [], [], []
        for g in gs:
            bars = _ci_bars([key(run) for run in g.runs], nonneg=True)
            if bars is None:
                continue
            mean, lo, hi, n = bars
            x = _x_block(g)
            if x is None:
                name = f"{label} (n={n})" + (" — baseline" if is_base else "")
                ax.axhline(
                    mean,
                    color="k" if is_base else color,
                    linestyle=style,
                    lw=2.2 if is_base else 1.4,
                    label=name,
                )
                if lo or hi:
                    ax.axhspan(mean - lo, mean + hi, color="k" if is_base else color, alpha=0.12)
                drawn = True
                continue
            xs.append(x * (1 + 0.03 * (i % 5 - 2)))  # a few % apart: coincident points stay visible
            blocks.add(x)
            means.append(mean)
            lows.append(lo)
            highs.append(hi)
        if xs:
            ax.errorbar(
                xs,
                means,
                yerr=[lows, highs],
                color=color,
                marker=marker,
                linestyle=style,
                capsize=3,
                label=label + (" — baseline" if is_base else ""),
            )
            drawn = True
    ax.set_xlabel("block size N")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    if blocks and max(blocks) > 8:
        ax.set_xscale("log", base=2)
    if blocks:
        ax.set_xticks(sorted(blocks), [str(int(b)) for b in sorted(blocks)])
    ax.grid(alpha=0.3)
    return drawn


def _no_data(ax: Any, title: str, why: str) -> None:
    """A panel that says in words why it has nothing to show (never a blank axis)."""
    ax.set_title(title, fontsize=9)
    ax.text(0.5, 0.5, why, ha="center", va="center", wrap=True, transform=ax.transAxes, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def _legend(ax: Any) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize=7, loc="best")


def _context(runs: Sequence[Run], groups: Sequence[Group], run_set: str = "") -> str:
    """Title suffix: the run set, dataset(s), epochs, seeds per arm, what the bars are."""
    ok = [r for r in runs if r.status == "ok"]
    datasets = ", ".join(sorted({str(r.field_value("dataset")) for r in ok})) or "?"
    epochs = sorted({int(r.cfg("train.epochs")) for r in ok if isinstance(r.cfg("train.epochs"), int)})
    ns = sorted({len(g.runs) for g in groups})
    ep = "/".join(map(str, epochs)) or "?"
    seeds = "/".join(map(str, ns)) or "0"
    where = f"{run_set}: " if run_set else ""
    return f"{where}{datasets}, {ep} epochs, {seeds} seeds per arm; bars: 95 % t-CI of the mean"


def write_plots(
    runs: Sequence[Run],
    groups: Sequence[Group],
    out: Path,
    stat_rows: Sequence[dict[str, Any]] = (),
    baseline: str | None = None,
    run_set: str = "",
) -> list[Path]:
    """The three PNG plots; a plot with nothing to show is not written. Returns the written paths."""
    from matplotlib.figure import Figure

    base = baseline or next((r["baseline"] for r in stat_rows if r.get("baseline")), None)
    context = _context(runs, groups, run_set)
    chance = _chance(runs)
    written = []
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.add_subplot()
    if _plot_metric_vs_block(
        ax,
        groups,
        lambda r: r.metrics.get("test_acc"),
        "test accuracy (%)",
        f"Test accuracy vs block size\n{context}",
        base,
    ):
        if chance is not None:
            ax.axhline(chance, color="grey", linestyle=":", lw=1, label=f"chance ({chance:g} %)")
        _legend(ax)
        fig.savefig(out / "acc_vs_block.png", dpi=110)
        written.append(out / "acc_vs_block.png")

    fig = Figure(figsize=(12, 5), layout="constrained")
    axes = fig.subplots(1, 2)
    drawn = False
    for ax, key, name in (
        (axes[0], "train_img_per_s", "Training throughput"),
        (axes[1], "infer_img_per_s", "Inference throughput"),
    ):
        has = any(isinstance(r.metrics.get(key), (int, float)) for g in groups for r in g.runs)
        if has:
            drawn |= _plot_metric_vs_block(
                ax, groups, lambda r, k=key: r.metrics.get(k), "images/s", f"{name}\n{context}", base
            )
            _legend(ax)
        else:
            _no_data(ax, name, f"no run recorded {key}\n(e.g. too few steps per epoch to time)")
    if drawn:
        fig.savefig(out / "throughput_vs_block.png", dpi=110)
        written.append(out / "throughput_vs_block.png")

    sizes = _eval_sizes(runs)
    if sizes:
        fig = Figure(figsize=(8, 5), layout="constrained")
        ax = fig.add_subplot()
        labels = {}
        span = max(sizes) - min(sizes) or 1
        for i, g in enumerate(groups):
            xs, means, lows, highs = [], [], [], []
            for size in sizes:
                bars = _ci_bars([(r.metrics.get("test_acc_at") or {}).get(str(size)) for r in g.runs], True)
                if bars is not None:
                    xs.append(size + span * 0.006 * (i % 7 - 3))
                    means.append(bars[0])
                    lows.append(bars[1])
                    highs.append(bars[2])
            if xs:
                label = _arm_name(g) + f" @{g.first.field_value('input_size')}"
                is_base = base is not None and base in (g.first.arm, _arm_name(g))
                label += " — baseline" if is_base else ""
                while label in labels:
                    label += "'"
                labels[label] = True
                ax.errorbar(
                    xs,
                    means,
                    yerr=[lows, highs],
                    marker=_MARKERS[i % len(_MARKERS)],
                    capsize=3,
                    linestyle=_LINESTYLES[i % len(_LINESTYLES)],
                    color="k" if is_base else f"C{i % 10}",
                    lw=2.2 if is_base else 1.2,
                    label=label,
                )
        if chance is not None:
            ax.axhline(chance, color="grey", linestyle=":", lw=1, label=f"chance ({chance:g} %)")
        ax.set_xlabel("evaluation input size (px)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"Accuracy vs evaluation resolution\n{context}", fontsize=9)
        ax.set_xticks(sizes)
        ax.grid(alpha=0.3)
        _legend(ax)
        fig.savefig(out / "acc_vs_resolution.png", dpi=110)
        written.append(out / "acc_vs_resolution.png")
    return written


def log_to_wandb(
    runs: Sequence[Run], columns: Sequence[str], out: Path, root: Path, plots: Sequence[Path]
) -> list[str]:
    """Log the report rows as a ``wandb.Table`` to each sweep's group. Never raises: failures warn."""
    mode = os.environ.get("WANDB_MODE", "offline")
    if mode == "disabled":
        return []
    logged = []
    try:
        import wandb

        sweeps: dict[str, list[Run]] = {}
        for run in runs:
            sweeps.setdefault(run.sweep, []).append(run)
        sizes = _eval_sizes(runs)
        for sweep, members in sweeps.items():
            cfg_groups = {r.cfg("wandb.group") for r in members if r.cfg("wandb.group")}
            group = (
                sorted(str(g) for g in cfg_groups)[0]
                if cfg_groups
                else (sweep if sweep != "." else root.resolve().name)
            )
            projects = {r.cfg("wandb.project") for r in members if r.cfg("wandb.project")}
            project = sorted(str(p) for p in projects)[0] if projects else "rope-ext"
            data = []
            for run in members:
                row = run.row(sizes)
                row["run_dir"] = run.path.relative_to(root).as_posix() if run.path != root else "."
                data.append([row.get(c) for c in columns])
            wb = wandb.init(
                project=project,
                group=group,
                job_type="report",
                name=f"report-{group}",
                dir=str(out),
                mode=mode,
                reinit="finish_previous",
            )
            try:
                payload: dict[str, Any] = {"report": wandb.Table(columns=list(columns), data=data)}
                for plot in plots:
                    payload[plot.stem] = wandb.Image(str(plot))
                wb.log(payload)
                logged.append(group)
            finally:
                wb.finish()
    except Exception as exc:  # noqa: BLE001 - W&B must never break the report
        warnings.warn(
            f"report: W&B logging failed ({type(exc).__name__}: {exc}); files are written", stacklevel=2
        )
    return logged


def write_report(
    root: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    wandb_log: bool = True,
    baseline: str | None = None,
) -> dict[str, Any]:
    """Write ``report.csv``, ``report.md`` and the plots for the runs under ``root``; return a summary."""
    root = Path(root)
    runs = find_runs(root)
    if not runs:
        raise FileNotFoundError(
            f"report: DIR={str(root)!r} holds no run directories (none with .hydra/config.yaml)"
        )
    out_dir = Path(out) if out is not None else root
    out_dir.mkdir(parents=True, exist_ok=True)
    compute_ratios(runs)
    groups = group_runs(runs)
    columns = write_csv(runs, out_dir / "report.csv", root)
    sizes = _eval_sizes(runs)
    stat_rows, info = arm_statistics(groups, baseline, sizes)
    write_stats_csv(stat_rows, out_dir / "stats.csv", sizes)
    plots = write_plots(runs, groups, out_dir, stat_rows, baseline, root.resolve().name)
    write_markdown(runs, groups, out_dir / "report.md", root, statistics_markdown(stat_rows, info, sizes))
    logged = log_to_wandb(runs, columns, out_dir, root, plots) if wandb_log else []
    return {
        "runs": len(runs),
        "ok": sum(r.status == "ok" for r in runs),
        "bad": [str(r.path) for r in runs if r.status != "ok"],
        "groups": len(groups),
        "csv": out_dir / "report.csv",
        "stats_csv": out_dir / "stats.csv",
        "stats": stat_rows,
        "md": out_dir / "report.md",
        "plots": plots,
        "wandb_groups": logged,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rope_ext.report",
        description="Tabulate and plot the runs of a sweep (or a whole outputs/ directory).",
    )
    parser.add_argument("dir", help="a multirun sweep directory, a run directory, or outputs/")
    parser.add_argument("--out", default=None, help="where to write the report (default: DIR)")
    parser.add_argument("--no-wandb", action="store_true", help="do not log the table to W&B")
    parser.add_argument(
        "--baseline",
        default=None,
        help="the arm every other arm is compared with (an experiment/arm name such as axial2_complex, or a "
        "variant label); default: none (APE) when present",
    )
    args = parser.parse_args(argv)
    try:
        summary = write_report(args.dir, args.out, wandb_log=not args.no_wandb, baseline=args.baseline)
    except FileNotFoundError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(Path(summary["md"]).read_text())
    print(f"wrote {summary['csv']}, {summary['md']} and {len(summary['plots'])} plots", file=sys.stderr)
    if summary["bad"]:
        print(f"{len(summary['bad'])} missing or failed runs (listed in report.md)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
