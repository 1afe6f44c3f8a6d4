"""Cells and tables: the one number formatting and Markdown table layout of the sweep summary, the
report and ``rope_ext.bench``, and the CSV writer of the report."""

from __future__ import annotations

import csv
import io
import math
import re
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from rope_ext import safe_io

__all__ = [
    "cell",
    "ci_cell",
    "csv_cell",
    "csv_table",
    "csv_text",
    "write_text",
    "markdown_table",
    "mean_std",
    "numbers",
    "p_cell",
]


def cell(
    value: Any,
    digits: int = 2,
    *,
    missing: str = "",
    sci_below: float | None = None,
    sci_from: float = math.inf,
    group_from: float = math.inf,
) -> str:
    """One table cell: ``missing`` for None, booleans lower case, floats with ``digits`` decimals.

    A nonzero float below ``sci_below`` (default ``10**-digits``: it would print as zero) or from
    ``sci_from`` on is written ``1.2e-05``; an int from ``group_from`` on gets thousands separators.
    """
    if value is None:
        return missing
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= group_from else str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        tiny = 10 ** (-digits) if sci_below is None else sci_below
        if value != 0 and (abs(value) < tiny or abs(value) >= sci_from):
            return f"{value:.1e}"
        return f"{value:.{digits}f}"
    return str(value)


def numbers(values: Iterable[Any]) -> list[float]:
    """The finite numbers among ``values`` (None, NaN, strings and booleans dropped)."""
    nums = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return [v for v in nums if math.isfinite(v)]


def mean_std(values: Iterable[Any], digits: int = 2, missing: str = "n/a") -> str:
    """``mean ± sample std`` over the seeds' values (the mean alone for one value, ``missing`` when none
    measured it: None is absent, never 0)."""
    nums = numbers(values)
    if not nums:
        return missing
    mean = statistics.fmean(nums)
    if len(nums) < 2:
        return cell(mean, digits)
    std = statistics.stdev(nums)
    if mean != 0 and abs(mean) < 10 ** (-digits):  # tiny values (relative errors): scientific for both
        return f"{mean:.1e} ± {std:.1e}"
    return f"{cell(mean, digits)} ± {cell(std, digits)}"


def ci_cell(mean: Any, low: Any, high: Any, digits: int = 2, missing: str = "n/a") -> str:
    """``mean [low, high]`` (the mean alone without an interval, ``missing`` without a mean)."""
    if mean is None:
        return missing
    if low is None:
        return cell(mean, digits)
    return f"{cell(mean, digits)} [{cell(low, digits)}, {cell(high, digits)}]"


def p_cell(p: float | None) -> str:
    """A p-value: three decimals, scientific below 0.001."""
    return "" if p is None else (f"{p:.1e}" if p < 1e-3 else f"{p:.3f}")


def markdown_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], *, right: Sequence[bool] = (), pad: bool = False
) -> str:
    """A Markdown pipe table of formatted cells (``|`` in a cell escaped).

    ``right``: per column, right-aligned (``---:``); ``pad``: columns padded to a common width so the plain
    text lines up too (for terminals).
    """
    body = [[c.replace("|", "\\|") for c in row] for row in rows]
    aligned = [bool(r) for r in right] + [False] * (len(header) - len(right))
    if pad:
        widths = [max([len(h), *(len(r[i]) for r in body)]) for i, h in enumerate(header)]
    else:
        widths = [0] * len(header)

    def line(cells: Sequence[str]) -> str:
        return (
            "| "
            + " | ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, aligned))
            + " |"
        )

    # padded: as wide as the cells and their two spaces; a right-aligned column's rule ends in ":"
    rule = ["-" * (w + 2 - r) + ":" * r if pad else "---" + ":" * r for w, r in zip(widths, aligned)]
    return "\n".join([line(header), "|" + "|".join(rule) + "|", *(line(r) for r in body)])


# a text cell starting with one of these is a formula to a spreadsheet (OWASP, "CSV injection"); LF and
# space because spreadsheets trim or skip them before reading the formula, the fullwidth forms because
# some spreadsheets fold them to their ASCII twins
FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n", " ", "\uff1d", "\uff0b", "\uff0d", "\uff20")
# a plain decimal number as text ("-0.28", "1e-05"): a spreadsheet reads it as that number, never a formula
_PLAIN_NUMBER = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def csv_cell(value: Any) -> Any:
    """A CSV field: "" for None; numbers as numbers (``-0.28`` stays a number); text that a spreadsheet
    could run as a formula (``FORMULA_START`` first, a plain number excepted) gets a leading ``'``."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_START) and not _PLAIN_NUMBER.fullmatch(value):
        return "'" + value
    return value


def csv_text(value: str) -> str:
    """A CSV field as written by ``csv_cell`` read back: the escaping ``'`` removed."""
    if value.startswith("'") and value[1:].startswith(FORMULA_START):
        return value[1:]
    return value


def csv_table(path: Path, columns: Sequence[str], rows: Iterable[dict[str, Any]]) -> None:
    """Write ``rows`` as CSV with ``columns`` (None as an empty field, formulas escaped by ``csv_cell``,
    other keys ignored), never through a link at ``path`` (``safe_io.write_atomic``)."""
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=[csv_cell(c) for c in columns], extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({csv_cell(k): csv_cell(row.get(k)) for k in columns})
    write_text(path, buffer.getvalue())


def write_text(path: Path, text: str) -> None:
    """``path`` filled with ``text`` through a temporary file and a rename, never through a link
    (``safe_io.UnsafePathError`` names it)."""
    data = text.encode()
    safe_io.write_atomic(Path(path), lambda f: f.write(data))
