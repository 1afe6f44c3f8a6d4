"""The not-converged rule (rope_ext.report.convergence, docs/statistics.md "Not converged")."""

from __future__ import annotations

from rope_ext.report.convergence import mean_curve, still_rising


def test_a_curve_still_climbing_is_rising_a_plateau_is_not() -> None:
    climbing = [10.0 + 2.0 * e for e in range(40)]
    plateau = [90.0 + min(e, 20) * 0.2 for e in range(40)]
    assert still_rising(climbing) and not still_rising(plateau)


def test_both_conditions_are_needed() -> None:
    # best epoch in the tail but a flat tail (a plateau's lucky last epoch): not rising
    lucky = [80.0] * 39 + [80.5]
    assert not still_rising(lucky)
    # a steep tail whose best epoch lies before it (a dip and a partial recovery): not rising
    dip = [95.0] * 30 + [80.0 + 1.5 * i for i in range(10)]
    assert max(dip[-8:]) < 95.0 and not still_rising(dip)
    # the threshold: 1.5 points over the tail's 8 epochs, just below and just above
    base = [50.0] * 32
    assert not still_rising(base + [50.0 + 0.18 * (i + 1) for i in range(8)])
    assert still_rising(base + [50.0 + 0.19 * (i + 1) for i in range(8)])


def test_short_or_empty_curves_are_not_judged_and_missing_values_are_skipped() -> None:
    assert not still_rising([10.0, 20.0, 30.0, 40.0])
    assert not still_rising([None] * 10)
    assert still_rising([None, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0])
    assert mean_curve([[1.0, 2.0, None], [3.0], []]) == [2.0, 2.0, None]
