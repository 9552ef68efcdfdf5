"""Power arithmetic against textbook values and a simulation of the test it sizes for."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from controller.power import estimate, min_detectable_effect, power, seeds_needed
from controller.stats import t_sf


def test_seeds_for_one_standard_deviation_are_the_textbook_plus_welch_caution() -> None:
    # Student's t-test, d = 1, alpha 0.05 two-sided, power 0.8: 17 per group (Cohen 1988);
    # planning for Welch's worst case (df = n - 1) asks for one more.
    assert seeds_needed(1.0, 1.0) == 18
    # d = 0.5 needs 64 per group: past the ceiling, so None (infeasible, not sized).
    assert seeds_needed(1.0, 0.5) is None


def test_a_family_needs_more_seeds_than_one_comparison() -> None:
    assert seeds_needed(0.01, 0.01, family=3) > seeds_needed(0.01, 0.01, family=1)  # type: ignore[operator]


def test_mde_is_where_power_reaches_the_target() -> None:
    mde = min_detectable_effect(0.01, 5)
    assert power(0.01, mde, 5) == pytest.approx(0.8, abs=0.02)
    assert math.isinf(min_detectable_effect(0.01, 1))


def _simulated_welch_power(sd_arm: float, effect: float, n: int, trials: int = 3000) -> float:
    rng = random.Random(7)
    hits = 0
    for _ in range(trials):
        a = [rng.gauss(effect, sd_arm) for _ in range(n)]
        b = [rng.gauss(0.0, 1.0) for _ in range(n)]
        va, vb = statistics.variance(a) / n, statistics.variance(b) / n
        t = (statistics.mean(a) - statistics.mean(b)) / math.sqrt(va + vb)
        df = (va + vb) ** 2 / (va**2 / (n - 1) + vb**2 / (n - 1))
        hits += 2 * t_sf(abs(t), df) < 0.05
    return hits / trials


def test_planned_power_is_cautious_but_close_to_a_simulated_welch_test() -> None:
    planned = power(1.0, 1.5, 8)
    equal = _simulated_welch_power(1.0, 1.5, 8)
    assert planned <= equal + 0.02 and equal - planned < 0.15
    # when the novelty's variance dominates, Welch loses power: the plan must not promise more
    noisy = _simulated_welch_power(2.0, 1.5 * math.sqrt(2.5), 8)  # same standardised effect, unequal sds
    assert planned <= noisy + 0.05


def test_the_statement_says_underpowered_with_the_seeds_needed() -> None:
    low = estimate(0.0092, 0.01, 3)
    assert not low.adequate and low.seeds_needed is not None
    assert low.describe().startswith(f"underpowered: needs n = {low.seeds_needed} to detect +1.0 points")
    high = estimate(0.001, 0.01, 3)
    assert high.adequate and high.describe().startswith("adequately powered: n = 3")
