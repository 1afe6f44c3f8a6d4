"""Comparisons with the baseline arm: per table, arm and evaluation size, the arm's accuracy with its 95 %
t-CI and, paired over seeds, its difference to the baseline with everything ``rope_ext.stats`` gives a
comparison (90 % CI, t and sign-flip p, the lead test, TOST against the pre-registered margin, the paired
MDD); Holm over every comparison the report makes (``stats.csv``, ``runs.csv``, the statistics section of
report.md). docs/statistics.md documents every column and recomputes them from ``runs.csv`` with scipy.

A *table* is one sweep on one dataset, split by learning rate where the sweep sets it on the command line
(``train.lr=1e-3,3e-3``): arms are then compared with the baseline at the same learning rate. The
*family* Holm corrects over is every comparison of the report (every table, arm and evaluation size):
run the report once per study.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rope_ext import stats
from rope_ext.report.convergence import mean_curve, still_rising
from rope_ext.report.groups import Group, arm_name, eval_sizes, swept
from rope_ext.report.plots import chance_level
from rope_ext.report.runs import Run
from rope_ext.report.tables import csv_table

__all__ = [
    "MARGIN_KEYS",
    "NO_MARGINS",
    "HISTORY_COLUMNS",
    "PROVENANCE_COLUMNS",
    "RUN_COLUMNS",
    "STAT_COLUMNS",
    "BaselineError",
    "MarginError",
    "Margins",
    "acc_at",
    "arm_statistics",
    "resolve_baselines",
    "resolve_margins",
    "select_arms",
    "statistics_from_rows",
    "history_rows",
    "write_history_csv",
    "write_runs_csv",
    "write_stats_csv",
]

# the run-config keys of the pre-registered equivalence margins (points of accuracy), written in a study
# preset before its runs: at the training input size, and at every other (extrapolation) size
MARGIN_KEYS = {"train": "study.margin", "extrap": "study.margin_extrap"}
# overrides that split a sweep's arms into one table per learning rate (compared at matched lr)
LR_KEYS = ("train.lr", "optimizer.lr")

# the columns of the individual (Holm over TOST) reading and the near-chance rule, after the older ones
_HOLM_TOST = ["near_chance", "p_tost_holm", "tost_family_size", "verdict_holm"]
STAT_COLUMNS = ["table", "arm", "baseline", "size", "extrap", "seeds", "n"]
STAT_COLUMNS += ["acc_mean", "acc_ci_low", "acc_ci_high", "diff"]
STAT_COLUMNS += [c for c in stats.EQUIVALENCE_COLUMNS if c not in _HOLM_TOST]
STAT_COLUMNS += ["lr", "val_acc_mean", "test_acc_shifted_mean", "shift_error_mean", "command"]
STAT_COLUMNS += [*_HOLM_TOST, "chance", "not_converged"]
# each run's provenance (metrics.json ``provenance``): empty where the record lacks it, never guessed
PROVENANCE_COLUMNS = ["revision", "dirty", "started_at", "finished_at", "processor", "processor_id"]
PROVENANCE_COLUMNS += ["gpu", "threads", "versions", "weights_sha256"]
RUN_COLUMNS = ["table", "arm", "baseline", "size", "extrap", "seed", "acc", "margin", "val_acc", "lr"]
RUN_COLUMNS += ["best_epoch", "epochs_done", "basis_tilt_max_deg", "basis_angle_max_deg", "command"]
RUN_COLUMNS += ["chance", *PROVENANCE_COLUMNS]
HISTORY_COLUMNS = ["table", "arm", "seed", "lr", "epoch", "train_loss", "val_acc", "epoch_lr", "revision"]
# the columns that need a margin: left null (n/a) for a comparison without one
_MARGIN_COLUMNS = ("margin", "p_tost", "p_tost_t", "p_tost_sign_flip", "verdict", *_HOLM_TOST)
ALPHA = 0.05

TableKey = tuple[str, str, str]  # sweep, dataset, the learning-rate overrides ("" when not swept)


class BaselineError(ValueError):
    """``--baseline`` names no arm, or several arms of one table."""


class MarginError(ValueError):
    """A margin that is not a number > 0, runs of one table recording different margins, or a command-line
    margin that contradicts the one the runs recorded."""


@dataclass(frozen=True)
class Margins:
    """Equivalence margins in points: at the training size (``train``) and at other sizes (``extrap``)."""

    train: float | None = None
    extrap: float | None = None

    def at(self, extrap: bool) -> float | None:
        return self.extrap if extrap else self.train


NO_MARGINS = Margins()


def _table_key(group: Group) -> TableKey:
    """The runs one statistics table compares: one sweep on one dataset (at one swept learning rate)."""
    run = group.first
    lr = " ".join(f"{k}={v}" for k, v in swept(run).items() if k in LR_KEYS)
    return (run.sweep, str(run.field_value("dataset")), lr)


def _table_name(key: TableKey) -> str:
    """A statistics table's name, e.g. ``digits_blocks (digits)``, ``blocks (digits) train.lr=0.003``."""
    return f"{key[0]} ({key[1]})" + (f" {key[2]}" if key[2] else "")


def _tables(groups: Sequence[Group]) -> dict[TableKey, list[Group]]:
    tables: dict[TableKey, list[Group]] = {}
    for g in groups:
        tables.setdefault(_table_key(g), []).append(g)
    return tables


def _matches(wanted: str, members: Sequence[Group]) -> list[Group]:
    """The arms of one table that ``wanted`` names, by the first rule that matches any: the arm's name;
    its experiment arm (``+experiment/arm=...``); its variant label (``axial_block N=2 fast``); ``key=value``
    overrides (space-separated, ``+`` optional) that the arm's command sets, e.g. ``pe.block=2``."""
    rules = [
        lambda g: arm_name(g) == wanted,
        lambda g: g.first.arm == wanted,
        lambda g: g.label() == wanted,
    ]
    tokens = wanted.split()
    if tokens and all("=" in t for t in tokens):
        pairs = [t.lstrip("+~").split("=", 1) for t in tokens]
        rules.append(lambda g: all(swept(g.first).get(k) == v for k, v in pairs))
    for rule in rules:
        found = [g for g in members if rule(g)]
        if found:
            return found
    return []


def select_arms(groups: Sequence[Group], arms: Sequence[str], baseline: str | None) -> list[Group]:
    """Only the arms ``arms`` names (each as ``--baseline`` names one, see ``_matches``) and the baseline,
    in every table: a report of a few planned contrasts gets its own Holm family, not the whole sweep's.
    Raises ``BaselineError`` for a name that matches no arm of any table, listing the arms."""
    keep: set[int] = set()
    tables = _tables(groups).values()
    for wanted in [*arms, *([baseline] if baseline is not None else [])]:
        found = [g for members in tables for g in _matches(wanted, members)]
        if not found:
            names = sorted({arm_name(g) for g in groups})
            raise BaselineError(
                f"report: --arms names {wanted!r}, which is no arm. The arms: {', '.join(map(repr, names))}"
            )
        keep |= {id(g) for g in found}
    return [g for g in groups if id(g) in keep]


def resolve_baselines(groups: Sequence[Group], baseline: str | None) -> dict[TableKey, Group | None]:
    """The baseline arm of each statistics table (see ``_matches``): ``baseline``, else the arm named or
    labelled ``none`` where there is one. Raises ``BaselineError`` when ``baseline`` names no arm of any
    table, or more than one arm of a table, listing the arms it could name."""
    out: dict[TableKey, Group | None] = {}
    for key, members in _tables(groups).items():
        found = _matches(baseline if baseline is not None else "none", members)
        if baseline is not None and len(found) > 1:
            raise BaselineError(
                f"report: --baseline {baseline!r} names {len(found)} arms of {_table_name(key)} "
                f"({', '.join(repr(arm_name(g)) for g in found)}); name one of them"
            )
        out[key] = found[0] if found else None
    if baseline is not None and not any(out.values()):
        names = sorted({arm_name(g) for g in groups})
        raise BaselineError(
            f"report: --baseline {baseline!r} names no arm. The arms: {', '.join(map(repr, names))} (or "
            "their key=value overrides, or a variant label such as 'axial_block N=2 fast')"
        )
    return out


def _margin_value(where: str, value: Any) -> float | None:
    """``value`` as a margin (None when absent); ``MarginError`` unless a finite number > 0."""
    if value is None:
        return None
    ok = (
        isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    )
    if not ok:
        raise MarginError(
            f"report: {where}={value!r} is not an equivalence margin; allowed: a finite number of accuracy "
            "points > 0 (e.g. 1.5). Nothing was written."
        )
    return float(value)


def resolve_margins(groups: Sequence[Group], given: Margins = NO_MARGINS) -> dict[TableKey, Margins]:
    """Each table's margins: the ones its runs recorded in their config (``MARGIN_KEYS``: pre-registered in
    the study preset), else ``given`` (``--margin``, ``--margin-extrap``). Raises ``MarginError`` for a
    value that is not a number > 0, runs of one table that recorded different margins, or a ``given``
    margin that differs from the recorded one (a margin chosen after the runs is not pre-registered)."""
    _margin_value("--margin", given.train)
    _margin_value("--margin-extrap", given.extrap)
    out: dict[TableKey, Margins] = {}
    for key, members in _tables(groups).items():
        chosen: dict[str, float | None] = {}
        for kind, config_key in MARGIN_KEYS.items():
            option = "--margin" if kind == "train" else "--margin-extrap"
            recorded = {_margin_value(config_key, r.cfg(config_key)) for g in members for r in g.runs} - {
                None
            }
            cli = getattr(given, kind)
            if len(recorded) > 1:
                raise MarginError(
                    f"report: the runs of {_table_name(key)} recorded different {config_key} values "
                    f"({', '.join(map(str, sorted(recorded)))}); a study has one pre-registered margin. "
                    "Nothing was written."
                )
            if recorded and cli is not None and cli != next(iter(recorded)):
                raise MarginError(
                    f"report: {option} {cli} contradicts {config_key}={next(iter(recorded))} that the runs "
                    f"of {_table_name(key)} recorded before they ran; drop {option} (or rerun the study "
                    "with the margin in its preset). Nothing was written."
                )
            chosen[kind] = next(iter(recorded)) if recorded else cli
        out[key] = Margins(chosen["train"], chosen["extrap"])
    return out


def acc_at(run: Run, size: int) -> float | None:
    """The run's test accuracy at evaluation input size ``size``: ``test_acc_at[size]``, and ``test_acc``
    at the training size when that was not evaluated separately; None when not measured."""
    value = run.acc_at(size)
    if value is None and size == run.field_value("input_size"):
        value = run.metrics.get("test_acc")
    return value


def _sizes(members: Sequence[Group]) -> list[int]:
    """Every evaluation size of a table's runs and their training size, ascending."""
    runs = [r for g in members for r in g.runs]
    trained = {r.field_value("input_size") for r in runs}
    return sorted(set(eval_sizes(runs)) | {s for s in trained if isinstance(s, int)})


def _seed(run: Run) -> int:
    return int(run.field_value("seed") or 0)


def _mean(group: Group, key: str) -> float | None:
    return stats.mean_ci(group.values(key)).mean


def arm_statistics(
    groups: Sequence[Group], baseline: str | None, margins: Margins = NO_MARGINS
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """``(stat_rows, run_rows, info)``.

    ``run_rows``: one per ok run and evaluation size it was measured at (``RUN_COLUMNS``), the training
    size included (``extrap`` False). ``stat_rows``: ``statistics_from_rows`` of them: one per table, arm
    and size, the arm's accuracy and its paired comparison with the baseline of its table. ``info``: per
    table (by name) its name, baseline, sizes and margins.
    """
    bases = resolve_baselines(groups, baseline)
    table_margins = resolve_margins(groups, margins)
    run_rows: list[dict[str, Any]] = []
    info: dict[str, dict[str, Any]] = {}
    arms: dict[tuple[str, str], dict[str, Any]] = {}
    for key, members in _tables(groups).items():
        base, name, sizes = bases[key], _table_name(key), _sizes(members)
        m = table_margins[key]
        base_name = arm_name(base) if base else ""
        info[name] = {"name": name, "baseline": base_name, "sizes": sizes, "margins": m}
        for g in members:
            arms[(name, arm_name(g))] = _arm_extras(g)
            train_size = g.first.field_value("input_size")
            for size in sizes:
                for r in g.runs:
                    acc = acc_at(r, size)
                    if acc is None:
                        continue
                    run_rows.append(
                        {
                            "table": name,
                            "arm": arm_name(g),
                            "baseline": base_name,
                            "size": size,
                            "extrap": size != train_size,
                            "seed": _seed(r),
                            "acc": acc,
                            "margin": m.at(size != train_size),
                            "val_acc": r.metrics.get("val_acc"),
                            "lr": r.cfg("train.lr"),
                            "best_epoch": r.metrics.get("best_epoch"),
                            "epochs_done": r.metrics.get("epochs_done"),
                            **_basis_maxima(r),
                            "command": r.command(),
                            "chance": chance_level(r.field_value("dataset"), r.cfg("dataset.num_classes")),
                            **provenance_cells(r.metrics),
                        }
                    )
    return statistics_from_rows(run_rows, info, arms), run_rows, info


def _arm_extras(g: Group) -> dict[str, Any]:
    """What a stats row says of its arm beside the accuracies: lr, mean val_acc and shift metrics (over
    the seeds that measured them), the command of its first seed, whether it was still learning."""
    curves = [[h.get("val_acc") for h in r.metrics.get("history") or []] for r in g.runs]
    return {
        "lr": g.first.cfg("train.lr"),
        "command": g.first.command(),
        "val_acc_mean": _mean(g, "val_acc"),
        "test_acc_shifted_mean": _mean(g, "test_acc_shifted"),
        "shift_error_mean": _mean(g, "shift_error"),
        "not_converged": still_rising(mean_curve(curves)),
    }


def statistics_from_rows(
    run_rows: Sequence[dict[str, Any]],
    info: dict[str, dict[str, Any]],
    arms: dict[tuple[str, str], dict[str, Any]],
) -> list[dict[str, Any]]:
    """``stats.csv``'s rows from per-run rows (``RUN_COLUMNS``: what runs.csv holds) and per arm its
    extras (``_arm_extras``): per table, arm and size (in the rows' order, sizes ascending) the arm's
    accuracy (mean, 95 % t-CI, n) and, for every arm but the baseline, the paired comparison with the
    baseline over their common seeds (``stats.EQUIVALENCE_COLUMNS``, Holm over every comparison of all
    tables, the near-chance rule); the margin's columns null where the table has no margin."""
    by_arm: dict[tuple[str, str], dict[int, dict[int, float]]] = {}
    first: dict[tuple[str, str, int], dict[str, Any]] = {}
    for r in run_rows:
        by_arm.setdefault((r["table"], r["arm"]), {}).setdefault(r["size"], {})[r["seed"]] = r["acc"]
        first.setdefault((r["table"], r["arm"], r["size"]), r)
    rows: list[dict[str, Any]] = []
    comparisons: dict[tuple[str, str, int], stats.PairedComparison] = {}
    near: dict[tuple[str, str, int], bool] = {}
    for (table, arm), by_size in by_arm.items():
        base_name = info[table]["baseline"]
        for size in sorted(by_size):
            values, r0 = by_size[size], first[(table, arm, size)]
            mean = stats.mean_ci(list(values.values()))
            row = {"table": table, "arm": arm, "baseline": base_name, "size": size, "extrap": r0["extrap"]}
            row |= {"n": mean.n, "seeds": ",".join(str(s) for s in values)}
            row |= {"acc_mean": mean.mean, "acc_ci_low": mean.low, "acc_ci_high": mean.high}
            row |= {**arms.get((table, arm), {}), "margin": r0["margin"], "chance": r0.get("chance")}
            base = (
                by_arm.get((table, base_name), {}).get(size, {}) if base_name and arm != base_name else None
            )
            if base is not None:
                key = (table, arm, size)
                d = stats.paired_differences(values, base)
                comparisons[key] = stats.paired_comparison(d, r0["margin"], ALPHA)
                row["diff"] = comparisons[key].diff
                common = [s for s in values if s in base]
                means = [sum(x[s] for s in common) / len(common) if common else None for x in (values, base)]
                near[key] = stats.near_chance(means[0], means[1], row["chance"], r0["margin"])
            rows.append(row)
    family = stats.equivalence_family(comparisons, ALPHA, near=near)
    for row in rows:
        cols = family.get((row["table"], row["arm"], row["size"]))
        if cols is None:
            continue
        if row["margin"] is None:
            cols = {**cols, **{k: None for k in _MARGIN_COLUMNS}}
        row.update(cols)
    return rows


def provenance_cells(metrics: dict[str, Any]) -> dict[str, Any]:
    """A run's ``PROVENANCE_COLUMNS`` from its metrics.json: what its ``provenance`` (and the record's own
    start and end times) hold; None for whatever the record does not say."""
    prov = metrics.get("provenance") if isinstance(metrics.get("provenance"), dict) else {}
    revision = prov.get("revision") if isinstance(prov.get("revision"), dict) else {}
    versions = prov.get("versions") if isinstance(prov.get("versions"), dict) else {}
    cpu = prov.get("cpu") if isinstance(prov.get("cpu"), dict) else {}
    weights = prov.get("weights") if isinstance(prov.get("weights"), dict) else {}
    cpu_id = " ".join(
        f"{k} {cpu[k]}" for k in ("vendor", "family", "model", "stepping") if cpu.get(k) is not None
    )
    listed = [("python", prov.get("python")), *versions.items()]
    return {
        "revision": revision.get("commit"),
        "dirty": revision.get("dirty"),
        "started_at": metrics.get("started_at") or prov.get("started_at"),
        "finished_at": metrics.get("finished_at") or prov.get("finished_at"),
        "processor": prov.get("processor"),
        "processor_id": cpu_id or None,
        "gpu": prov.get("gpu"),
        "threads": prov.get("threads"),
        "versions": " ".join(f"{k}={v}" for k, v in listed if v is not None) or None,
        "weights_sha256": weights.get("sha256"),
    }


def _basis_maxima(run: Run) -> dict[str, float | None]:
    """The run's largest plane tilt and basis angle over its layers (metrics.json ``basis_motion``);
    None where it has no basis or predates the record."""
    layers = run.metrics.get("basis_motion") or []
    out: dict[str, float | None] = {}
    for column, key in (("basis_tilt_max_deg", "tilt_max_deg"), ("basis_angle_max_deg", "angle_max_deg")):
        values = [m.get(key) for m in layers if isinstance(m, dict) and isinstance(m.get(key), int | float)]
        out[column] = max(values) if values else None
    return out


def _round(value: Any) -> Any:
    return float(f"{value:.5g}") if isinstance(value, float) and math.isfinite(value) else value


def history_rows(groups: Sequence[Group]) -> list[dict[str, Any]]:
    """One row per ok run and epoch of its metrics.json ``history`` (``HISTORY_COLUMNS``): the learning
    curves, so convergence can be checked from the committed report without the run directories."""
    out: list[dict[str, Any]] = []
    for key, members in _tables(groups).items():
        for g in members:
            for r in g.runs:  # a group holds ok runs only (groups.group_runs)
                run = {
                    "table": _table_name(key),
                    "arm": arm_name(g),
                    "seed": _seed(r),
                    "lr": r.cfg("train.lr"),
                }
                for h in r.metrics.get("history") or []:
                    out.append(
                        {
                            **run,
                            "epoch": h.get("epoch"),
                            # 5 significant digits: the curves' shape, a fifth of the file of full floats
                            "train_loss": _round(h.get("train_loss")),
                            "val_acc": h.get("val_acc"),
                            "epoch_lr": _round(h.get("lr")),
                            "revision": h.get("revision"),
                        }
                    )
    return out


def write_history_csv(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """``history.csv``: the rows of ``history_rows`` (``HISTORY_COLUMNS``)."""
    csv_table(path, HISTORY_COLUMNS, rows)


def write_stats_csv(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """``stats.csv``: the rows of ``arm_statistics`` (``STAT_COLUMNS``)."""
    csv_table(path, STAT_COLUMNS, rows)


def write_runs_csv(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """``runs.csv``: one row per run and evaluation size (``RUN_COLUMNS``), what the statistics were
    computed from; docs/statistics.md recomputes them from it with scipy."""
    csv_table(path, RUN_COLUMNS, rows)
