"""Power: how many seeds a comparison needs to detect an effect, and what n seeds can detect.

Two arms of n seeds each, a common seed-to-seed standard deviation `sd`, a two-sided test
at level `alpha` (divided by the family size: Holm's first step, the strictest). Power is
the shifted-t approximation 1 - F_t(t_crit - delta / (sd * sqrt(2/n))) with df = n - 1:
Welch's test, which the loop runs, has between n - 1 and 2n - 2 degrees of freedom, and
n - 1 is what it gets when one arm's variance dominates (an augmentation often adds
variance). Planning on 2n - 2 called +2-point gains at 3 seeds detectable; measured runs
missed them.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict

from controller.stats import t_cdf, t_ppf

ALPHA = 0.05
POWER = 0.8
MAX_SEEDS = 50
"""Beyond this a comparison is called infeasible rather than sized."""


class PowerEstimate(BaseModel):
    """What a comparison at `n` seeds per arm can detect, and what an effect needs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sd: float
    effect: float
    alpha: float
    family: int
    n: int
    """The seeds per arm the run has."""
    power_at_n: float
    mde_at_n: float
    """Smallest effect detected with POWER at n seeds."""
    seeds_needed: int | None
    """Seeds per arm for POWER at this effect; None when more than MAX_SEEDS."""

    @property
    def adequate(self) -> bool:
        return self.seeds_needed is not None and self.seeds_needed <= self.n

    def describe(self, metric: str = "accuracy") -> str:
        """One line for logs, the plan and the report."""
        points = f"{self.effect * 100:+.1f} points" if metric == "accuracy" else f"{self.effect:+.4g}"
        if self.adequate:
            return f"adequately powered: n = {self.n} detects {points} with power {self.power_at_n:.2f}"
        needed = f"n = {self.seeds_needed}" if self.seeds_needed else f"more than {MAX_SEEDS} seeds"
        return (
            f"underpowered: needs {needed} to detect {points} (n = {self.n} gives power {self.power_at_n:.2f}; "
            f"it detects {self.mde_at_n * 100:.1f} points)"
            if metric == "accuracy"
            else f"underpowered: needs {needed} to detect {points} (power {self.power_at_n:.2f} at n = {self.n})"
        )


def power(sd: float, effect: float, n: int, *, alpha: float = ALPHA, family: int = 1) -> float:
    """Probability that n seeds per arm detect `effect` (two-sided, level alpha/family)."""
    if n < 2:
        return 0.0
    if sd <= 0:
        return 1.0 if effect != 0 else 0.0
    df = n - 1
    critical = t_ppf(1 - alpha / family / 2, df)
    shift = abs(effect) / (sd * math.sqrt(2 / n))
    return 1 - t_cdf(critical - shift, df)


def seeds_needed(
    sd: float, effect: float, *, alpha: float = ALPHA, family: int = 1, target: float = POWER
) -> int | None:
    """The fewest seeds per arm (at least 2) with power >= target; None past MAX_SEEDS."""
    if effect == 0:
        return None
    for n in range(2, MAX_SEEDS + 1):
        if power(sd, effect, n, alpha=alpha, family=family) >= target:
            return n
    return None


def min_detectable_effect(sd: float, n: int, *, alpha: float = ALPHA, family: int = 1, target: float = POWER) -> float:
    """The smallest effect n seeds per arm detect with power `target` (inf below 2 seeds)."""
    if n < 2:
        return math.inf
    df = n - 1
    return (t_ppf(1 - alpha / family / 2, df) + t_ppf(target, df)) * sd * math.sqrt(2 / n)


def estimate(sd: float, effect: float, n: int, *, alpha: float = ALPHA, family: int = 1) -> PowerEstimate:
    """All of the above for one comparison."""
    return PowerEstimate(
        sd=sd,
        effect=effect,
        alpha=alpha,
        family=family,
        n=n,
        power_at_n=round(power(sd, effect, n, alpha=alpha, family=family), 4),
        mde_at_n=min_detectable_effect(sd, n, alpha=alpha, family=family),
        seeds_needed=seeds_needed(sd, effect, alpha=alpha, family=family),
    )
