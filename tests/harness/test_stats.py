"""rope_ext.stats' paired statistics: TOST, Holm over a family, sign-flip test, normality lead,
paired MDD and the seed planner, against hand-worked values, plain scipy and brute force."""

from __future__ import annotations

import csv
import itertools
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy import stats as sst

from rope_ext import stats

finite = st.floats(min_value=-20, max_value=20, allow_nan=False, allow_infinity=False)
# accuracy differences on a 360-image test set move in steps of 100/360 points: ties and equal values
steps = st.integers(min_value=-20, max_value=20).map(lambda k: k * 100 / 360)
diffs_strategy = st.lists(st.one_of(finite, steps), min_size=2, max_size=10)


def test_tost_hand_worked_with_two_degrees_of_freedom() -> None:
    # d = (1, 2, 3): mean 2, sd 1, se = 1/sqrt(3), df = 2, where the t cdf is 1/2 + t / (2 sqrt(t^2 + 2))
    # and its quantile t_p = (2p - 1) / sqrt(2 p (1 - p)).
    res = stats.tost([1.0, 2.0, 3.0], margin=3.0)
    t_upper = (2 - 3) * math.sqrt(3)  # -sqrt(3)
    t_lower = (2 + 3) * math.sqrt(3)  # 5 sqrt(3)
    assert res.p_upper == pytest.approx(0.5 + t_upper / (2 * math.sqrt(t_upper**2 + 2)))  # 0.1127
    assert res.p_lower == pytest.approx(0.5 - t_lower / (2 * math.sqrt(t_lower**2 + 2)))  # 0.0065
    assert res.p == pytest.approx(0.11270166537925837)
    q95 = 0.9 / math.sqrt(2 * 0.95 * 0.05)  # 2.91999
    assert (res.low, res.high) == pytest.approx((2 - q95 / math.sqrt(3), 2 + q95 / math.sqrt(3)))
    assert res.high > 3 and res.p > 0.05  # CI reaches past +m: not equivalent
    assert stats.tost([1.0, 2.0, 3.0], margin=3.7).p < 0.05  # 3.686 < 3.7: now inside


@given(d=st.lists(finite, min_size=3, max_size=12), margin=st.floats(0.1, 30))
@settings(max_examples=60, deadline=None)
def test_tost_is_two_scipy_one_sided_tests_and_the_90_ci(d: list[float], margin: float) -> None:
    x = np.array(d)
    assume(np.ptp(x) > 1e-6 * max(1.0, np.abs(x).max()))
    res = stats.tost(d, margin)
    lower = sst.ttest_1samp(x, -margin, alternative="greater").pvalue
    upper = sst.ttest_1samp(x, margin, alternative="less").pvalue
    assert res.p_lower == pytest.approx(lower, abs=1e-12) and res.p_upper == pytest.approx(upper, abs=1e-12)
    ci = sst.ttest_1samp(x, 0.0).confidence_interval(0.90)
    assert (res.low, res.high) == pytest.approx((ci.low, ci.high))
    inside = -margin < ci.low and ci.high < margin
    away = min(abs(ci.low + margin), abs(ci.high - margin))  # not on the CI/margin boundary
    if away > 1e-9:
        assert (res.p < 0.05) == inside


@given(d=diffs_strategy, m1=st.floats(0.05, 10), m2=st.floats(0.05, 10))
@settings(max_examples=60, deadline=None)
def test_tost_p_falls_as_the_margin_widens(d: list[float], m1: float, m2: float) -> None:
    small, large = sorted((m1, m2))
    for p in (stats.tost, stats.sign_flip_tost_p):
        p_small, p_large = (p(d, m) for m in (small, large))
        if p is stats.tost:
            p_small, p_large = p_small.p, p_large.p
        assert p_large <= p_small + 1e-12


def test_holm_hand_worked_over_a_mapping() -> None:
    # sorted: d 0.005 x 4 = 0.02, a 0.01 x 3 = 0.03, c 0.03 x 2 = 0.06, b 0.04 x 1 = 0.04 -> max 0.06
    fam = {("a", 32): 0.01, ("b", 32): 0.04, ("c", 48): 0.03, ("d", 48): 0.005, ("e", 48): None}
    adj = stats.holm_map(fam)
    assert list(adj) == list(fam)
    expected = {("a", 32): 0.03, ("b", 32): 0.06, ("c", 48): 0.06, ("d", 48): 0.02}
    assert {k: adj[k] for k in expected} == pytest.approx(expected) and adj[("e", 48)] is None
    # capped at 1, and the cap carries down through the running maximum: 1.2 -> 1, 0.9 -> 1, 0.9 -> 1
    assert stats.holm([0.4, 0.45, 0.9]) == pytest.approx([1.0, 1.0, 1.0])
    assert stats.holm([float("nan"), 0.02]) == [None, pytest.approx(0.02)]  # NaN is not in the family
    # a study's family is larger than one table's column: 0.0094 is 0.047 over 5 tests, 0.19 over 20
    one_table = stats.holm([0.0094, 0.2, 0.3, 0.5, 0.6])[0]
    whole = stats.holm([0.0094] + [0.5] * 19)[0]
    assert one_table == pytest.approx(0.047) and whole == pytest.approx(0.188)


def _step_down(p: list[float], alpha: float) -> set[int]:
    """Holm's procedure as written in Holm (1979): reject in order while p_(k) <= alpha / (m - k + 1)."""
    order = sorted(range(len(p)), key=lambda i: p[i])
    rejected: set[int] = set()
    for k, i in enumerate(order):
        if p[i] > alpha / (len(p) - k):
            break
        rejected.add(i)
    return rejected


@given(p=st.lists(st.floats(0, 1), min_size=1, max_size=25), alpha=st.sampled_from([0.01, 0.05, 0.1]))
@settings(max_examples=150, deadline=None)
def test_holm_is_the_step_down_procedure(p: list[float], alpha: float) -> None:
    adj = stats.holm(p)
    m = len(p)
    # keep away from the rejection boundaries, where (m - k) p <= alpha and p <= alpha / (m - k) may
    # round differently
    assume(all(abs(x * j - alpha) > 1e-12 for x in p for j in range(1, m + 1)))
    assert all(a is not None and x <= a <= 1 for x, a in zip(p, adj))
    for i, j in itertools.combinations(range(m), 2):  # the adjusted p's keep the raw order
        if p[i] <= p[j]:
            assert adj[i] <= adj[j]
        if p[j] <= p[i]:
            assert adj[j] <= adj[i]
    assert {i for i, a in enumerate(adj) if a <= alpha} == _step_down(p, alpha)


def _brute_sign_flip(d: list[float], mu: float, alternative: str) -> float:
    e = np.array(d) - mu
    obs = e.sum()
    hits = 0
    for signs in itertools.product([1, -1], repeat=len(e)):
        s = float(np.dot(signs, e))
        tol = 1e-9 * max(1.0, np.abs(e).sum())
        hits += {
            "greater": s >= obs - tol,
            "less": s <= obs + tol,
            "two-sided": abs(s) >= abs(obs) - tol,
        }[alternative]
    return hits / 2 ** len(e)


@given(
    d=st.lists(st.one_of(finite, steps), min_size=1, max_size=8),
    mu=st.sampled_from([0.0, -1.5, 1.5]),
    alternative=st.sampled_from(["two-sided", "greater", "less"]),
)
@settings(max_examples=80, deadline=None)
def test_sign_flip_is_exact_enumeration(d: list[float], mu: float, alternative: str) -> None:
    p = stats.sign_flip_p(d, mu, alternative)  # type: ignore[arg-type]
    assert p == pytest.approx(_brute_sign_flip(d, mu, alternative))
    assert p * 2 ** len(d) == pytest.approx(round(p * 2 ** len(d)))  # a count of patterns: exact


def test_sign_flip_matches_scipy_permutation_test_and_its_floor() -> None:
    rng = np.random.default_rng(3)
    for n in (5, 9, 12, 18):  # 18: the digits blocks study's seeds, exact as scipy's
        e = rng.normal(0.4, 1.0, n)
        for alt in ("two-sided", "greater", "less"):
            ref = sst.permutation_test(
                (e,), np.mean, permutation_type="samples", n_resamples=np.inf, alternative=alt
            )
            assert stats.sign_flip_p(e, alternative=alt) == pytest.approx(ref.pvalue)  # type: ignore[arg-type]
    # all 12 differences positive: only the identity and the all-flip reach |S|: p = 2 / 4096
    assert stats.sign_flip_p(np.arange(1.0, 13.0)) == pytest.approx(2 / 4096)
    assert stats.sign_flip_p(np.ones(8)) == pytest.approx(2 / 256)  # the floor at n = 8: 0.0078
    assert stats.sign_flip_p(np.zeros(5)) == 1.0
    assert stats.sign_flip_p(np.arange(1.0, 21.0)) == pytest.approx(2 / 2**20)  # exact up to 22 pairs
    # above 22 pairs: a fixed sample, still a valid p (never 0) and reproducible
    big = rng.normal(0.0, 1.0, 24)
    p = stats.sign_flip_p(big)
    assert 0 < p <= 1 and p == stats.sign_flip_p(big)
    assert stats.sign_flip_p(np.arange(1.0, 25.0)) == pytest.approx(
        1 / (stats.SIGN_FLIP_SAMPLES + 1), rel=0.5
    )


def test_normality_decides_the_lead_test() -> None:
    normal = [0.5, -1.2, 0.3, 1.1, -0.4, 0.2, 0.9, -0.1, 0.6, -0.7, 0.0, 0.35]
    c = stats.paired_comparison(normal, margin=1.5)
    assert c.p_shapiro == pytest.approx(sst.shapiro(normal).pvalue) and c.p_shapiro > 0.05
    assert c.lead == "t" and c.p == c.p_t and c.p_tost == c.p_tost_t
    assert c.p_t == pytest.approx(sst.ttest_rel(np.array(normal) + 5, np.full(12, 5.0)).pvalue)
    # one stalled seed among eleven near 0 (what an APE stall does to a difference): not normal
    stalled = [0.1, -0.2, 0.0, 0.3, -0.1, 0.2, 0.1, -0.3, 0.0, 0.2, -0.1, -35.0]
    c = stats.paired_comparison(stalled, margin=5.0)
    assert c.p_shapiro < 0.05 and c.lead == "sign-flip"
    assert c.p == c.p_sign_flip and c.p_tost == c.p_tost_sign_flip
    assert c.p_tost == pytest.approx(stats.sign_flip_tost_p(stalled, 5.0))


def test_edge_cases_give_defined_answers() -> None:
    for d in ([], [float("nan")]):
        c = stats.paired_comparison(d, margin=1.0)
        assert c.n == 0 and c.diff is None and c.p is None and c.p_tost is None and c.lead is None
    one = stats.paired_comparison([0.4], margin=1.0)
    assert one.n == 1 and one.diff == pytest.approx(0.4) and one.sd is None and one.ci90_low is None
    assert one.p_t is None and one.lead == "sign-flip" and one.p == 1.0 and one.p_tost == 0.5
    # zero spread, non-zero: the t limit (CI [d, d], TOST p 0, two-sided p 0), led by the exact sign flip
    same = stats.paired_comparison([0.5] * 6, margin=1.0)
    assert (same.ci90_low, same.ci90_high, same.sd) == (0.5, 0.5, 0.0)
    assert same.p_tost_t == 0.0 and same.p_t == 0.0 and same.p_shapiro is None and same.lead == "sign-flip"
    assert same.p == pytest.approx(2 / 64) and same.p_tost == pytest.approx(1 / 64)
    outside = stats.tost([2.0] * 6, margin=1.0)
    assert outside.p == 1.0 and outside.p_upper == 1.0 and outside.p_lower == 0.0
    on_margin = stats.tost([1.0] * 6, margin=1.0)
    assert on_margin.p == 1.0  # equivalence is strict: a difference of exactly m is not inside
    zero = stats.paired_comparison([0.0] * 5, margin=1.0)
    assert zero.p_t == 1.0 and zero.p == 1.0 and zero.p_tost == pytest.approx(1 / 32)
    # every field is a plain number, None or a string: JSON without NaN
    for c in (one, same, zero):
        json.dumps(c.__dict__, allow_nan=False)
    with pytest.raises(ValueError, match="margin"):
        stats.tost([1.0, 2.0], margin=0.0)
    assert stats.paired_mdd(0.0, 8) is None and stats.paired_mdd(1.0, 1) is None


def test_paired_differences_pair_by_seed() -> None:
    arm = {0: 91.0, 1: 90.0, 2: None, 3: 95.0, 5: float("nan")}
    base = {0: 90.0, 1: 92.5, 2: 88.0, 3: 94.0, 4: 80.0, 5: 70.0}
    assert stats.paired_differences(arm, base).tolist() == pytest.approx([1.0, -2.5, 1.0])


def test_paired_mdd_has_the_asked_power() -> None:
    for n, sd, alpha in ((12, 2.0, 0.05), (12, 2.0, 0.05 / 30), (3, 1.0, 0.05), (2, 1.0, 0.001)):
        mdd = stats.paired_mdd(sd, n, alpha)
        df, crit, ncp = n - 1, sst.t.ppf(1 - alpha / 2, n - 1), mdd * math.sqrt(n) / sd
        assert sst.nct.sf(crit, df, ncp) + sst.nct.cdf(-crit, df, ncp) == pytest.approx(0.8, abs=1e-6)
    # a stricter level (Bonferroni over 30 tests) needs a larger difference; more seeds a smaller one
    assert stats.paired_mdd(2.0, 12, 0.05 / 30) > stats.paired_mdd(2.0, 12) > stats.paired_mdd(2.0, 24)
    # large n: the normal approximation (z_{0.975} + z_{0.8}) sd / sqrt(n)
    approx = (sst.norm.ppf(0.975) + sst.norm.ppf(0.8)) * 2.0 / math.sqrt(400)
    assert stats.paired_mdd(2.0, 400) == pytest.approx(approx, rel=0.01)
    # paired MDD uses the sd of the differences: half the unpaired MDD when that sd is half of sd*sqrt(2)
    assert stats.paired_mdd(1.0, 8) < stats.min_detectable_diff(1.0, 8)


def test_tost_power_against_simulation_and_the_nct_bound() -> None:
    rng = np.random.default_rng(0)
    for n, sd, margin, delta in ((12, 2.0, 1.5, 0.0), (6, 1.0, 1.5, 0.5), (20, 3.0, 2.0, -0.5)):
        x = rng.normal(delta, sd, (40_000, n))
        mean, se = x.mean(1), x.std(1, ddof=1) / math.sqrt(n)
        c = sst.t.ppf(0.95, n - 1)
        simulated = np.mean((mean - c * se > -margin) & (mean + c * se < margin))
        exact = stats.tost_power(sd, n, margin, delta=delta)
        assert exact == pytest.approx(simulated, abs=0.01)  # 4 binomial sd at 40 000 draws
        assert stats.tost_power_bound(sd, n, margin, delta=delta) <= exact + 1e-9
    assert stats.tost_power(1.0, 1, 1.0) == 0.0 and stats.tost_power(0.0, 5, 1.0, delta=0.5) == 1.0


def test_seed_planner_finds_the_fewest_seeds() -> None:
    n = stats.seeds_for_equivalence(2.0, 1.5)
    assert n is not None
    assert stats.tost_power(2.0, n, 1.5) >= 0.8 > stats.tost_power(2.0, n - 1, 1.5)
    n90 = stats.seeds_for_equivalence(2.0, 1.5, power=0.9)
    shifted = stats.seeds_for_equivalence(2.0, 1.5, delta=0.5)
    assert n90 > n and shifted > n  # more power, or a true difference inside the margin, costs seeds
    assert stats.seeds_for_equivalence(0.2, 1.5) == 2  # tiny spread: the fewest pairs with a df
    assert stats.seeds_for_equivalence(2.0, 1.5, delta=1.5) is None  # at the margin: never equivalent
    assert stats.seeds_for_equivalence(50.0, 1.5, n_max=100) is None  # out of reach


def test_equivalence_family_verdicts_ns_and_mdd() -> None:
    rng = np.random.default_rng(7)
    noise = rng.normal(0.0, 0.5, 12)
    noise -= noise.mean()
    comps = {
        ("blocks", "N=3", 32): stats.paired_comparison(0.1 + noise, margin=1.5),
        ("blocks", "N=16", 32): stats.paired_comparison(4.0 + noise, margin=1.5),
        ("blocks", "N=6", 48): stats.paired_comparison(rng.normal(0.0, 12.0, 12), margin=5.0),
        ("blocks", "lie", 48): stats.paired_comparison([0.3], margin=5.0),
    }
    fam = stats.equivalence_family(comps)
    assert all(set(row) == set(stats.EQUIVALENCE_COLUMNS) for row in fam.values())
    eq, diff, wide, one = (fam[k] for k in comps)
    assert eq["verdict"] == "equivalent" and eq["ns"]
    assert diff["verdict"] == "different" and not diff["ns"] and diff["p_holm_family"] < 0.05
    assert wide["verdict"] == "inconclusive" and one["verdict"] == "inconclusive"
    assert eq["family_size"] == 4
    adjusted = stats.holm([c.p for c in comps.values()])
    assert [r["p_holm_family"] for r in fam.values()] == pytest.approx(adjusted)
    assert eq["mdd_paired"] == pytest.approx(stats.paired_mdd(eq["diff_sd"], 12, 0.05 / 4))
    assert one["mdd_paired"] is None
    json.dumps(list(fam.values()), allow_nan=False)
    # a small but real difference inside the margin: equivalent, and the adjusted p still finds it
    small = stats.equivalence_family({"x": stats.paired_comparison(0.6 + noise / 5, margin=1.5)})["x"]
    assert small["verdict"] == "equivalent" and not small["ns"]


def test_claims_read_alone_use_holm_over_the_tost_family_and_near_chance_has_no_verdict() -> None:
    """Four comparisons each equivalent at raw TOST p ~0.03 (the conjunctive reading) are, read alone,
    inconclusive after Holm over the four; a fifth near chance gets no equivalence verdict and stays out
    of the TOST family, but a difference there still counts."""
    q = sst.norm.ppf((np.arange(12) + 0.5) / 12)
    d = q / q.std(ddof=1) * 1.5 * math.sqrt(12) / sst.t.isf(0.03, 11)  # mean 0, TOST p 0.03 at +-1.5
    comps = {f"arm{i}": stats.paired_comparison(d, margin=1.5) for i in range(4)}
    comps["near"] = stats.paired_comparison(d, margin=5.0)
    comps["near_diff"] = stats.paired_comparison(d + 8.0, margin=5.0)
    near = {"near": True, "near_diff": True}
    fam = stats.equivalence_family(comps, near=near)
    for i in range(4):
        row = fam[f"arm{i}"]
        assert row["p_tost"] == pytest.approx(0.03) and row["verdict"] == "equivalent"
        assert row["p_tost_holm"] == pytest.approx(0.12) and row["verdict_holm"] == "inconclusive"
        assert row["tost_family_size"] == 4 and not row["near_chance"]
    assert fam["near"]["verdict"] == fam["near"]["verdict_holm"] == stats.UNINFORMATIVE
    assert fam["near"]["p_tost_holm"] is None and fam["near"]["near_chance"]
    assert fam["near_diff"]["verdict"] == "different" == fam["near_diff"]["verdict_holm"]
    assert set(fam["near"]) == set(stats.EQUIVALENCE_COLUMNS)
    # the rule itself: both means below chance + 2 margins
    assert stats.near_chance(14.0, 19.9, 10.0, 5.0) and not stats.near_chance(14.0, 20.0, 10.0, 5.0)
    assert not stats.near_chance(14.0, 12.0, None, 5.0) and not stats.near_chance(14.0, 12.0, 10.0, None)


def write_study_rows(path: Path) -> None:
    """``runs.csv`` of a made-up study: baseline ``axial2`` and four arms, 12 seeds, sizes 32 and 48,
    accuracies on a 360-image test set (steps of 100/360 points)."""
    rng = np.random.default_rng(11)
    step = 100 / 360
    rows = []
    for seed in range(12):
        base = {32: 90 + rng.normal(0, 1.5), 48: 70 + rng.normal(0, 4.0)}
        arms = {
            "axial2": {32: 0.0, 48: 0.0},
            "same": {32: rng.normal(0.2, 0.5), 48: rng.normal(0.2, 0.5)},
            "far": {32: rng.normal(2.0, 0.6), 48: rng.normal(0.0, 1.2)},
            "noisy": {32: rng.normal(0.0, 3.0), 48: rng.normal(0.0, 6.0)},
            "stall": {32: -35.0 if seed == 4 else rng.normal(0.0, 0.4), 48: rng.normal(0.0, 1.0)},
        }
        for arm, shift in arms.items():
            for size in (32, 48):
                acc = round((base[size] + shift[size]) / step) * step
                margin = 1.5 if size == 32 else 5.0
                rows.append(f"study,{arm},axial2,{size},{seed},{acc!r},{margin}")
    path.write_text("table,arm,baseline,size,seed,acc,margin\n" + "\n".join(rows) + "\n")


def test_the_docs_recipe_reproduces_rope_ext_stats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "statistics.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, flags=re.S)
    recipe = next(b for b in blocks if "runs.csv" in b)
    write_study_rows(tmp_path / "runs.csv")
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(recipe, "docs/statistics.md", "exec"), namespace)
    plain = {key[1:]: r for key, r in namespace["rows"].items()}  # (table, arm, size) -> (arm, size)
    assert len(plain) == 8
    acc: dict[tuple[str, int], dict[int, float]] = {}
    with (tmp_path / "runs.csv").open() as f:
        for r in csv.DictReader(f):
            acc.setdefault((r["arm"], int(r["size"])), {})[int(r["seed"])] = float(r["acc"])
    margin = {32: 1.5, 48: 5.0}
    comps = {
        k: stats.paired_comparison(stats.paired_differences(v, acc[("axial2", k[1])]), margin[k[1]])
        for k, v in acc.items()
        if k[0] != "axial2"
    }
    ours = stats.equivalence_family(comps)
    assert set(ours) == set(plain)
    for k, r in plain.items():
        o = ours[k]
        assert (o["ci90_low"], o["ci90_high"]) == pytest.approx(r["ci90"])
        assert o["p_lead"] == pytest.approx(r["p"], abs=1e-12)
        assert o["p_tost"] == pytest.approx(r["p_tost"], abs=1e-12)
        assert o["p_holm_family"] == pytest.approx(r["p_holm"], abs=1e-12)
        assert o["verdict"] == r["verdict"]
    # the made-up study has every verdict and both lead tests
    assert {o["verdict"] for o in ours.values()} == {"equivalent", "different", "inconclusive"}
    assert ours[("stall", 32)]["lead_test"] == "sign-flip" and ours[("noisy", 32)]["lead_test"] == "t"


def test_sign_flip_counts_ties_that_float_rounding_splits() -> None:
    """Differences of accuracies are multiples of 100/360 points: here (odd sum of |d| in those units) no
    sign pattern sums to 0, so every pattern is at least as extreme as the observed sum of -1 unit, and the
    two-sided p is exactly 1 and the one-sided 1/2. Float sums of the units differ in the last bits, which
    scipy's permutation_test does not forgive (it gives 0.947 and 0.473 here); the test must."""
    units = np.array([4, -5, -1, 3, -16, 3, -2, 0, 0, 1, -3, -2, 8, 9, 0, -2, 1, 1])
    d = units / 3.6
    assert stats.sign_flip_p(d) == 1.0
    assert stats.sign_flip_p(d, alternative="less") == 0.5
    signs = 1 - 2 * ((np.arange(2**18)[:, None] >> np.arange(18)) & 1)
    exact = signs @ units  # integer sums: ties are exact here
    assert stats.sign_flip_p(d, alternative="greater") == np.mean(exact >= units.sum())
