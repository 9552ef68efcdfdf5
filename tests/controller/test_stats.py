"""controller.stats checked against scipy/numpy (test-only dependencies)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from controller.stats import ArmStats, Comparison, compare, summarize, t_cdf, t_ppf, t_sf

DFS = [1, 2, 2.5, 4, 9, 30, 200]
PROBS = [1e-9, 1e-4, 0.001, 0.025, 0.05, 0.1, 0.3, 0.5, 0.6, 0.9, 0.975, 0.995, 0.9999]
# t = 1e-8 is avoided: scipy's own cdf is off by ~1.5e-9 there for df=1 (atan(t)/pi is exact).
TS = [-40.0, -6.0, -2.0, -0.7, -1e-3, 0.0, 0.25, 1.0, 1.96, 3.5, 12.0, 300.0]

ARM = [0.81, 0.84, 0.79, 0.86, 0.83, 0.85]
BASE = [0.76, 0.78, 0.75, 0.79, 0.74]


@pytest.mark.parametrize("df", DFS)
def test_t_ppf_matches_scipy(df: float) -> None:
    for p in PROBS:
        expected = float(sps.t.ppf(p, df))
        assert t_ppf(p, df) == pytest.approx(expected, rel=1e-10, abs=1e-8), p


@pytest.mark.parametrize("df", DFS)
def test_t_cdf_and_sf_match_scipy(df: float) -> None:
    for t in TS:
        assert t_cdf(t, df) == pytest.approx(float(sps.t.cdf(t, df)), abs=1e-8), t
        # Upper tails are compared relatively: p-values live there.
        assert t_sf(t, df) == pytest.approx(float(sps.t.sf(t, df)), rel=1e-8, abs=1e-300), t


@pytest.mark.parametrize("df", [1.0, 2.5, 7.3, 55.0])
def test_t_ppf_inverts_cdf(df: float) -> None:
    for p in PROBS:
        assert t_cdf(t_ppf(p, df), df) == pytest.approx(p, rel=1e-10)


def test_t_edge_inputs() -> None:
    assert t_cdf(math.inf, 3) == 1.0
    assert t_cdf(-math.inf, 3) == 0.0
    assert t_ppf(0.5, 3) == 0.0
    for bad_p in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError):
            t_ppf(bad_p, 3)
    for bad_df in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError):
            t_cdf(1.0, bad_df)


def test_summarize_matches_numpy_and_scipy() -> None:
    s = summarize("arm", ARM)
    arr = np.array(ARM)
    n = len(ARM)
    std = float(arr.std(ddof=1))
    assert s.n == n
    assert s.mean == pytest.approx(float(arr.mean()), rel=1e-14)
    assert s.std == pytest.approx(std, rel=1e-12)
    assert s.sem == pytest.approx(std / math.sqrt(n), rel=1e-12)
    assert s.sem == pytest.approx(float(sps.sem(arr)), rel=1e-12)
    # The AI-Scientist bug: sem computed as std / n. Must not happen for n > 1.
    assert not math.isclose(s.sem, std / n, rel_tol=1e-6)
    low, high = sps.t.interval(0.95, n - 1, loc=arr.mean(), scale=sps.sem(arr))
    assert s.ci_low == pytest.approx(float(low), abs=1e-10)
    assert s.ci_high == pytest.approx(float(high), abs=1e-10)
    assert s.values == ARM
    assert s.confidence == 0.95


def test_summarize_other_confidence() -> None:
    s = summarize("arm", ARM, confidence=0.99)
    arr = np.array(ARM)
    low, high = sps.t.interval(0.99, len(ARM) - 1, loc=arr.mean(), scale=sps.sem(arr))
    assert (s.ci_low, s.ci_high) == (pytest.approx(float(low)), pytest.approx(float(high)))


def test_summarize_degenerate() -> None:
    one = summarize("solo", [0.5])
    assert (one.n, one.mean, one.std, one.sem) == (1, 0.5, 0.0, 0.0)
    assert one.ci_low is None and one.ci_high is None
    flat = summarize("flat", [0.7, 0.7, 0.7])
    assert flat.std == 0.0 and flat.sem == 0.0
    assert flat.ci_low == flat.ci_high == pytest.approx(0.7)
    for bad in ([], [1.0, math.nan], [math.inf]):
        with pytest.raises(ValueError):
            summarize("bad", bad)
    with pytest.raises(ValueError):
        summarize("bad", [1.0, 2.0], confidence=1.0)


def test_arm_stats_is_frozen() -> None:
    s = summarize("arm", ARM)
    with pytest.raises(ValueError):
        s.mean = 0.0  # type: ignore[misc]
    assert isinstance(s, ArmStats)


def test_compare_matches_scipy_welch() -> None:
    arm, base = summarize("arm", ARM), summarize("base", BASE)
    c = compare(arm, base)
    assert isinstance(c, Comparison)
    ref = sps.ttest_ind(ARM, BASE, equal_var=False)
    assert c.welch_t == pytest.approx(float(ref.statistic), rel=1e-10)
    assert c.p_value == pytest.approx(float(ref.pvalue), rel=1e-8)
    v1, v2 = np.var(ARM, ddof=1) / len(ARM), np.var(BASE, ddof=1) / len(BASE)
    df = (v1 + v2) ** 2 / (v1**2 / (len(ARM) - 1) + v2**2 / (len(BASE) - 1))
    assert c.welch_df == pytest.approx(float(df), rel=1e-12)
    n1, n2 = len(ARM), len(BASE)
    pooled = math.sqrt(((n1 - 1) * np.var(ARM, ddof=1) + (n2 - 1) * np.var(BASE, ddof=1)) / (n1 + n2 - 2))
    d = (np.mean(ARM) - np.mean(BASE)) / pooled
    assert c.cohens_d == pytest.approx(float(d), rel=1e-12)
    # Exact J is close to the common approximation 1 - 3 / (4 (n1 + n2) - 9).
    assert c.hedges_g == pytest.approx(float(d) * (1 - 3 / (4 * (n1 + n2) - 9)), rel=1e-3)
    assert c.hedges_g is not None and abs(c.hedges_g) < abs(c.cohens_d or 0)
    assert c.diff == pytest.approx(float(np.mean(ARM) - np.mean(BASE)))
    assert (c.arm, c.baseline) == ("arm", "base")


def test_compare_unequal_variances_and_sign() -> None:
    rng = np.random.default_rng(0)
    a = list(rng.normal(1.0, 3.0, size=4))
    b = list(rng.normal(1.5, 0.2, size=11))
    c = compare(summarize("a", a), summarize("b", b))
    ref = sps.ttest_ind(a, b, equal_var=False)
    assert c.welch_t == pytest.approx(float(ref.statistic), rel=1e-10)
    assert c.p_value == pytest.approx(float(ref.pvalue), rel=1e-8)
    assert c.welch_df is not None and c.welch_df != int(c.welch_df)  # non-integer df path


def supported_any(c: Comparison) -> bool:
    return c.supported(0.0) or c.supported(0.0, higher_is_better=False)


# scipy warns about its own moment calculation on constant input; the numbers are still right.
@pytest.mark.filterwarnings("ignore:Precision loss occurred:RuntimeWarning")
def test_compare_degenerate() -> None:
    flat_a, flat_b = summarize("a", [1.0, 1.0, 1.0]), summarize("b", [1.0, 1.0])
    same = compare(flat_a, flat_b)
    assert (same.welch_t, same.welch_df, same.p_value, same.cohens_d) == (0.0, None, 1.0, 0.0)
    higher = compare(summarize("a", [2.0, 2.0]), flat_b)
    assert higher.welch_t == math.inf and higher.p_value == 0.0 and higher.cohens_d == math.inf
    lower = compare(flat_b, summarize("a", [2.0, 2.0]))
    assert lower.welch_t == -math.inf and lower.p_value == 0.0
    solo = compare(summarize("solo", [0.9]), summarize("base", BASE))
    assert solo.welch_t is None and solo.welch_df is None and solo.p_value is None
    assert solo.ci_excludes_baseline is False
    assert solo.cohens_d is not None  # the pooled SD still exists with n1 + n2 - 2 >= 1
    tiny = compare(summarize("x", [0.9]), summarize("y", [0.8]))
    assert tiny.cohens_d is None and tiny.hedges_g is None and tiny.p_value is None
    one_zero_var = compare(summarize("a", [1.0, 1.0, 1.0]), summarize("b", BASE))
    ref = sps.ttest_ind([1.0, 1.0, 1.0], BASE, equal_var=False)
    assert one_zero_var.p_value == pytest.approx(float(ref.pvalue), rel=1e-8)
    assert not supported_any(solo)


def test_supported_when_ci_excludes_baseline_and_threshold_met() -> None:
    c = compare(summarize("arm", ARM), summarize("base", BASE))
    assert c.ci_low is not None and c.ci_low > c.baseline_mean
    assert c.ci_excludes_baseline
    assert c.supported(0.03)
    assert not c.supported(0.5)  # threshold not met
    assert not c.supported(0.0, higher_is_better=False)  # wrong direction


def test_not_supported_when_ci_includes_baseline() -> None:
    noisy = [0.6, 1.0, 0.7, 0.95, 0.9]
    c = compare(summarize("noisy", noisy), summarize("base", BASE))
    assert c.diff >= 0.05
    assert not c.ci_excludes_baseline
    assert not c.supported(0.05)


def test_supported_lower_is_better() -> None:
    losses = [0.40, 0.42, 0.41, 0.43, 0.39]
    base = [0.55, 0.57, 0.54, 0.56]
    c = compare(summarize("new", losses), summarize("old", base))
    assert c.diff < 0 and c.ci_high is not None and c.ci_high < c.baseline_mean
    assert c.supported(0.1, higher_is_better=False)
    assert not c.supported(0.5, higher_is_better=False)
    assert not c.supported(0.0, higher_is_better=True)
