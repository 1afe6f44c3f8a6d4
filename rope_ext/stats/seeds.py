"""Per-arm seed statistics: t confidence intervals, paired or Welch differences, Holm's step-down
correction, and the minimal detectable difference of a two-sample t-test."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats


@dataclass(frozen=True)
class MeanCI:
    """Mean with its two-sided t confidence interval (``low``/``high`` None when n < 2)."""

    mean: float | None
    low: float | None
    high: float | None
    n: int
    std: float | None


@dataclass(frozen=True)
class Diff:
    """``mean(arm) - mean(baseline)`` with its t confidence interval and two-sided p-value."""

    diff: float
    low: float | None
    high: float | None
    p_value: float | None
    paired: bool

    @property
    def significant(self) -> bool:
        """The CI excludes 0 (False when there is no CI)."""
        return self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)


def finite_values(values: Sequence[float | None]) -> np.ndarray:
    """The finite numbers of ``values`` as floats: None, NaN, infinities and booleans dropped."""
    nums = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return np.array([v for v in nums if math.isfinite(v)], dtype=float)


def mean_ci(values: Sequence[float | None], confidence: float = 0.95) -> MeanCI:
    """Mean and ``confidence`` t-interval of ``values`` over seeds."""
    x = finite_values(values)
    if len(x) == 0:
        return MeanCI(None, None, None, 0, None)
    mean = float(x.mean())
    if len(x) < 2:
        return MeanCI(mean, None, None, 1, None)
    std = float(x.std(ddof=1))
    if std == 0:
        return MeanCI(mean, mean, mean, len(x), 0.0)
    low, high = stats.t.interval(confidence, len(x) - 1, loc=mean, scale=stats.sem(x))
    return MeanCI(mean, float(low), float(high), len(x), std)


def compare(
    arm: dict[int, float | None], baseline: dict[int, float | None], confidence: float = 0.95
) -> Diff | None:
    """``arm - baseline`` from ``{seed: value}`` maps: paired t-test over the seeds when both ran the same
    seeds (at least 2), Welch's t-test otherwise; None when either side has no value."""
    a = {s: v for s, v in arm.items() if len(finite_values([v]))}
    b = {s: v for s, v in baseline.items() if len(finite_values([v]))}
    if not a or not b:
        return None
    xa, xb = finite_values(list(a.values())), finite_values(list(b.values()))
    diff = float(xa.mean() - xb.mean())
    if set(a) == set(b) and len(a) >= 2:
        seeds = sorted(a)
        xa, xb = finite_values([a[s] for s in seeds]), finite_values([b[s] for s in seeds])
        if np.all(xa - xb == xa[0] - xb[0]):  # no spread in the differences: the test is undefined
            return Diff(diff, diff, diff, 0.0 if diff else 1.0, True)
        res = stats.ttest_rel(xa, xb)
        ci = res.confidence_interval(confidence)
        return Diff(diff, float(ci.low), float(ci.high), float(res.pvalue), True)
    if len(xa) < 2 or len(xb) < 2 or (xa.std() == 0 and xb.std() == 0):
        return Diff(diff, None, None, None, False)
    res = stats.ttest_ind(xa, xb, equal_var=False)
    ci = res.confidence_interval(confidence)
    return Diff(diff, float(ci.low), float(ci.high), float(res.pvalue), False)


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (family-wise error), None/NaN entries left out of the family.

    Sorted ascending, ``p_(1) <= ... <= p_(m)``, the adjusted value of the k-th smallest (1-based) is
    ``min(1, max_{j <= k} (m - j + 1) p_(j))``: the running maximum keeps the adjusted values in the
    order of the raw ones (Holm 1979). ``adjusted <= alpha`` exactly for the hypotheses Holm's step-down
    rejects at ``alpha`` (reject while ``p_(k) <= alpha / (m - k + 1)``, stop at the first that is not).
    scipy has only BH/BY (``false_discovery_control``), which control the false discovery rate instead.
    """
    idx = [i for i, p in enumerate(p_values) if p is not None and math.isfinite(p)]
    m = len(idx)
    out: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda i: p_values[i])):  # type: ignore[arg-type, return-value]
        running = max(running, min(1.0, (m - rank) * float(p_values[i])))  # type: ignore[arg-type]
        out[i] = running
    return out


def pooled_std(groups: Sequence[Sequence[float | None]]) -> tuple[float | None, int]:
    """The seed standard deviation pooled over groups (each weighted by its n - 1) and its degrees of
    freedom; (None, 0) when no group has two values."""
    ss, df = 0.0, 0
    for values in groups:
        x = finite_values(values)
        if len(x) >= 2:
            ss += float(((x - x.mean()) ** 2).sum())
            df += len(x) - 1
    return (math.sqrt(ss / df), df) if df else (None, 0)


def min_detectable_diff(std: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float | None:
    """The smallest true difference a two-sided two-sample t-test with ``n`` seeds per arm detects with
    probability ``power`` at level ``alpha``, for a seed standard deviation ``std`` (noncentral t).

    Unpaired and uncorrected: for paired comparisons over seeds ``paired_mdd`` (from the sd of the
    differences, at the family's Bonferroni level) is the one that matches the test the report runs."""
    if n < 2 or not std or not math.isfinite(std):
        return None
    df = 2 * n - 2
    crit = stats.t.ppf(1 - alpha / 2, df)
    scale = std * math.sqrt(2.0 / n)

    def shortfall(delta: float) -> float:
        ncp = delta / scale
        # the far tail (rejecting with the wrong sign) is ~0 and turns NaN in nct for large ncp
        wrong_sign = float(np.nan_to_num(stats.nct.cdf(-crit, df, ncp)))
        return float(stats.nct.sf(crit, df, ncp)) + wrong_sign - power

    # power is ~1 long before ncp = 30 for any df >= 2
    return float(optimize.brentq(shortfall, 1e-9 * scale, 30 * scale))
