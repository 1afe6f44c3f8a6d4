"""Power of the paired tests: the paired t-test's minimal detectable difference, the power of TOST and
the seed-count planner for an equivalence margin."""

from __future__ import annotations

import math

import numpy as np
from scipy import integrate, optimize, stats


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


def _settled_tost_power(std: float, n: int, margin: float, delta: float) -> float | None:
    """TOST's power where no distribution is needed: 0 with fewer than 2 pairs (no sd, no test), and with
    differences of zero spread 1 or 0 as ``delta`` lies inside the margin or not; None otherwise."""
    if n < 2:
        return 0.0
    if std == 0:
        return float(abs(delta) < margin)
    return None


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
    settled = _settled_tost_power(std, n, margin, delta)
    if settled is not None:
        return settled
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
    settled = _settled_tost_power(std, n, margin, delta)
    if settled is not None:
        return settled
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
