"""Statistics over repeated seeds: per-arm summaries and Welch comparisons against a baseline.

Stdlib + pydantic only, on purpose: numpy/scipy are not runtime dependencies of the
controller (scipy is dev-only), so the Student t distribution is computed here from the
regularized incomplete beta function.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict

from controller.errors import BadInputError, ControllerError

DEFAULT_CONFIDENCE = 0.95
DEFAULT_ALPHA = 0.05
"""Significance level of the supported verdict (after the Holm correction)."""
# Lentz's continued fraction needs O(sqrt(max(a, b))) terms; this covers df up to ~1e7.
BETACF_MAX_ITER = 10_000
BETACF_EPS = 1e-16
# Guards the continued fraction's denominators against division by (near) zero.
BETACF_TINY = 1e-300
# Bisection stops when the bracket is this narrow relative to |t| (well under 1e-10).
QUANTILE_REL_TOL = 1e-15
QUANTILE_MAX_ITER = 400
# Above this, the truncated Stirling series is exact to double precision (error ~ 1/(1680 a^7)).
STIRLING_MIN_A = 50.0


class ConvergenceError(ControllerError, ArithmeticError):
    """A numerical routine did not converge (should not happen for sane inputs)."""


def _check_df(df: float) -> None:
    if not (math.isfinite(df) and df > 0):
        msg = f"degrees of freedom must be finite and > 0, got {df}"
        raise BadInputError(msg)


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction for I_x(a, b), modified Lentz (Numerical Recipes `betacf`)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > BETACF_TINY else BETACF_TINY)
    h = d
    for m in range(1, BETACF_MAX_ITER + 1):
        m2 = 2 * m
        for aa in (
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > BETACF_TINY else BETACF_TINY)
            c = 1.0 + aa / c
            c = c if abs(c) > BETACF_TINY else BETACF_TINY
            delta = d * c
            h *= delta
        if abs(delta - 1.0) < BETACF_EPS:
            return h
    msg = f"incomplete beta continued fraction did not converge (a={a}, b={b}, x={x})"
    raise ConvergenceError(msg)


def _stirling_tail(z: float) -> float:
    """Stirling series remainder ln Gamma(z) - [(z - 1/2) ln z - z + ln(2 pi)/2]."""
    z2 = z * z
    return (1.0 / 12.0 - (1.0 / 360.0 - 1.0 / (1260.0 * z2)) / z2) / z


def _lgamma_ratio(a: float, b: float) -> float:
    """ln Gamma(a + b) - ln Gamma(a), without cancellation when a is large and b is not."""
    if a < STIRLING_MIN_A:
        return math.lgamma(a + b) - math.lgamma(a)
    # Differencing two huge lgamma values loses ~log10(a ln a) digits; expand instead.
    return (a - 0.5) * math.log1p(b / a) + b * math.log(a + b) - b + _stirling_tail(a + b) - _stirling_tail(a)


def _betai(a: float, b: float, x: float, y: float) -> float:
    """Regularized incomplete beta I_x(a, b); y = 1 - x is passed exactly to avoid cancellation."""
    if x <= 0.0:
        return 0.0
    if y <= 0.0:
        return 1.0
    # Take each log from whichever of x, y is small: log1p keeps the digits that large df
    # or small |t| would otherwise round away in x = 1 - y.
    log_x = math.log(x) if x < y else math.log1p(-y)
    log_y = math.log(y) if y < x else math.log1p(-x)
    log_front = _lgamma_ratio(a, b) - math.lgamma(b) + a * log_x + b * log_y
    front = math.exp(log_front)
    # The fraction converges fast only on this side of the mean; use symmetry on the other.
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, y) / b


def t_sf(t: float, df: float) -> float:
    """Upper tail P(T > t) of Student's t; computed directly so tiny tails stay accurate."""
    _check_df(df)
    if math.isnan(t):
        msg = "t must not be NaN"
        raise BadInputError(msg)
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    t2 = t * t
    tail = 0.5 * _betai(df / 2.0, 0.5, df / (df + t2), t2 / (df + t2))
    return tail if t >= 0 else 1.0 - tail


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) of Student's t with (possibly non-integer) df degrees of freedom."""
    return t_sf(-t, df)


def t_ppf(p: float, df: float) -> float:
    """Quantile of Student's t: the t with t_cdf(t, df) == p, found by bisection."""
    _check_df(df)
    if not 0.0 < p < 1.0:
        msg = f"p must lie strictly in (0, 1), got {p}"
        raise BadInputError(msg)
    if p == 0.5:
        return 0.0
    # Solve sf(t) = tail for t > 0 in whichever tail is smaller, then mirror by symmetry.
    tail = min(p, 1.0 - p)
    lo, hi = 0.0, 1.0
    while t_sf(hi, df) > tail:
        lo, hi = hi, hi * 2.0
    for _ in range(QUANTILE_MAX_ITER):
        mid = 0.5 * (lo + hi)
        if t_sf(mid, df) > tail:
            lo = mid
        else:
            hi = mid
        if hi - lo <= QUANTILE_REL_TOL * hi:
            break
    root = 0.5 * (lo + hi)
    return root if p > 0.5 else -root


class ArmStats(BaseModel):
    """Summary of one arm over seeds.

    std is the sample standard deviation (ddof=1), 0.0 when n == 1; sem = std / sqrt(n).
    ci_low/ci_high is the two-sided Student t interval mean +/- t_{(1+c)/2, n-1} * sem.
    With n < 2 the spread is unknown, so ci_low and ci_high are None (not a zero-width CI).
    For a bounded metric (accuracy in [0, 1]) the interval is clipped to the range: an
    accuracy CI of [0.97, 1.004] says nothing the clipped [0.97, 1.0] does not.
    """

    model_config = ConfigDict(frozen=True)

    arm: str
    n: int
    mean: float
    std: float
    sem: float
    ci_low: float | None
    ci_high: float | None
    confidence: float
    values: list[float]


def summarize(
    arm: str,
    values: list[float],
    confidence: float = DEFAULT_CONFIDENCE,
    bounds: tuple[float, float] | None = None,
) -> ArmStats:
    """Summarize per-seed values of one arm; raises BadInputError on empty or non-finite input."""
    if not values:
        msg = f"arm {arm!r} has no values"
        raise BadInputError(msg)
    if not all(math.isfinite(v) for v in values):
        msg = f"arm {arm!r} has non-finite values: {values}"
        raise BadInputError(msg)
    if not 0.0 < confidence < 1.0:
        msg = f"confidence must lie strictly in (0, 1), got {confidence}"
        raise BadInputError(msg)
    n = len(values)
    # fsum(v) / n can miss a repeated value by an ulp (3 * 0.7 / 3 != 0.7), which would
    # turn a genuinely zero variance into 1e-16 and defeat the zero-variance handling.
    mean = values[0] if min(values) == max(values) else math.fsum(values) / n
    # Two-pass with fsum: the naive sum-of-squares formula loses digits for close values.
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    sem = std / math.sqrt(n)
    ci_low = ci_high = None
    if n >= 2:
        half = t_ppf(0.5 + confidence / 2.0, n - 1) * sem
        ci_low, ci_high = mean - half, mean + half
        if bounds is not None:
            ci_low, ci_high = max(ci_low, bounds[0]), min(ci_high, bounds[1])
    return ArmStats(
        arm=arm,
        n=n,
        mean=mean,
        std=std,
        sem=sem,
        ci_low=ci_low,
        ci_high=ci_high,
        confidence=confidence,
        values=list(values),
    )


class Comparison(BaseModel):
    """An arm against a baseline (Welch's unequal-variance t-test, two-sided).

    Degenerate cases: if either arm has n < 2, welch_t, welch_df and p_value are None.
    If both variances are zero, welch_df is None (0/0), welch_t is 0.0 with p_value 1.0 when
    the means are equal, and +/-inf with p_value 0.0 otherwise. cohens_d uses the pooled SD
    (None when n_arm + n_base < 3; 0.0 or +/-inf when the pooled SD is zero); hedges_g is
    cohens_d times the exact small-sample factor J(df) (None when n_arm + n_base < 4).
    """

    model_config = ConfigDict(frozen=True)

    arm: str
    baseline: str
    arm_mean: float
    baseline_mean: float
    diff: float
    welch_t: float | None
    welch_df: float | None
    p_value: float | None
    cohens_d: float | None
    hedges_g: float | None
    ci_low: float | None
    ci_high: float | None
    ci_excludes_baseline: bool
    diff_ci_low: float | None = None
    diff_ci_high: float | None = None
    p_holm: float | None = None

    def supported(self, threshold: float, higher_is_better: bool = True, alpha: float = DEFAULT_ALPHA) -> bool:
        """True when the improvement is >= threshold AND Welch's test rejects "no difference".

        Improvement is diff (higher_is_better) or -diff. The p-value used is the Holm-corrected
        one when the comparison belongs to a family (several arms against one baseline),
        else Welch's own. No test (n < 2 on either side) is never support.
        """
        improvement = self.diff if higher_is_better else -self.diff
        p = self.p_holm if self.p_holm is not None else self.p_value
        return improvement >= threshold and improvement > 0 and p is not None and p < alpha

    def with_holm(self, p_holm: float | None) -> Comparison:
        return self.model_copy(update={"p_holm": p_holm})


def _signed_inf_or_zero(diff: float) -> float:
    return 0.0 if diff == 0 else math.copysign(math.inf, diff)


def _effect_sizes(arm: ArmStats, base: ArmStats, diff: float) -> tuple[float | None, float | None]:
    dof = arm.n + base.n - 2
    if dof < 1:
        return None, None
    pooled = math.sqrt(((arm.n - 1) * arm.std**2 + (base.n - 1) * base.std**2) / dof)
    d = diff / pooled if pooled > 0 else _signed_inf_or_zero(diff)
    if dof < 2:
        return d, None  # J(1) = 0: the correction is undefined, not a real zero effect.
    # Exact Hedges correction J(df) = Gamma(df/2) / (sqrt(df/2) * Gamma((df-1)/2)).
    j = math.exp(math.lgamma(dof / 2) - math.lgamma((dof - 1) / 2)) / math.sqrt(dof / 2)
    return d, d * j


def compare(arm: ArmStats, baseline: ArmStats) -> Comparison:
    """Compare arm against baseline with Welch's t-test, effect sizes and a CI check."""
    diff = arm.mean - baseline.mean
    t: float | None = None
    df: float | None = None
    p: float | None = None
    diff_low = diff_high = None
    if arm.n >= 2 and baseline.n >= 2:
        v_arm, v_base = arm.std**2 / arm.n, baseline.std**2 / baseline.n
        var = v_arm + v_base
        if var > 0:
            t = diff / math.sqrt(var)
            df = var**2 / (v_arm**2 / (arm.n - 1) + v_base**2 / (baseline.n - 1))
            p = min(1.0, 2.0 * t_sf(abs(t), df))
            half = t_ppf(0.5 + arm.confidence / 2.0, df) * math.sqrt(var)
            diff_low, diff_high = diff - half, diff + half
        else:
            t = _signed_inf_or_zero(diff)
            p = 1.0 if diff == 0 else 0.0
            diff_low = diff_high = diff
    d, g = _effect_sizes(arm, baseline, diff)
    excludes = arm.ci_low is not None and arm.ci_high is not None and not (arm.ci_low <= baseline.mean <= arm.ci_high)
    return Comparison(
        arm=arm.arm,
        baseline=baseline.arm,
        arm_mean=arm.mean,
        baseline_mean=baseline.mean,
        diff=diff,
        welch_t=t,
        welch_df=df,
        p_value=p,
        cohens_d=d,
        hedges_g=g,
        ci_low=arm.ci_low,
        ci_high=arm.ci_high,
        ci_excludes_baseline=excludes,
        diff_ci_low=diff_low,
        diff_ci_high=diff_high,
    )


def holm(p_values: dict[str, float | None]) -> dict[str, float | None]:
    """Holm-Bonferroni adjusted p-values for one family of tests (None stays None).

    Sorted ascending, the i-th smallest of m p-values is multiplied by (m - i), and the
    adjusted values are made monotone; each is capped at 1. Rejecting where the adjusted
    p < alpha controls the family-wise error rate at alpha.
    """
    present = sorted((p, name) for name, p in p_values.items() if p is not None)
    m = len(present)
    adjusted: dict[str, float | None] = {name: None for name, p in p_values.items() if p is None}
    running = 0.0
    for i, (p, name) in enumerate(present):
        running = max(running, min(1.0, (m - i) * p))
        adjusted[name] = running
    return adjusted
