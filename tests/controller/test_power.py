"""Power arithmetic against textbook values and a simulation of the test it sizes for."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from controller.power import estimate, min_detectable_effect, power, seeds_needed
from controller.stats import t_sf


def test_seeds_for_one_standard_deviation_match_the_textbook() -> None:
    # Two-sample t-test, d = 1, alpha 0.05 two-sided, power 0.8: 17 per group (Cohen 1988).
    assert seeds_needed(1.0, 1.0) == 17
    # d = 0.5 needs 64 per group: past the ceiling, so None (infeasible, not sized).
    assert seeds_needed(1.0, 0.5) is None


def test_a_family_needs_more_seeds_than_one_comparison() -> None:
    assert seeds_needed(0.01, 0.01, family=3) > seeds_needed(0.01, 0.01, family=1)  # type: ignore[operator]


def test_mde_is_where_power_reaches_the_target() -> None:
    mde = min_detectable_effect(0.01, 5)
    assert power(0.01, mde, 5) == pytest.approx(0.8, abs=0.02)
    assert math.isinf(min_detectable_effect(0.01, 1))


def test_power_agrees_with_a_simulated_welch_test() -> None:
    rng = random.Random(7)
    sd, effect, n, trials = 1.0, 1.5, 8, 3000
    hits = 0
    for _ in range(trials):
        a = [rng.gauss(effect, sd) for _ in range(n)]
        b = [rng.gauss(0.0, sd) for _ in range(n)]
        va, vb = statistics.variance(a) / n, statistics.variance(b) / n
        t = (statistics.mean(a) - statistics.mean(b)) / math.sqrt(va + vb)
        df = (va + vb) ** 2 / (va**2 / (n - 1) + vb**2 / (n - 1))
        hits += 2 * t_sf(abs(t), df) < 0.05
    assert power(sd, effect, n) == pytest.approx(hits / trials, abs=0.05)


def test_the_statement_says_underpowered_with_the_seeds_needed() -> None:
    low = estimate(0.0092, 0.01, 3)
    assert not low.adequate and low.seeds_needed is not None
    assert low.describe().startswith(f"underpowered: needs n = {low.seeds_needed} to detect +1.0 points")
    high = estimate(0.001, 0.01, 3)
    assert high.adequate and high.describe().startswith("adequately powered: n = 3")
