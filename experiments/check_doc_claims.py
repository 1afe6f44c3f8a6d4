"""The numbers docs/study.md and README.md cite, checked against the committed reports' stats.csv.

    python experiments/check_doc_claims.py tables  # the study tables of docs/study.md, from the stats.csv files
    python experiments/check_doc_claims.py         # exit 1 when a table row or a cited p differs (a test runs it)

Each claim is a text that must appear in a page, with ``{}`` where a stats.csv value goes, formatted the
way the page prints it (p's as report.md prints them: 3 decimals, or 2 significant digits below 0.001).
The reports of the equivalence studies have one row per table, arm and size (``p_tost_holm``,
``verdict_holm``, ...); the earlier reports one row per arm with ``acc@S_*`` columns.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "experiments" / "results"
PAGES = ("README.md", "docs/study.md")
NAMES = {
    "axial2_complex": "2×2",
    "axial_block_n2_layout_of3": "2×2, layout of 3×3",
    "axial_block_n2_layout_of6": "2×2, layout of 6×6",
    "axial_block_n3_frozen": "N = 3, Q frozen",
    "axial_block_n3": "N = 3",
    "axial_block_n4": "N = 4",
    "axial_block_n6": "N = 6",
    "axial_block_n16": "N = 16",
    "axial_block_n2_mixed": "RoPE-Mixed N = 2",
    "axial_block_n4_mixed": "mixed N = 4",
    "axial_block_n6_mixed": "mixed N = 6",
    "lie_block_n4": "lie_block N = 4",
    "none": "no RoPE (APE only)",
    "axial2_matrix": "2×2 matrix",
    "axial2_complex_identity": "2×2, identity start",
    "axial_block_n3_matrix": "N = 3 matrix",
    "axial_block_n5": "N = 5",
    "axial_block_n3_identity": "N = 3, identity start",
}
# report -> (evaluation sizes, the training size first; baseline arm) of each study table in docs/study.md
TABLES = {
    "digits_equiv_blocks": ((16, 20, 24, 32), "axial2_complex"),
    "digits_equiv_blocks_n3": ((16, 20, 24, 32), "axial_block_n3"),
    "digits_equiv_controls": ((16, 20, 24, 32), "axial_block_n2_mixed"),
    "relpos_equiv_controls": ((24, 32, 48), "axial_block_n2_mixed"),
    "relpos_equiv_blocks": ((24, 32, 48), "axial2_complex"),
    "digits_finetune": ((16, 20, 24, 32), "none"),
    "digits_finetune_blocks": ((16, 20, 24, 32), "axial2_complex"),
}
Key = tuple[str, str, int]  # (learning rate as written in the table name, or ""; arm; size)


def _arm_key(arm: str) -> str:
    """The arm's name, plus ``@<epochs>`` where the table crosses budgets (relpos_stall)."""
    name = arm.split(" ")[0]
    return name + "@" + arm.split("train.epochs=")[1].split(" ")[0] if "train.epochs=" in arm else name


@cache
def load(report: str) -> dict[Key, dict[str, str]]:
    """One report's stats.csv as {(lr, arm, size): row}; an earlier report's ``acc@S_x`` become ``x``."""
    with open(RESULTS / report / "stats.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    out: dict[Key, dict[str, str]] = {}
    for r in rows:
        if "size" not in r:  # the earlier reports: one row per arm, a column group per size
            for column, value in r.items():
                if column.startswith("acc@"):
                    size, name = column[4:].split("_", 1)
                    out.setdefault(("", _arm_key(r["arm"]), int(size)), {})[name] = value
            continue
        lr = r["table"].split("train.lr=")[1] if "train.lr=" in r["table"] else ""
        out[(lr, _arm_key(r["arm"]), int(r["size"]))] = r
    return out


def p(x: str) -> str:
    """A p as report.md prints it."""
    v = float(x)
    return f"{v:.3f}" if v >= 0.001 or v == 0 else f"{v:.1e}"


def diff(x: str) -> str:
    return f"{float(x):+.2f}".replace("+-", "-")


def _bold(verdict: str) -> str:
    return f"**{verdict}**" if verdict in ("equivalent", "different") else verdict


def _resized_cell(r: dict[str, str]) -> str:
    """``diff, verdict alone``, with the conjunctive verdict in brackets where it differs."""
    cell = f"{diff(r['diff'])}, {_bold(r['verdict_holm'])}"
    return cell if r["verdict"] == r["verdict_holm"] else f"{cell} (in all: {r['verdict']})"


def _acc(r: dict[str, str]) -> str:
    return f"{float(r['acc_mean']):.2f} [{float(r['acc_ci_low']):.2f}, {float(r['acc_ci_high']):.2f}]"


def table_rows(report: str) -> list[str]:
    """The rows of docs/study.md's table of one equivalence report, one per lr and arm."""
    sizes, baseline = TABLES[report]
    rows = load(report)
    arms = list(dict.fromkeys(k[1] for k in rows))
    out = []
    for lr in sorted({k[0] for k in rows}):
        for arm in arms:
            r = rows[(lr, arm, sizes[0])]
            if arm == baseline:
                out.append(
                    f"| {lr} | {NAMES[arm]} (baseline) | {_acc(r)} | — | | | | | |"
                    + " — |" * (len(sizes) - 1)
                )
                continue
            ci = f"[{float(r['ci90_low']):+.2f}, {float(r['ci90_high']):+.2f}]"
            cells = [lr, NAMES[arm], _acc(r), f"{diff(r['diff'])} {ci}", p(r["p_tost"]), p(r["p_tost_holm"])]
            cells += [p(r["p_holm_family"]), _bold(r["verdict_holm"]), r["verdict"]]
            cells += [_resized_cell(rows[(lr, arm, size)]) for size in sizes[1:]]
            out.append("| " + " | ".join(cells) + " |")
    return out


def basis_rows() -> list[str]:
    """The rows of docs/study.md's table of the follow-up (relpos_basis_n16 at 40 and 120 epochs)."""
    out = []
    for epochs, report in ((40, "relpos_basis_n16"), (120, "relpos_basis_n16_e120")):
        for size in (24, 32, 48):
            r, base = (load(report)[("", arm, size)] for arm in ("axial_block_n16", "axial_block_n16_frozen"))
            ci = f"[{float(r['ci90_low']):+.2f}, {float(r['ci90_high']):+.2f}]"
            verdict = r["verdict_holm"] + (
                "" if r["verdict"] == r["verdict_holm"] else f" (in all: {r['verdict']})"
            )
            out.append(
                f"| {epochs} | {size} | {_acc(base)} | {_acc(r)} | {diff(r['diff'])} {ci} | {float(r['diff_sd']):.2f} | "
                f"{p(r['p_lead'])} ({r['lead_test']}) | {p(r['p_holm_family'])} | {p(r['p_tost'])} | "
                f"{p(r['p_tost_holm'])} | {verdict} |"
            )
    return out


Claim = tuple[str, str, str, Key, str, Callable[[str], str]]


CLAIMS: list[Claim] = []  # (page, text with ``{}``, report, key, column, formatter): every p cited in prose


def claim(page: str, text: str, report: str, key: Key, column: str, fmt: Callable[[str], str] = p) -> None:
    CLAIMS.append((page, text, report, key, column, fmt))


S, R = "docs/study.md", "README.md"
B, N3, C = "digits_equiv_blocks", "digits_equiv_blocks_n3", "digits_equiv_controls"
RB, RC, ST = "relpos_equiv_blocks", "relpos_equiv_controls", "relpos_stall"
BN, BE = "relpos_basis_n16", "relpos_basis_n16_e120"
LR1, LR3 = "0.001", "0.003"


def decimals(n: int) -> Callable[[str], str]:
    return lambda x: f"{float(x):.{n}f}"


# digits_equiv_blocks
for f in (S, R):
    claim(
        f,
        "every TOST p ≤ {}",
        B,
        (LR1, "axial_block_n2_layout_of3", 16),
        "p_tost",
        decimals(4),
    )
claim(S, "Alone: N = 4 (TOST Holm p {}", B, (LR1, "axial_block_n4", 16), "p_tost_holm")
claim(S, "N = 16 ({})", B, (LR1, "axial_block_n16", 16), "p_tost_holm")
claim(S, "the 6×6 layout control ({});", B, (LR1, "axial_block_n2_layout_of6", 16), "p_tost_holm")
claim(S, "N = 3 ({}), N = 6", B, (LR1, "axial_block_n3", 16), "p_tost_holm")
claim(S, "N = 6 ({}), N = 3 with", B, (LR1, "axial_block_n6", 16), "p_tost_holm")
claim(S, "3×3 layout control ({} each)", B, (LR1, "axial_block_n2_layout_of3", 16), "p_tost_holm")
claim(S, "3×3 layout control ({} each)", B, (LR1, "axial_block_n3_frozen", 16), "p_tost_holm")
claim(S, "(−1.39, TOST\n  Holm p {})", B, (LR1, "axial_block_n4", 20), "p_tost_holm")
claim(S, "control's TOST p {} has", B, (LR3, "axial_block_n2_layout_of6", 16), "p_tost")
claim(S, "has TOST Holm p {})", B, (LR3, "axial_block_n2_layout_of6", 16), "p_tost_holm")
claim(S, "[−10.97, −4.40], Holm p {}.**", B, (LR3, "axial_block_n2_layout_of3", 20), "p_holm_family")
claim(S, "(−0.15, TOST Holm\n  p {})", B, (LR3, "axial_block_n4", 24), "p_tost_holm")
claim(
    R,
    "against 2×2 at 20 px (−7.69 points, Holm p {})",
    B,
    (LR3, "axial_block_n2_layout_of3", 20),
    "p_holm_family",
)
claim(R, "equivalent on digits ({}, ", B, (LR1, "axial_block_n4", 16), "p_tost_holm")
claim(R, "0.005, {},", B, (LR1, "axial_block_n16", 16), "p_tost_holm")
claim(R, "0.013,\n{})", B, (LR1, "axial_block_n2_layout_of6", 16), "p_tost_holm")
# n3 report
claim(
    S,
    "frozen − learned −0.29 [−0.91, +0.32], TOST Holm p {}",
    N3,
    (LR1, "axial_block_n3_frozen", 16),
    "p_tost_holm",
)
claim(S, "and 24 px ({}, ", N3, (LR1, "axial_block_n3_frozen", 20), "p_tost_holm")
claim(S, "0.008, {}); the 3×3", N3, (LR1, "axial_block_n3_frozen", 24), "p_tost_holm")
claim(S, "[−0.55, +0.98], TOST Holm p {})", N3, (LR1, "axial_block_n2_layout_of3", 16), "p_tost_holm")
claim(S, "−4.72 [−7.05, −2.39], Holm p {}**", N3, (LR3, "axial_block_n2_layout_of3", 20), "p_holm_family")
claim(R, "(TOST Holm p {})", N3, (LR1, "axial_block_n3_frozen", 16), "p_tost_holm")
claim(R, "against N = 3 (−4.72, Holm p {})", N3, (LR3, "axial_block_n2_layout_of3", 20), "p_holm_family")
# controls
claim(S, "every TOST p ≤ {}; +0.76", C, (LR1, "lie_block_n4", 16), "p_tost")
claim(S, "None holds alone (TOST Holm p {}, ", C, (LR1, "axial_block_n4_mixed", 16), "p_tost_holm")
claim(S, "0.094, {}, ", C, (LR1, "axial_block_n6_mixed", 16), "p_tost_holm")
claim(S, "0.078, {}). Within", C, (LR1, "lie_block_n4", 16), "p_tost_holm")
claim(S, "at 20 and 24 px ({}, ", C, (LR1, "axial_block_n4_mixed", 20), "p_tost_holm")
claim(S, "2.8e-05, {}), mixed", C, (LR1, "axial_block_n4_mixed", 24), "p_tost_holm")
claim(S, "mixed N = 6 at 20 px ({})", C, (LR1, "axial_block_n6_mixed", 20), "p_tost_holm")
claim(S, "+1.25 [+0.67, +1.83], Holm p {})", C, (LR3, "axial_block_n6_mixed", 16), "p_holm_family")
claim(S, "−7.73 [−11.14, −4.32], Holm p {}**", C, (LR3, "lie_block_n4", 24), "p_holm_family")
claim(R, "at 24 px (−7.73, Holm p {})", C, (LR3, "lie_block_n4", 24), "p_holm_family")
# stall
claim(
    S,
    "budget checks, n.s. after Holm over the report: {})",
    ST,
    ("", "axial2_avg_patch@40", 48),
    "p_holm_family",
)
claim(S, "−6.72 points at\n  24 px (Holm p {})", ST, ("", "none@120", 24), "p_holm_family")
claim(S, "−46.43 at 32 px (Holm p {})", ST, ("", "none@120", 32), "p_holm_family")
claim(S, "−5.29 at 24 px\n  ({})", ST, ("", "none_avg@120", 24), "p_holm_family")
claim(S, "−36.06 at 48 px ({})", ST, ("", "none_avg@120", 48), "p_holm_family")
claim(S, "−43.22\n  ({}, ", ST, ("", "none@40", 48), "p_holm_family")
claim(S, "(0.001, {}). These six", ST, ("", "none_avg@40", 48), "p_holm_family")
claim(S, "(sign-flip floor, Holm {})", ST, ("", "none@40", 24), "p_holm_family")
# relpos controls / blocks
claim(S, "−0.26 [−0.75, +0.24], TOST Holm p {}", RC, (LR1, "axial_block_n4_mixed", 24), "p_tost_holm")
claim(S, "(TOST Holm p {}, ", RB, (LR1, "axial_block_n3", 24), "p_tost_holm")
claim(S, "0.022, {} and", RB, (LR1, "axial_block_n16", 24), "p_tost_holm")
claim(S, "0.049 and {}; every", RB, (LR1, "axial_block_n2_layout_of3", 24), "p_tost_holm")
claim(R, "task (0.022,\n{}, ", RB, (LR1, "axial_block_n16", 24), "p_tost_holm")
claim(R, "0.049, {}).", RB, (LR1, "axial_block_n2_layout_of3", 24), "p_tost_holm")
claim(R, "relative-position task ({},", RB, (LR1, "axial_block_n3", 24), "p_tost_holm")
claim(S, "(TOST p {} and", RB, (LR3, "axial_block_n16", 24), "p_tost")
claim(S, "0.010 and {},", RB, (LR3, "axial_block_n2_layout_of3", 24), "p_tost")
claim(S, "TOST Holm p {} and", RB, (LR3, "axial_block_n16", 24), "p_tost_holm")
claim(S, "0.153 and {}): not claimed alone", RB, (LR3, "axial_block_n2_layout_of3", 24), "p_tost_holm")
claim(S, "(p {},\n  upper bound", RB, (LR3, "axial_block_n16", 32), "p_tost", decimals(4))
claim(
    S,
    "upper bound +{} against 5",
    RB,
    (LR3, "axial_block_n16", 32),
    "ci90_high",
    decimals(3),
)
claim(S, "5; TOST Holm p {}): not", RB, (LR3, "axial_block_n16", 32), "p_tost_holm")
claim(S, "−12.41 points [−17.84, −6.98], Holm p {}.**", RB, (LR1, "axial_block_n16", 48), "p_holm_family")
claim(R, "canvases (Holm p {})", RB, (LR1, "axial_block_n16", 48), "p_holm_family")
claim(S, "−7.99 [−15.80, −0.19], Holm p {},", RB, (LR3, "axial_block_n16", 48), "p_holm_family")
# follow-up
claim(S, "(primary; Holm p {})", BN, ("", "axial_block_n16", 48), "p_holm_family")
claim(S, "after 120 (Holm\n  p {})", BE, ("", "axial_block_n16", 48), "p_holm_family")
claim(S, "[−0.21, +0.23], TOST Holm p {})", BE, ("", "axial_block_n16", 24), "p_tost_holm")
claim(S, "32 px (−0.47, {})", BE, ("", "axial_block_n16", 32), "p_tost_holm")
claim(S, "(TOST p {}, TOST Holm p 0.136)", BN, ("", "axial_block_n16", 32), "p_tost")
claim(S, "TOST Holm p {}). Neither", BN, ("", "axial_block_n16", 32), "p_tost_holm")
claim(R, "−6.32, Holm p {} and", BN, ("", "axial_block_n16", 48), "p_holm_family")
claim(R, "Holm p 0.369 and {})", BE, ("", "axial_block_n16", 48), "p_holm_family")
claim(
    S,
    "the observed paired sd at 48 px was {},",
    BN,
    ("", "axial_block_n16", 48),
    "diff_sd",
    decimals(2),
)
# fine-tune study
F, FB = "digits_finetune", "digits_finetune_blocks"
claim(S, "every TOST p ≤\n  {} at lr 1e-3", F, (LR1, "axial_block_n6", 16), "p_tost", decimals(4))
claim(S, "at lr 1e-3 and ≤ {} at 3e-3", F, (LR3, "axial_block_n4", 16), "p_tost", decimals(4))
claim(S, "every Holm p ≥ {})", F, (LR3, "axial_block_n3_identity", 16), "p_holm_family")
claim(S, "N = 3 (TOST Holm p {}), N = 5", F, (LR1, "axial_block_n3", 16), "p_tost_holm")
claim(S, "N = 5 ({}), N = 3 matrix", F, (LR1, "axial_block_n5", 16), "p_tost_holm")
claim(S, "N = 3 matrix ({}) and the identity starts", F, (LR1, "axial_block_n3_matrix", 16), "p_tost_holm")
claim(S, "  ({}) and N = 3 (1.2e-05)", F, (LR1, "axial2_complex_identity", 16), "p_tost_holm")
claim(S, "(9.8e-05) and N = 3 ({}); at 3e-3", F, (LR1, "axial_block_n3_identity", 16), "p_tost_holm")
claim(S, "only the identity starts ({} and", F, (LR3, "axial2_complex_identity", 16), "p_tost_holm")
claim(S, "(0.030 and {}). **On resized", F, (LR3, "axial_block_n3_identity", 16), "p_tost_holm")
claim(S, "(−9.37, Holm p {})", F, (LR1, "axial_block_n5", 24), "p_holm_family")
claim(S, "at 32 px (−11.13, Holm p {})", F, (LR3, "axial2_complex_identity", 32), "p_holm_family")
claim(S, "20 px (+7.66, Holm p {})", F, (LR3, "axial_block_n3_matrix", 20), "p_holm_family")
claim(
    S,
    "(conjunctive: every TOST p ≤ {}); alone",
    FB,
    (LR1, "axial_block_n3_identity", 16),
    "p_tost",
    decimals(4),
)
claim(
    S,
    "At 3e-3 (conjunctive: every TOST p ≤ {})",
    FB,
    (LR3, "axial_block_n3_identity", 16),
    "p_tost",
    decimals(4),
)
claim(S, "alone: 2×2 matrix ({}), N = 3 (", FB, (LR1, "axial2_matrix", 16), "p_tost_holm")
claim(S, "N = 3 ({}), N = 4 (7.9e-07)", FB, (LR1, "axial_block_n3", 16), "p_tost_holm")
claim(S, "N = 4 ({}),\n  N = 5", FB, (LR1, "axial_block_n4", 16), "p_tost_holm")
claim(S, "identity start ({}). At 3e-3", FB, (LR1, "axial_block_n3_identity", 16), "p_tost_holm")
claim(S, "(0.006), N = 6 ({}) and N = 3 matrix", FB, (LR3, "axial_block_n6", 16), "p_tost_holm")
claim(S, "and N = 3 matrix ({}). 2×2 as matrices", FB, (LR3, "axial_block_n3_matrix", 16), "p_tost_holm")
claim(R, "(every TOST p ≤ {});", F, (LR1, "axial_block_n6", 16), "p_tost", decimals(4))
# earlier reports (old format: acc@S_diff, acc@S_p_holm)
E = "digits_extrap"
claim(S, "class token {} at 20 px, ", E, ("", "axial2_cls_normalized", 20), "diff", diff)
claim(S, "{} at 24 px and ", E, ("", "axial2_cls_normalized", 24), "diff", diff)
claim(S, "{} at 32 px (Holm p ", E, ("", "axial2_cls_normalized", 32), "diff", diff)
claim(S, "(Holm p {}, ", E, ("", "axial2_cls_normalized", 20), "p_holm")
claim(S, "7.3e-04, {}, ", E, ("", "axial2_cls_normalized", 24), "p_holm")
claim(S, "3.5e-04, {}),", E, ("", "axial2_cls_normalized", 32), "p_holm")
claim(S, "(2.3e-04, 2.8e-04, {});", E, ("", "axial2_avg_normalized", 32), "p_holm")
claim(S, "({}, 2.8e-04, 0.003)", E, ("", "axial2_avg_normalized", 20), "p_holm")
claim(S, "(2.3e-04, {}, 0.003)", E, ("", "axial2_avg_normalized", 24), "p_holm")
claim(S, "average pooling; {}, ", E, ("", "axial2_cls_patch", 24), "p_holm")
claim(S, "9.0e-05, {})", E, ("", "axial2_avg_patch", 24), "p_holm")
claim(S, "(−33.72, {})", E, ("", "axial2_cls_patch", 32), "p_holm")
claim(S, "+1.88 at 16 px ({})", E, ("", "axial2_cls_normalized", 16), "p_holm")
claim(S, "−7.81 at 20 px ({})", E, ("", "none_avg", 20), "p_holm")
claim(S, "(Holm p {}).\n- *Removed", "digits_controls", ("", "none_nopos", 16), "p_holm")
claim(S, "(Holm p {} over the 4 arms", "digits_controls", ("", "lie_block_n4", 16), "p_holm")
claim(S, "−20.07 at 20 px ({})", "digits_controls", ("", "none_nopos", 20), "p_holm")
claim(S, "+23.82 at 32 px ({})", "digits_controls", ("", "none_nopos", 32), "p_holm")
claim(S, "N = 3 −3.92\n  ({})", "digits_blocks", ("", "axial_block_n3", 32), "p_holm")
claim(S, "N = 6 −3.54 ({})", "digits_blocks", ("", "axial_block_n6", 32), "p_holm")
claim(S, "N = 4 −3.54 ({})", "digits_blocks", ("", "axial_block_n4", 32), "p_holm")
claim(S, "N = 16 −3.26 ({})", "digits_blocks", ("", "axial_block_n16", 32), "p_holm")
claim(S, "−3.02 ({})", "digits_blocks", ("", "axial_block_n2_layout_of3", 32), "p_holm")
claim(S, "24 and 32 px ({}, ", "digits_blocks", ("", "none", 24), "p_holm")
claim(S, "(1.1e-04, {});", "digits_blocks", ("", "none", 32), "p_holm")
claim(S, "N = 16 −11.43 at 32 px ({})", "relpos_blocks", ("", "axial_block_n16", 32), "p_holm")
claim(S, "APE −26.82 at\n  32 px ({})", "relpos_blocks", ("", "none", 32), "p_holm")
claim(S, "at 32 and 48 px ({}, ", "relpos_controls", ("", "axial_block_n4_mixed", 32), "p_holm")
claim(S, "(0.022, {}), mixed", "relpos_controls", ("", "axial_block_n4_mixed", 48), "p_holm")
claim(S, "−13.25 ({}, ", "relpos_controls", ("", "axial_block_n6_mixed", 32), "p_holm")
claim(S, "(0.020, {})", "relpos_controls", ("", "axial_block_n6_mixed", 48), "p_holm")
claim(S, "−9.07 ({}, ", "relpos_controls", ("", "lie_block_n4", 32), "p_holm")
claim(S, "(0.022, {}), and the", "relpos_controls", ("", "lie_block_n4", 48), "p_holm")
claim(S, "every Holm p ≥ {})", "relpos_blocks_equal_lr", ("", "none", 24), "p_holm")


def problems(root: Path = ROOT) -> list[str]:
    """Every table row or claim of the pages under ``root`` that the committed stats.csv files do not give."""
    pages = {page: (root / page).read_text() for page in PAGES}
    rows = [row for report in TABLES for row in table_rows(report)] + basis_rows()
    found = [f"docs/study.md lacks the row {row}" for row in rows if row not in pages["docs/study.md"]]
    for page, text, report, key, column, fmt in CLAIMS:
        value = load(report)[key][column]
        if text.format(fmt(value)) not in pages[page]:
            found.append(f"{page} lacks {text.format(fmt(value))!r} ({report} {key} {column} = {value})")
    return found


def main(argv: list[str]) -> int:
    if argv[1:] == ["tables"]:
        for report in TABLES:
            print(f"\n{report}\n" + "\n".join(table_rows(report)))
        print("\nrelpos_basis_n16, relpos_basis_n16_e120\n" + "\n".join(basis_rows()))
        return 0
    found = problems()
    print("\n".join(found) or f"{len(CLAIMS)} claims and every table row match the committed stats.csv")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
