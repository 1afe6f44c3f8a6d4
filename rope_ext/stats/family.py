"""A study's whole family of paired comparisons: the report's equivalence columns, Holm over every
comparison (two-sided p's, and TOST p's for claims read one at a time)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any, TypeVar

from rope_ext.stats.paired import PairedComparison, holm_map, verdict
from rope_ext.stats.power import paired_mdd

K = TypeVar("K", bound=Hashable)

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
