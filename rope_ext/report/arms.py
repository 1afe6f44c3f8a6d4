"""Per-arm statistics: each arm's test accuracy with its 95 % t-CI and its difference to the baseline arm
(``stats.csv`` and the statistics section of report.md), computed with ``rope_ext.stats``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rope_ext import stats
from rope_ext.report.groups import Group, arm_name, swept
from rope_ext.report.runs import Run
from rope_ext.report.tables import cell, ci_cell, csv_table, markdown_table, p_cell

__all__ = [
    "STAT_COLUMNS",
    "BaselineError",
    "arm_statistics",
    "resolve_baselines",
    "statistics_markdown",
    "write_stats_csv",
]

STAT_COLUMNS = ["acc_mean", "acc_ci_low", "acc_ci_high", "n", "diff", "diff_ci_low", "diff_ci_high"]
STAT_COLUMNS += ["p_value", "p_holm"]
Getter = Callable[[Run], Any]  # one figure of a run (test accuracy, accuracy at one size)


class BaselineError(ValueError):
    """``--baseline`` names no arm, or several arms of one table."""


def _table_key(group: Group) -> tuple[str, str]:
    """The runs one statistics table compares: one sweep on one dataset."""
    return (group.first.sweep, str(group.first.field_value("dataset")))


def _tables(groups: Sequence[Group]) -> dict[tuple[str, str], list[Group]]:
    tables: dict[tuple[str, str], list[Group]] = {}
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


def resolve_baselines(groups: Sequence[Group], baseline: str | None) -> dict[tuple[str, str], Group | None]:
    """The baseline arm of each statistics table (see ``_matches``): ``baseline``, else the arm named or
    labelled ``none`` where there is one. Raises ``BaselineError`` when ``baseline`` names no arm of any
    table, or more than one arm of a table, listing the arms it could name."""
    out: dict[tuple[str, str], Group | None] = {}
    for key, members in _tables(groups).items():
        found = _matches(baseline if baseline is not None else "none", members)
        if baseline is not None and len(found) > 1:
            raise BaselineError(
                f"report: --baseline {baseline!r} names {len(found)} arms of {key[0]} / {key[1]} "
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


def _seed_values(group: Group, get: Getter) -> dict[int, Any]:
    return {int(r.field_value("seed") or 0): get(r) for r in group.runs}


def _stat_block(prefix: str, group: Group, base: Group | None, get: Getter) -> dict[str, Any]:
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
    bases = resolve_baselines(groups, baseline)
    rows: list[dict[str, Any]] = []
    info: dict[tuple[str, str], dict[str, Any]] = {}
    for key, members in _tables(groups).items():
        names = {id(g): arm_name(g) for g in members}
        # an exact arm name wins over a variant label: in an extrapolation table "none" (APE, class
        # token) and "none_avg" both carry the label "none"
        base = bases[key]
        metrics: list[tuple[str, Getter]] = [("acc", lambda r: r.metrics.get("test_acc"))]
        metrics += [(f"acc@{s}", lambda r, s=s: r.acc_at(s)) for s in sizes]
        table_rows = []
        for g in members:
            row: dict[str, Any] = {"table": _table_name(key), "arm": names[id(g)]}
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


def _table_name(key: tuple[str, str]) -> str:
    """A statistics table's name: its sweep and dataset, e.g. ``digits_blocks (digits)``."""
    return f"{key[0]} ({key[1]})"


def _stat_columns(sizes: Sequence[int]) -> list[str]:
    cols = ["table", "arm", "baseline", "seeds", *STAT_COLUMNS, "paired"]
    for s in sizes:
        p = f"acc@{s}"
        cols += [f"{p}_mean", f"{p}_ci_low", f"{p}_ci_high", f"{p}_n", f"{p}_diff", f"{p}_diff_ci_low"]
        cols += [f"{p}_diff_ci_high", f"{p}_p_value", f"{p}_p_holm"]
    return cols + ["val_acc_mean", "test_acc_shifted_mean", "shift_error_mean", "mdd_80", "command"]


def write_stats_csv(rows: Sequence[dict[str, Any]], path: Path, sizes: Sequence[int]) -> None:
    """``stats.csv``: the rows of ``arm_statistics``."""
    csv_table(path, _stat_columns(sizes), rows)


def _diff_cell(row: dict[str, Any], pre: str = "") -> str:
    """``+1.23 [lo, hi] p=… (Holm …)`` and ``n.s.`` when the CI includes 0; ``baseline`` for the baseline."""
    diff = row.get(f"{pre}diff")
    if diff is None or row["arm"] == row["baseline"]:
        return "baseline" if row["arm"] == row["baseline"] else ""
    text = f"{diff:+.2f}"
    low, high = row.get(f"{pre}diff_ci_low"), row.get(f"{pre}diff_ci_high")
    if low is not None:
        text += f" [{low:+.2f}, {high:+.2f}]"
    p, ph = row.get(f"{pre}p_value"), row.get(f"{pre}p_holm")
    if p is not None:
        text += f" p={p_cell(p)} (Holm {p_cell(ph)})"
    if not row.get(f"{pre}significant"):
        text += " n.s."
    return text


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
        name = _table_name(key)
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
                ci_cell(r["acc_mean"], r["acc_ci_low"], r["acc_ci_high"]),
                _diff_cell(r),
            ]
            cells += [ci_cell(r[f"acc@{s}_mean"], r[f"acc@{s}_ci_low"], r[f"acc@{s}_ci_high"]) for s in sizes]
            cells += [_diff_cell(r, f"acc@{s}_") for s in sizes]
            cells += [cell(r["val_acc_mean"]), f"`{r['command']}`"]
            body.append(cells)
        mdd = meta["mdd"]
        text += [f"### {name}", "", markdown_table(header, body), ""]
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
