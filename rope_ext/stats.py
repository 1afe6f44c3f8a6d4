"""Seed statistics for the report, from ``scipy.stats``: t confidence intervals, paired or Welch
differences, Holm's step-down correction and the minimal detectable difference of a two-sample t-test;
and for paired comparisons over seeds: equivalence by two one-sided tests (TOST), an exact
sign-flip test beside the t-test with a Shapiro-Wilk check choosing which one leads, Holm over a study's
whole family (of the two-sided p's, and of the TOST p's for claims read one at a time), no equivalence
verdict where both arms are near chance, the paired test's minimal detectable difference, and a seed-count planner for TOST.

Values are per-seed numbers (e.g. test accuracy in %); ``None``/NaN entries are dropped first.
docs/statistics.md describes every statistic and how to recompute them with plain scipy.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np
from scipy import integrate, optimize, stats

__all__ = [
    "EQUIVALENCE_COLUMNS",
    "NEAR_CHANCE_MARGINS",
    "UNINFORMATIVE",
    "Diff",
    "MeanCI",
    "PairedComparison",
    "Tost",
    "compare",
    "equivalence_family",
    "holm",
    "holm_map",
    "lead_test",
    "mean_ci",
    "near_chance",
    "min_detectable_diff",
    "paired_comparison",
    "paired_differences",
    "paired_mdd",
    "paired_t_p",
    "pooled_std",
    "seeds_for_equivalence",
    "shapiro_p",
    "sign_flip_p",
    "sign_flip_tost_p",
    "tost",
    "tost_power",
    "tost_power_bound",
    "verdict",
]

K = TypeVar("K", bound=Hashable)


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


def _clean(values: Sequence[float | None]) -> np.ndarray:
    nums = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return np.array([v for v in nums if math.isfinite(v)], dtype=float)


def mean_ci(values: Sequence[float | None], confidence: float = 0.95) -> MeanCI:
    """Mean and ``confidence`` t-interval of ``values`` over seeds."""
    x = _clean(values)
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
    a = {s: v for s, v in arm.items() if len(_clean([v]))}
    b = {s: v for s, v in baseline.items() if len(_clean([v]))}
    if not a or not b:
        return None
    xa, xb = _clean(list(a.values())), _clean(list(b.values()))
    diff = float(xa.mean() - xb.mean())
    if set(a) == set(b) and len(a) >= 2:
        seeds = sorted(a)
        xa, xb = _clean([a[s] for s in seeds]), _clean([b[s] for s in seeds])
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
        x = _clean(values)
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


# --- paired equivalence, family-wise Holm, paired power -------------------------------------------
#
# One comparison = the per-seed differences d_i = arm_i - baseline_i over the seeds both arms ran
# (n of them). Everything below is a function of those differences, a margin m and a level alpha.

LeadTest = Literal["t", "sign-flip"]
Verdict = Literal["equivalent", "different", "inconclusive", "uninformative (near chance)"]
UNINFORMATIVE = "uninformative (near chance)"
# an equivalence test says nothing where both arms sit within NEAR_CHANCE_MARGINS margins of chance
# (docs/statistics.md, "Near chance")
NEAR_CHANCE_MARGINS = 2.0
NORMALITY_ALPHA = 0.05  # Shapiro-Wilk level below which the sign-flip p leads
# 2**22 pattern sums enumerated (as two halves of 2**11, 32 MB): exact for the studies' 12 and 18 seeds, so
# docs/statistics.md's plain enumeration recomputes the report's p's; above, a seeded sample
EXACT_SIGN_FLIP_MAX_N = 22
SIGN_FLIP_SAMPLES = 2**16


def paired_differences(arm: Mapping[int, float | None], baseline: Mapping[int, float | None]) -> np.ndarray:
    """``arm[s] - baseline[s]`` for every seed ``s`` with a finite value on both sides, in seed order
    (shape ``(n,)``). Seeds only one arm ran are left out: pairing needs the same seed on both sides."""
    a = {s: v for s, v in arm.items() if len(_clean([v]))}
    b = {s: v for s, v in baseline.items() if len(_clean([v]))}
    seeds = sorted(set(a) & set(b))
    return np.array([float(a[s]) - float(b[s]) for s in seeds], dtype=float)  # type: ignore[arg-type]


def _spread(d: np.ndarray) -> float:
    """Sample sd of the differences; exactly 0.0 when they are all equal (float noise would make it 1e-16)."""
    return 0.0 if np.all(d == d[0]) else float(d.std(ddof=1))


@dataclass(frozen=True)
class Tost:
    """Two one-sided paired t-tests of ``|mean difference| < margin`` (Schuirmann 1987).

    With ``se = sd / sqrt(n)`` and ``df = n - 1``::

        p_lower = P(T_df >= (mean + m) / se)     H0: true difference <= -m
        p_upper = P(T_df <= (mean - m) / se)     H0: true difference >= +m
        p       = max(p_lower, p_upper)
        CI      = mean -/+ t_{1-alpha, df} * se   (the (1 - 2 alpha) CI, 90 % at alpha = 0.05)

    ``p < alpha`` exactly when the CI lies inside ``(-m, m)``. Zero spread (all differences equal,
    ``se = 0``): the limit ``se -> 0`` is used, CI ``[mean, mean]`` and each one-sided p is 0 when the mean
    is strictly on the margin's inner side, else 1. n < 2: no CI, no p (None).
    """

    mean: float | None
    low: float | None
    high: float | None
    p_lower: float | None
    p_upper: float | None
    p: float | None
    margin: float
    n: int


def tost(diffs: Sequence[float], margin: float, alpha: float = 0.05) -> Tost:
    """TOST of the paired differences ``diffs`` (shape ``(n,)``) against ``(-margin, margin)``."""
    if not margin > 0 or not math.isfinite(margin):
        raise ValueError(f"margin={margin!r}: the equivalence margin must be a finite number > 0")
    d = _clean(diffs)
    n = len(d)
    if n == 0:
        return Tost(None, None, None, None, None, None, margin, 0)
    mean = float(d.mean())
    if n < 2:
        return Tost(mean, None, None, None, None, None, margin, 1)
    se = _spread(d) / math.sqrt(n)
    if se == 0:
        p_lo, p_hi = float(not mean > -margin), float(not mean < margin)
        return Tost(mean, mean, mean, p_lo, p_hi, max(p_lo, p_hi), margin, n)
    df = n - 1
    half = float(stats.t.ppf(1 - alpha, df)) * se
    p_lo = float(stats.t.sf((mean + margin) / se, df))
    p_hi = float(stats.t.cdf((mean - margin) / se, df))
    return Tost(mean, mean - half, mean + half, p_lo, p_hi, max(p_lo, p_hi), margin, n)


def paired_t_p(diffs: Sequence[float]) -> float | None:
    """Two-sided p of the paired t-test (``scipy.stats.ttest_1samp(d, 0)``); zero spread: 0 when the
    differences are non-zero, 1 when they are all 0 (the limit, as ``compare`` does); None for n < 2."""
    d = _clean(diffs)
    if len(d) < 2:
        return None
    if _spread(d) == 0:
        return 0.0 if d[0] != 0 else 1.0
    return float(stats.ttest_1samp(d, 0.0).pvalue)


def _all_signs(n: int) -> np.ndarray:
    """Every row of +-1, shape ``(2**n, n)``, the first all +1."""
    bits = (np.arange(2**n)[:, None] >> np.arange(n)[None, :]) & 1
    return 1 - 2 * bits


def _pattern_sums(e: np.ndarray) -> np.ndarray:
    """``sum(s * e)`` for every sign pattern s when n <= EXACT_SIGN_FLIP_MAX_N (the sums of the two halves'
    patterns added pairwise: 2**n sums from 2 * 2**(n/2) rows, the identity among them), else for the
    identity and ``SIGN_FLIP_SAMPLES`` patterns drawn from a fixed seed."""
    n = len(e)
    if n <= EXACT_SIGN_FLIP_MAX_N:
        h = n // 2
        first, second = _all_signs(h) @ e[:h], _all_signs(n - h) @ e[h:]
        return (first[:, None] + second[None, :]).ravel()
    rng = np.random.default_rng(0)
    signs = np.vstack([np.ones((1, n), int), rng.choice([-1, 1], size=(SIGN_FLIP_SAMPLES, n))])
    return signs @ e


def sign_flip_p(
    diffs: Sequence[float],
    mu: float = 0.0,
    alternative: Literal["two-sided", "greater", "less"] = "two-sided",
) -> float | None:
    """Exact sign-flip (paired permutation) p of H0: the differences are symmetric about ``mu``.

    Under H0 each ``e_i = d_i - mu`` is as likely ``+e_i`` as ``-e_i``; the statistic is ``S = sum(e)``
    and the p is the share of the 2**n sign patterns ``s`` with ``sum(s * e) >= S`` (``greater``),
    ``<= S`` (``less``) or ``|.| >= |S|`` (two-sided; equal to twice the smaller one-sided p, capped
    at 1, because the null distribution is symmetric). Exact for n <= 22 (all patterns, so the smallest
    p is ``2 / 2**n`` two-sided: 0.0078 at n = 8, 0.00049 at n = 12); above, ``(1 + hits) / (1 + B)``
    over B = 65536 patterns from a fixed seed. Ties count as hits (with a 1e-9 relative tolerance for
    float sums). Same values as ``scipy.stats.permutation_test((d - mu,), np.mean,
    permutation_type="samples", n_resamples=np.inf)`` except on ties that float rounding splits, which
    scipy can miss (accuracies are counts of images, so exact ties are common). Defined for every n >= 1
    and for zero spread; None only for n = 0.
    """
    e = _clean(diffs) - mu
    n = len(e)
    if n == 0:
        return None
    sums = _pattern_sums(e)
    observed = float(e.sum())
    tol = 1e-9 * max(1.0, float(np.abs(e).sum()))
    if alternative == "greater":
        hits = int(np.sum(sums >= observed - tol))
    elif alternative == "less":
        hits = int(np.sum(sums <= observed + tol))
    else:
        hits = int(np.sum(np.abs(sums) >= abs(observed) - tol))
    # exact: hits / 2**n (the identity pattern is one of the hits); sampled: the identity row is included
    return min(1.0, hits / len(sums))


def sign_flip_tost_p(diffs: Sequence[float], margin: float) -> float | None:
    """TOST by sign flips: ``max(sign_flip_p(d, -m, "greater"), sign_flip_p(d, +m, "less"))``, which assumes
    only that the differences are symmetric about their centre. None for n = 0."""
    lower = sign_flip_p(diffs, -margin, "greater")
    upper = sign_flip_p(diffs, margin, "less")
    return None if lower is None or upper is None else max(lower, upper)


def shapiro_p(diffs: Sequence[float]) -> float | None:
    """Shapiro-Wilk p of the differences (``scipy.stats.shapiro``); None for n < 3 or zero spread, where the
    test is undefined."""
    d = _clean(diffs)
    if len(d) < 3 or _spread(d) == 0:
        return None
    return float(stats.shapiro(d).pvalue)


@dataclass(frozen=True)
class PairedComparison:
    """Everything one paired comparison reports, from its own differences (``paired_comparison``).

    ``lead`` says which test the report leads with: ``"t"`` (paired t-test, TOST by t) unless the
    differences fail the normality check (Shapiro-Wilk p < 0.05) or have zero spread (the t-test is
    undefined there), or n = 1; then ``"sign-flip"`` (exact sign-flip test, TOST by sign flips).
    ``p`` and ``p_tost`` are the lead test's; both tests' values stay in the other fields.
    """

    n: int
    diff: float | None
    sd: float | None  # sd of the paired differences (ddof=1)
    ci90_low: float | None  # the (1 - 2 alpha) t-CI TOST uses
    ci90_high: float | None
    margin: float | None
    p_t: float | None  # two-sided paired t-test
    p_sign_flip: float | None  # two-sided exact sign-flip
    p_shapiro: float | None
    lead: LeadTest | None
    p: float | None  # the lead test's two-sided p (enters Holm)
    p_tost_t: float | None
    p_tost_sign_flip: float | None
    p_tost: float | None  # the lead test's TOST p


def lead_test(n: int, sd: float | None, p_shapiro: float | None) -> LeadTest | None:
    """``"sign-flip"`` when the t-test cannot be trusted (n = 1, zero spread, Shapiro-Wilk p < 0.05),
    ``"t"`` otherwise (n = 2 has no normality check and leads with t: its sign-flip p is at least 0.5);
    None for n = 0."""
    if n == 0:
        return None
    if n == 1 or sd == 0 or (p_shapiro is not None and p_shapiro < NORMALITY_ALPHA):
        return "sign-flip"
    return "t"


def paired_comparison(diffs: Sequence[float], margin: float | None, alpha: float = 0.05) -> PairedComparison:
    """The per-comparison statistics of the paired differences ``diffs`` (shape ``(n,)``) against the
    equivalence margin ``margin`` at level ``alpha`` (None: no margin, so no TOST p's); see
    ``PairedComparison``."""
    d = _clean(diffs)
    n = len(d)
    t = tost(d, margin if margin is not None else 1.0, alpha)  # its CI does not depend on the margin
    sd = _spread(d) if n >= 2 else None
    p_norm = shapiro_p(d)
    lead = lead_test(n, sd, p_norm)
    p_t, p_sf = paired_t_p(d), sign_flip_p(d)
    p_tost_t = t.p if margin is not None else None
    p_tost_sf = sign_flip_tost_p(d, margin) if margin is not None else None
    return PairedComparison(
        n=n,
        diff=t.mean,
        sd=sd,
        ci90_low=t.low,
        ci90_high=t.high,
        margin=margin,
        p_t=p_t,
        p_sign_flip=p_sf,
        p_shapiro=p_norm,
        lead=lead,
        p=p_t if lead == "t" else p_sf,
        p_tost_t=p_tost_t,
        p_tost_sign_flip=p_tost_sf,
        p_tost=p_tost_t if lead == "t" else p_tost_sf,
    )


def holm_map(p_values: Mapping[K, float | None]) -> dict[K, float | None]:
    """``holm`` over a mapping ``comparison -> p`` (e.g. ``(arm, size) -> p`` for a whole study): the same
    keys, each with its Holm-adjusted p; None (or NaN) p's stay None and are not counted in the family."""
    keys = list(p_values)
    return dict(zip(keys, holm([p_values[k] for k in keys])))


def near_chance(
    arm_mean: float | None, base_mean: float | None, chance: float | None, margin: float | None
) -> bool:
    """Both arms' mean accuracy (points) below ``chance + NEAR_CHANCE_MARGINS * margin``: two arms that
    both learned that little cannot be told apart by an equivalence test at ``margin``, so none is
    reported. False when any input is unknown."""
    if arm_mean is None or base_mean is None or chance is None or margin is None:
        return False
    return max(arm_mean, base_mean) < chance + NEAR_CHANCE_MARGINS * margin


def verdict(p_tost: float | None, p_holm: float | None, alpha: float = 0.05, near: bool = False) -> Verdict:
    """The comparison's answer.

    * ``equivalent``: ``p_tost < alpha`` (by t: the 90 % CI lies inside ``(-m, m)``). This wins even when
      the two-sided test also rejects: a real but smaller-than-margin difference is still equivalent
      (the report's separate "n.s." marker, from ``p_holm``, shows that a difference was detected).
    * ``different``: not equivalent and the two-sided test's Holm-adjusted p (over the study's whole
      family) is ``< alpha``. The difference is non-zero; it may or may not exceed the margin (its CI says).
    * ``inconclusive``: neither (includes n < 2 and missing p's).
    * ``uninformative (near chance)`` (``near``: both arms near chance, ``near_chance``): no equivalence
      verdict; ``different`` still where the Holm-adjusted two-sided p says so.

    Passed a raw TOST p, the verdict is a per-comparison claim: valid as part of the conjunctive claim
    "every comparison of this set is equivalent", an intersection-union test whose level is alpha when
    each part is tested at alpha (Berger 1982). Passed the Holm-adjusted TOST p (``equivalence_family``'s
    ``verdict_holm``), it is valid for each comparison read on its own.
    """
    if near:
        return "different" if p_holm is not None and p_holm < alpha else UNINFORMATIVE
    if p_tost is not None and p_tost < alpha:
        return "equivalent"
    if p_holm is not None and p_holm < alpha:
        return "different"
    return "inconclusive"


def paired_mdd(std: float | None, n: int, alpha: float = 0.05, power: float = 0.8) -> float | None:
    """The smallest true mean difference the two-sided paired t-test at level ``alpha`` detects with
    probability ``power``, for ``n`` pairs whose differences have standard deviation ``std``.

    ``df = n - 1``, ``c = t_{1 - alpha/2, df}``, noncentrality ``ncp = delta * sqrt(n) / std``;
    power(delta) = ``P(T'_{df,ncp} > c) + P(T'_{df,ncp} < -c)`` (noncentral t), solved for delta by
    Brent's method. None for n < 2 or a zero/non-finite std (nothing to scale by).
    """
    if n < 2 or not std or not math.isfinite(std) or not 0 < alpha < 1 or not 0 < power < 1:
        return None
    df = n - 1
    crit = float(stats.t.ppf(1 - alpha / 2, df))
    scale = std / math.sqrt(n)

    def shortfall(delta: float) -> float:
        ncp = delta / scale
        wrong_sign = float(np.nan_to_num(stats.nct.cdf(-crit, df, ncp)))  # NaN far in the tail
        return float(stats.nct.sf(crit, df, ncp)) + wrong_sign - power

    hi = 30.0 * scale
    while shortfall(hi) < 0:  # tiny alpha with n = 2 needs a far larger ncp
        hi *= 4
        if hi > 1e12 * scale:
            return None
    return float(optimize.brentq(shortfall, 1e-9 * scale, hi))


def tost_power(std: float, n: int, margin: float, alpha: float = 0.05, delta: float = 0.0) -> float:
    """Probability that the paired t-TOST at level ``alpha`` concludes equivalence within ``+-margin`` with
    ``n`` pairs of true mean difference ``delta`` and difference sd ``std`` (exact, normal differences).

    Given the sample sd s, TOST rejects iff ``|mean - 0| < m - c s / sqrt(n)`` around 0 with
    ``c = t_{1-alpha, n-1}``, i.e. ``mean`` in ``(-m + c s/sqrt(n), m - c s/sqrt(n))``. With
    ``mean ~ N(delta, std^2/n)`` and ``(n-1) s^2 / std^2 ~ chi2_{n-1}``, independent::

        power = E_s[ Phi((m - c s/sqrt(n) - delta) / (std/sqrt(n)))
                     - Phi((-m + c s/sqrt(n) - delta) / (std/sqrt(n))) ]^+

    integrated over the chi distribution (this is Owen's 1965 bivariate noncentral-t expression). The
    simpler bound ``P(T'_lower > c) + P(T'_upper < -c) - 1`` from the two noncentral t's is never above it
    (``tost_power_bound``).
    """
    if n < 2:
        return 0.0
    if std == 0:
        return float(abs(delta) < margin)
    df = n - 1
    c = float(stats.t.ppf(1 - alpha, df))
    se = std / math.sqrt(n)
    # s = std * sqrt(x / df), x ~ chi2(df); rejection needs c s / sqrt(n) < m, i.e. x < x_max
    x_max = df * (margin / (c * se)) ** 2

    def integrand(x: float) -> float:
        half = margin - c * se * math.sqrt(x / df)
        inside = stats.norm.cdf((half - delta) / se) - stats.norm.cdf((-half - delta) / se)
        return float(max(inside, 0.0) * stats.chi2.pdf(x, df))

    value, _ = integrate.quad(integrand, 0.0, x_max, limit=200)
    return float(min(1.0, max(0.0, value)))


def tost_power_bound(std: float, n: int, margin: float, alpha: float = 0.05, delta: float = 0.0) -> float:
    """Lower bound of ``tost_power`` from the two one-sided tests' noncentral-t powers (Bonferroni
    inequality ``P(A and B) >= P(A) + P(B) - 1``): ``T'_lower ~ nct(n-1, (delta + m) sqrt(n)/std)``,
    ``T'_upper ~ nct(n-1, (delta - m) sqrt(n)/std)``; clipped at 0."""
    if n < 2:
        return 0.0
    if std == 0:
        return float(abs(delta) < margin)
    df = n - 1
    c = float(stats.t.ppf(1 - alpha, df))
    k = math.sqrt(n) / std
    p_lower = float(stats.nct.sf(c, df, (delta + margin) * k))
    p_upper = float(stats.nct.cdf(-c, df, (delta - margin) * k))
    return max(0.0, p_lower + p_upper - 1.0)


def seeds_for_equivalence(
    std: float,
    margin: float,
    alpha: float = 0.05,
    power: float = 0.8,
    delta: float = 0.0,
    n_max: int = 1000,
) -> int | None:
    """The fewest seeds (pairs) n >= 2 for which ``tost_power(std, n, margin, alpha, delta) >= power``:
    how many seeds a study needs so that TOST reaches ``+-margin`` when the true difference is ``delta``
    (0: the arms really are the same), from a pilot's sd of the paired differences ``std``. None when
    ``|delta| >= margin`` (equivalence is then not the truth) or n_max seeds do not suffice."""
    if not margin > 0 or abs(delta) >= margin or not 0 < power < 1:
        return None
    lo, hi = 2, 2
    while tost_power(std, hi, margin, alpha, delta) < power:  # power rises with n: double, then bisect
        lo, hi = hi + 1, hi * 2
        if hi > n_max:
            hi = n_max
            if tost_power(std, hi, margin, alpha, delta) < power:
                return None
            break
    while lo < hi:
        mid = (lo + hi) // 2
        if tost_power(std, mid, margin, alpha, delta) >= power:
            hi = mid
        else:
            lo = mid + 1
    return lo


EQUIVALENCE_COLUMNS = [
    "n_pairs",
    "diff_sd",
    "ci90_low",
    "ci90_high",
    "margin",
    "p_t",
    "p_sign_flip",
    "p_shapiro",
    "lead_test",
    "p_lead",
    "p_holm_family",
    "family_size",
    "p_tost",
    "p_tost_t",
    "p_tost_sign_flip",
    "verdict",
    "near_chance",
    "p_tost_holm",
    "tost_family_size",
    "verdict_holm",
    "ns",
    "mdd_paired",
]


def equivalence_family(
    comparisons: Mapping[K, PairedComparison],
    alpha: float = 0.05,
    power: float = 0.8,
    near: Mapping[K, bool] | None = None,
) -> dict[K, dict[str, Any]]:
    """The study-level columns (``EQUIVALENCE_COLUMNS``) of every comparison a study reports, keyed as
    given (e.g. ``(table, arm, size)``): the whole mapping is one Holm family. ``near``: the comparisons
    whose arms are both near chance (``near_chance``; none when not given).

    * ``p_holm_family``: Holm over the lead p's of every comparison (``family_size`` = how many have one);
    * ``ns``: True when ``p_holm_family >= alpha`` (or missing): "n.s." comes from the adjusted p;
    * ``verdict``: ``verdict(p_tost, p_holm_family, alpha, near)``: per comparison, the parts of a
      conjunctive (intersection-union) claim;
    * ``p_tost_holm``: Holm over the TOST p's of the comparisons with one that are not near chance
      (``tost_family_size`` of them), and ``verdict_holm`` from it: each comparison's own claim;
    * ``mdd_paired``: ``paired_mdd(sd, n, alpha / family_size, power)``: Holm's first step is the
      Bonferroni level alpha/m and every later step is more lenient, so a difference this large is
      detected with at least ``power`` whatever the other comparisons do (the rank-dependent Holm level
      would make the MDD depend on the other p's).
    """
    near = near or {}
    adjusted = holm_map({k: c.p for k, c in comparisons.items()})
    m = sum(p is not None for p in adjusted.values())
    tested = {k: c.p_tost for k, c in comparisons.items() if c.p_tost is not None and not near.get(k)}
    tost_adjusted = holm_map(tested)
    out: dict[K, dict[str, Any]] = {}
    for k, c in comparisons.items():
        ph, close = adjusted[k], bool(near.get(k))
        out[k] = {
            "n_pairs": c.n,
            "diff_sd": c.sd,
            "ci90_low": c.ci90_low,
            "ci90_high": c.ci90_high,
            "margin": c.margin,
            "p_t": c.p_t,
            "p_sign_flip": c.p_sign_flip,
            "p_shapiro": c.p_shapiro,
            "lead_test": c.lead,
            "p_lead": c.p,
            "p_holm_family": ph,
            "family_size": m,
            "p_tost": c.p_tost,
            "p_tost_t": c.p_tost_t,
            "p_tost_sign_flip": c.p_tost_sign_flip,
            "verdict": verdict(c.p_tost, ph, alpha, close),
            "near_chance": close,
            "p_tost_holm": tost_adjusted.get(k),
            "tost_family_size": len(tested),
            "verdict_holm": verdict(tost_adjusted.get(k), ph, alpha, close),
            "ns": ph is None or ph >= alpha,
            "mdd_paired": paired_mdd(c.sd, c.n, alpha / max(m, 1), power),
        }
    return out
