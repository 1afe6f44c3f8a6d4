"""Whether a run (or an arm, by its seeds' mean curve) was still learning when its budget ended.

The rule (docs/statistics.md, "Not converged"): over the last ``TAIL_FRACTION`` of the epochs (at least
``MIN_TAIL`` epochs), the validation accuracy's best epoch lies in that tail AND its least-squares line
there rises by at least ``RISE_OVER_TAIL`` points over the tail's epochs (slope x tail length): an arm
still gaining as much as the training-size equivalence margin (1.5 points) over the last fifth of its
budget is no fixed point to compare within that margin. Both must hold: a plateau's best epoch falls in
the tail by chance, and a noisy tail can slope upward by chance; a curve that is still climbing does both.
Curves shorter than ``MIN_EPOCHS`` epochs, or without validation accuracy, are not judged (False).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["MIN_EPOCHS", "MIN_TAIL", "RISE_OVER_TAIL", "TAIL_FRACTION", "mean_curve", "still_rising"]

TAIL_FRACTION = 0.2
MIN_TAIL = 3
MIN_EPOCHS = 5
RISE_OVER_TAIL = 1.5  # points of validation accuracy gained over the tail by its least-squares line


def _slope(values: Sequence[float]) -> float:
    """Least-squares slope of ``values`` against 0, 1, 2, ... (per step)."""
    n = len(values)
    x_mean, y_mean = (n - 1) / 2, sum(values) / n
    sxx = sum((i - x_mean) ** 2 for i in range(n))
    return sum((i - x_mean) * (v - y_mean) for i, v in enumerate(values)) / sxx


def still_rising(curve: Sequence[float | None]) -> bool:
    """True when the validation curve ``curve`` (one value per epoch, in order) was still rising at its
    end by the module's rule."""
    values = [float(v) for v in curve if isinstance(v, (int, float)) and math.isfinite(v)]
    if len(values) < MIN_EPOCHS:
        return False
    tail = max(MIN_TAIL, math.ceil(TAIL_FRACTION * len(values)))
    best = max(range(len(values)), key=lambda i: (values[i], -i))  # the first epoch reaching the best
    return best >= len(values) - tail and _slope(values[-tail:]) * tail >= RISE_OVER_TAIL


def mean_curve(curves: Sequence[Sequence[float | None]]) -> list[float | None]:
    """Per epoch, the mean over the curves that have a value there (an arm's seeds); None where none has."""
    length = max((len(c) for c in curves), default=0)
    out: list[float | None] = []
    for i in range(length):
        values = [float(c[i]) for c in curves if i < len(c) and isinstance(c[i], (int, float))]
        out.append(sum(values) / len(values) if values else None)
    return out
