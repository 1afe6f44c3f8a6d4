"""Seed statistics for the report, from ``scipy.stats``: t confidence intervals, paired or Welch
differences, Holm's step-down correction and the minimal detectable difference of a two-sample t-test;
and for paired comparisons over seeds: equivalence by two one-sided tests (TOST), an exact
sign-flip test beside the t-test with a Shapiro-Wilk check choosing which one leads, Holm over a study's
whole family (of the two-sided p's, and of the TOST p's for claims read one at a time), no equivalence
verdict where both arms are near chance, the paired test's minimal detectable difference, and a seed-count planner for TOST.

Values are per-seed numbers (e.g. test accuracy in %); ``None``/NaN entries are dropped first.
docs/statistics.md describes every statistic and how to recompute them with plain scipy. Modules: ``seeds``
(per-arm intervals and differences, Holm), ``paired`` (one paired comparison: TOST, sign flips, verdict),
``power`` (detectable differences, TOST power, the seed planner), ``family`` (a study's Holm family).
"""

from __future__ import annotations

from rope_ext.stats.family import EQUIVALENCE_COLUMNS, equivalence_family
from rope_ext.stats.paired import (
    EXACT_SIGN_FLIP_MAX_N,
    NEAR_CHANCE_MARGINS,
    NORMALITY_ALPHA,
    SIGN_FLIP_SAMPLES,
    UNINFORMATIVE,
    LeadTest,
    PairedComparison,
    Tost,
    Verdict,
    holm_map,
    lead_test,
    near_chance,
    paired_comparison,
    paired_differences,
    paired_t_p,
    shapiro_p,
    sign_flip_p,
    sign_flip_tost_p,
    tost,
    verdict,
)
from rope_ext.stats.power import paired_mdd, seeds_for_equivalence, tost_power, tost_power_bound
from rope_ext.stats.seeds import (
    Diff,
    MeanCI,
    compare,
    finite_values,
    holm,
    mean_ci,
    min_detectable_diff,
    pooled_std,
)

__all__ = [
    "EQUIVALENCE_COLUMNS",
    "EXACT_SIGN_FLIP_MAX_N",
    "NORMALITY_ALPHA",
    "SIGN_FLIP_SAMPLES",
    "LeadTest",
    "Verdict",
    "finite_values",
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
