"""Paired comparisons over seeds: equivalence by two one-sided tests (TOST), an exact sign-flip test
beside the t-test with a Shapiro-Wilk check choosing which one leads, Holm over a mapping of
comparisons, the near-chance rule and the verdict."""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

import numpy as np
from scipy import stats

from rope_ext.stats.seeds import finite_values, holm

K = TypeVar("K", bound=Hashable)

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
    a = {s: v for s, v in arm.items() if len(finite_values([v]))}
    b = {s: v for s, v in baseline.items() if len(finite_values([v]))}
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
    d = finite_values(diffs)
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
    d = finite_values(diffs)
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
    e = finite_values(diffs) - mu
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
    d = finite_values(diffs)
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
    d = finite_values(diffs)
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
