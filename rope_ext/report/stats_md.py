"""The statistics section of report.md: per table one line per arm and evaluation size (both readings
of equivalence, the near-chance rule), the arms still rising at the end, and the conjunctive claim of
each size (columns and rules: docs/statistics.md)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rope_ext.report.arms import ALPHA, MARGIN_KEYS, Margins
from rope_ext.report.tables import ci_cell, markdown_table, p_cell

__all__ = ["statistics_markdown"]


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


def _tost_cell(row: dict[str, Any], key: str) -> str:
    if row.get("near_chance"):
        return "near chance"
    return _p(row.get(key))


def statistics_markdown(rows: Sequence[dict[str, Any]], info: dict[str, dict[str, Any]]) -> list[str]:
    """The statistics section of report.md: per table, one line per arm and evaluation size, the arms
    still learning at the end, and the conjunctive reading of each size's comparisons."""
    family = max((r.get("family_size") or 0 for r in rows), default=0)
    tost_family = max((r.get("tost_family_size") or 0 for r in rows), default=0)
    counted = f"the {family} comparisons of this report" if family else "the comparisons (none here)"
    text = [
        "## Comparisons with the baseline: equivalence, Holm over the report, power",
        "",
        "Accuracy is the test accuracy (%) of the final model (after the last epoch; validation selects the "
        "learning rate, nothing selects on test), `mean [95 % t-CI]` over the n seeds. `diff` is arm − "
        "baseline, paired over the seeds both ran, with the 90 % t-CI that TOST uses. `lead` is the test "
        "whose p counts: the paired t-test, or the exact sign-flip test where the differences fail "
        "Shapiro-Wilk (p < 0.05) or have no spread; both p's are shown (`t / flip`). `Holm p`: the lead "
        f"p adjusted over {counted} (every table, arm and evaluation size); "
        "`n.s.` when it is ≥ 0.05 (not from the CI). `TOST p`: two one-sided tests of |diff| < margin "
        f"by the lead test; `TOST Holm p`: the TOST p adjusted over the equivalence tests of this report "
        f"({tost_family}). `alone`: the verdict of the comparison read on its own: `equivalent` (TOST Holm p "
        "< 0.05), else `different` (Holm p < 0.05), else `inconclusive`. `in all`: the same with the raw "
        'TOST p, valid only as part of the conjunctive claim "every comparison of the set is equivalent" '
        "(intersection–union; the per-size lines below each table). `near chance`: both arms' mean "
        "accuracy below chance + 2 × margin, where an equivalence test says nothing: verdict "
        "`uninformative (near chance)` (or `different`). `MDD`: the difference the paired t-test "
        "detects with 80 % power at level 0.05 / family size, from this comparison's own paired sd. "
        "`n/a`: not measured or not computable. Columns and a plain-scipy recomputation from runs.csv: "
        "docs/statistics.md.",
        "",
    ]
    by_table: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_table.setdefault(row["table"], []).append(row)
    header = ["arm", "size", "n", "acc % [95 % CI]", "diff [90 % CI]", "lead", "p t / flip", "Holm p"]
    header += ["margin", "TOST p", "TOST Holm p", "alone", "in all", "MDD", "command (one seed)"]
    for meta in info.values():
        text += [f"### {meta['name']}", "", *_margin_lines(meta["margins"], meta["baseline"])]
        table_rows = by_table.get(meta["name"], [])
        body = []
        seen: set[str] = set()
        for r in table_rows:
            first = r["arm"] not in seen
            seen.add(r["arm"])
            is_base = r["arm"] == r["baseline"]
            body.append(
                [
                    r["arm"] + (" (still rising)" if r.get("not_converged") and first else ""),
                    str(r["size"]) + ("" if r["extrap"] else " (train)"),
                    str(r["n"]),
                    ci_cell(r["acc_mean"], r["acc_ci_low"], r["acc_ci_high"]),
                    _diff_cell(r),
                    "" if is_base else r.get("lead_test") or "n/a",
                    "" if is_base else f"{_p(r.get('p_t'))} / {_p(r.get('p_sign_flip'))}",
                    "" if is_base else _p(r.get("p_holm_family")),
                    "" if is_base else _num(r.get("margin"), "g"),
                    "" if is_base else _tost_cell(r, "p_tost"),
                    "" if is_base else _tost_cell(r, "p_tost_holm"),
                    "" if is_base else r.get("verdict_holm") or "n/a",
                    "" if is_base else r.get("verdict") or "n/a",
                    "" if is_base else _num(r.get("mdd_paired"), ".2f"),
                    f"`{r['command']}`" if first else "",
                ]
            )
        text += [markdown_table(header, body) if body else "No finished runs.", ""]
        text += _rising_lines(table_rows) + _conjunctive_lines(table_rows)
    return text


def _margin_lines(m: Margins, baseline: str) -> list[str]:
    text = [] if baseline else ["No baseline arm in this table (`--baseline`): accuracies only.", ""]
    if m.train is None and m.extrap is None:
        return text + [
            f"No equivalence margin: the runs recorded no `{MARGIN_KEYS['train']}` / "
            f"`{MARGIN_KEYS['extrap']}` and none was given (`--margin`, `--margin-extrap`), so TOST and "
            "the verdict are not computed (n/a).",
            "",
        ]

    def said(value: float | None, where: str) -> str:
        return f"±{value:g} points {where}" if value is not None else f"none {where} (no verdict: n/a)"

    return text + [
        f"Equivalence margins: {said(m.train, 'at the training size')}, {said(m.extrap, 'at the other sizes')}.",
        "",
    ]


def _rising_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    rising = list(dict.fromkeys(r["arm"] for r in rows if r.get("not_converged")))
    if not rising:
        return []
    return [
        f"Not converged: {', '.join(f'`{a}`' for a in rising)} still rising at the end of training (best "
        "validation epoch in the last fifth of the budget and ≥ 1.5 points gained over it; "
        "docs/statistics.md): its comparisons with the others are not converged; more epochs "
        "(`train.epochs=...`) would change them.",
        "",
    ]


def _conjunctive_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Per evaluation size, the conjunctive claim over the table's equivalence tests (not near chance)."""
    text = []
    for size in sorted({r["size"] for r in rows}):
        tested = [
            r for r in rows if r["size"] == size and r.get("p_tost") is not None and not r.get("near_chance")
        ]
        if not tested:
            continue
        worst = max(tested, key=lambda r: r["p_tost"])
        where = f"{size} px" + ("" if tested[0]["extrap"] else " (train)")
        if worst["p_tost"] < ALPHA:
            claim = f"all {len(tested)} equivalent to the baseline (largest TOST p {_p(worst['p_tost'])})"
        else:
            claim = (
                f"not all {len(tested)} shown equivalent (largest TOST p {_p(worst['p_tost'])}, "
                f"`{worst['arm']}`)"
            )
        text.append(f"- All arms at {where}, read together (intersection–union): {claim}.")
    return text + [""] if text else []
