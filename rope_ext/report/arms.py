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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rope_ext import stats
from rope_ext.report.groups import Group, arm_name, eval_sizes, swept
from rope_ext.report.runs import Run
from rope_ext.report.tables import ci_cell, csv_table, markdown_table, p_cell

__all__ = [
    "MARGIN_KEYS",
    "NO_MARGINS",
    "HISTORY_COLUMNS",
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
    "statistics_markdown",
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

STAT_COLUMNS = ["table", "arm", "baseline", "size", "extrap", "seeds", "n"]
STAT_COLUMNS += ["acc_mean", "acc_ci_low", "acc_ci_high", "diff", *stats.EQUIVALENCE_COLUMNS]
STAT_COLUMNS += ["lr", "val_acc_mean", "test_acc_shifted_mean", "shift_error_mean", "command"]
RUN_COLUMNS = ["table", "arm", "baseline", "size", "extrap", "seed", "acc", "margin", "val_acc", "lr"]
RUN_COLUMNS += ["best_epoch", "epochs_done", "basis_tilt_max_deg", "basis_angle_max_deg", "command"]
HISTORY_COLUMNS = ["table", "arm", "seed", "lr", "epoch", "train_loss", "val_acc", "epoch_lr"]
# the columns that need a margin: left null (n/a) for a comparison without one
_MARGIN_COLUMNS = ("margin", "p_tost", "p_tost_t", "p_tost_sign_flip", "verdict")
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


def _seed_values(group: Group, get: Callable[[Run], Any]) -> dict[int, Any]:
    return {_seed(r): get(r) for r in group.runs}


def _mean(group: Group, key: str) -> float | None:
    return stats.mean_ci(group.values(key)).mean


def arm_statistics(
    groups: Sequence[Group], baseline: str | None, margins: Margins = NO_MARGINS
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[TableKey, dict[str, Any]]]:
    """``(stat_rows, run_rows, info)``.

    ``stat_rows``: one per table, arm and evaluation size (the training size included, ``extrap`` False):
    the arm's accuracy (mean, 95 % t-CI, n) and, for every arm but the baseline, the paired comparison with
    the baseline of its table over their common seeds: ``diff`` (mean of the per-seed differences) and
    ``stats.EQUIVALENCE_COLUMNS``, Holm over every comparison of all tables; the margin-dependent columns
    (TOST p's, verdict) null where the table has no margin. Also the arm's lr, mean val_acc, shift metrics
    (means over the seeds that measured them) and the command rerunning its first seed.
    ``run_rows``: one per ok run and evaluation size it was measured at (``RUN_COLUMNS``).
    ``info``: per table its name, baseline, sizes and margins.
    """
    bases = resolve_baselines(groups, baseline)
    table_margins = resolve_margins(groups, margins)
    rows: list[dict[str, Any]] = []
    run_rows: list[dict[str, Any]] = []
    info: dict[TableKey, dict[str, Any]] = {}
    comparisons: dict[tuple[str, str, int], stats.PairedComparison] = {}
    for key, members in _tables(groups).items():
        base, name, sizes = bases[key], _table_name(key), _sizes(members)
        m = table_margins[key]
        base_name = arm_name(base) if base else ""
        info[key] = {"name": name, "baseline": base_name, "sizes": sizes, "margins": m}
        for g in members:
            train_size = g.first.field_value("input_size")
            common = {
                "table": name,
                "arm": arm_name(g),
                "baseline": base_name,
                "lr": g.first.cfg("train.lr"),
                "command": g.first.command(),
            }
            for size in sizes:
                extrap = size != train_size
                margin = m.at(extrap)
                values = _seed_values(g, lambda r, s=size: acc_at(r, s))
                mean = stats.mean_ci(list(values.values()))
                if mean.n == 0:
                    continue  # the arm was never evaluated at this size
                row = {**common, "size": size, "extrap": extrap, "n": mean.n}
                row["seeds"] = ",".join(str(s) for s, v in values.items() if v is not None)
                row |= {"acc_mean": mean.mean, "acc_ci_low": mean.low, "acc_ci_high": mean.high}
                row["val_acc_mean"] = _mean(g, "val_acc")
                row["test_acc_shifted_mean"] = _mean(g, "test_acc_shifted")
                row["shift_error_mean"] = _mean(g, "shift_error")
                row["margin"] = margin
                if base is not None and base is not g:
                    d = stats.paired_differences(values, _seed_values(base, lambda r, s=size: acc_at(r, s)))
                    # without a margin TOST is not run: any margin gives the same margin-free columns,
                    # and the margin's own columns are nulled below
                    comp = stats.paired_comparison(d, margin if margin is not None else 1.0, ALPHA)
                    comparisons[(name, row["arm"], size)] = comp
                    row["diff"] = comp.diff
                rows.append(row)
                for r in g.runs:
                    acc = acc_at(r, size)
                    if acc is None:
                        continue
                    run_rows.append(
                        {
                            **common,
                            "size": size,
                            "extrap": extrap,
                            "seed": _seed(r),
                            "acc": acc,
                            "margin": margin,
                            "val_acc": r.metrics.get("val_acc"),
                            "lr": r.cfg("train.lr"),
                            "best_epoch": r.metrics.get("best_epoch"),
                            "epochs_done": r.metrics.get("epochs_done"),
                            **_basis_maxima(r),
                            "command": r.command(),
                        }
                    )
    family = stats.equivalence_family(comparisons, ALPHA)
    for row in rows:
        cols = family.get((row["table"], row["arm"], row["size"]))
        if cols is None:
            continue
        if row["margin"] is None:
            cols = {**cols, **{k: None for k in _MARGIN_COLUMNS}}
        row.update(cols)
    return rows, run_rows, info


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


def _num(value: Any, fmt: str = "+.2f") -> str:
    return "n/a" if value is None else format(value, fmt)


def _diff_cell(row: dict[str, Any]) -> str:
    """``+1.23 [+0.50, +1.96]`` (90 % CI) and ``n.s.`` when the Holm-adjusted p is >= 0.05."""
    if row["arm"] == row["baseline"]:
        return "baseline"
    if row.get("diff") is None:
        return "n/a"
    text = _num(row["diff"])
    if row.get("ci90_low") is not None:
        text += f" [{_num(row['ci90_low'])}, {_num(row['ci90_high'])}]"
    return text + (" n.s." if row.get("ns") else "")


def _p(value: float | None) -> str:
    return "n/a" if value is None else p_cell(value)


def statistics_markdown(rows: Sequence[dict[str, Any]], info: dict[TableKey, dict[str, Any]]) -> list[str]:
    """The statistics section of report.md: per table, one line per arm and evaluation size."""
    family = max((r.get("family_size") or 0 for r in rows), default=0)
    text = [
        "## Comparisons with the baseline: equivalence, Holm over the report, power",
        "",
        "Accuracy is the test accuracy (%) of the final model (after the last epoch; validation selects the "
        "learning rate, nothing selects on test), `mean [95 % t-CI]` over the n seeds. `diff` is arm − "
        "baseline, paired over the seeds both ran, with the 90 % t-CI that TOST uses. `lead` is the test "
        "whose p counts: the paired t-test, or the exact sign-flip test where the differences fail "
        "Shapiro-Wilk (p < 0.05) or have no spread; both p's are shown (`t / flip`). `Holm p`: the lead "
        f"p adjusted over all {family} comparisons of this report (every table, arm and evaluation size); "
        "`n.s.` when it is ≥ 0.05 (not from the CI). `TOST p`: two one-sided tests of |diff| < margin "
        "by the lead test; `verdict`: `equivalent` (TOST p < 0.05), else `different` (Holm p < 0.05), else "
        "`inconclusive`. `MDD`: the difference the paired t-test detects with 80 % power at level "
        "0.05 / family size, from this comparison's own paired sd. `n/a`: not measured or not computable. "
        "Columns and a plain-scipy recomputation from runs.csv: docs/statistics.md.",
        "",
    ]
    by_table: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_table.setdefault(row["table"], []).append(row)
    header = ["arm", "size", "n", "acc % [95 % CI]", "diff [90 % CI]", "lead", "p t / flip"]
    header += ["Holm p", "margin", "TOST p", "verdict", "MDD", "command (one seed)"]
    for meta in info.values():
        m: Margins = meta["margins"]
        text += [f"### {meta['name']}", ""]
        if not meta["baseline"]:
            text += ["No baseline arm in this table (`--baseline`): accuracies only.", ""]
        if m.train is None and m.extrap is None:
            text += [
                f"No equivalence margin: the runs recorded no `{MARGIN_KEYS['train']}` / "
                f"`{MARGIN_KEYS['extrap']}` and none was given (`--margin`, `--margin-extrap`), so TOST and "
                "the verdict are not computed (n/a).",
                "",
            ]
        else:

            def said(value: float | None, where: str) -> str:
                return (
                    f"±{value:g} points {where}" if value is not None else f"none {where} (no verdict: n/a)"
                )

            text += [
                f"Equivalence margins: {said(m.train, 'at the training size')}, "
                f"{said(m.extrap, 'at the other sizes')}.",
                "",
            ]
        body = []
        seen: set[str] = set()
        for r in by_table.get(meta["name"], []):
            first = r["arm"] not in seen
            seen.add(r["arm"])
            is_base = r["arm"] == r["baseline"]
            body.append(
                [
                    r["arm"],
                    str(r["size"]) + ("" if r["extrap"] else " (train)"),
                    str(r["n"]),
                    ci_cell(r["acc_mean"], r["acc_ci_low"], r["acc_ci_high"]),
                    _diff_cell(r),
                    "" if is_base else r.get("lead_test") or "n/a",
                    "" if is_base else f"{_p(r.get('p_t'))} / {_p(r.get('p_sign_flip'))}",
                    "" if is_base else _p(r.get("p_holm_family")),
                    "" if is_base else _num(r.get("margin"), "g"),
                    "" if is_base else _p(r.get("p_tost")),
                    "" if is_base else r.get("verdict") or "n/a",
                    "" if is_base else _num(r.get("mdd_paired"), ".2f"),
                    f"`{r['command']}`" if first else "",
                ]
            )
        text += [markdown_table(header, body) if body else "No finished runs.", ""]
    return text
