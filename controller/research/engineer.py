"""The Engineer's arithmetic: slot contracts, budget and power, computed, never guessed.

Whoever speaks as the Engineer (a template or a model), these numbers come from here: the
seeds a hypothesis needs to detect its claimed effect at the baseline's measured variance,
what its arms cost at the measured job time, and whether the budget can pay for it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

from controller.plan import Hypothesis
from controller.power import PowerEstimate, estimate
from controller.research.memory import Finding
from controller.tasks import Task

DEFAULT_SD = 0.01
"""Seed-to-seed sd assumed when nothing was measured (one accuracy point)."""
DEFAULT_PAIR_S = 10.0
DEFAULT_EFFECT = 0.01
"""The effect a hypothesis is sized for when its PI claims none."""


class Pilot(BaseModel):
    """Measured (or assumed) numbers the Engineer plans with."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    baseline_sd: float
    pair_s: float
    source: str


class EngineeringCheck(BaseModel):
    """One hypothesis, checked."""

    model_config = ConfigDict(extra="forbid")

    hypothesis: str
    unknown_slots: list[str]
    unknown_hyper: list[str]
    arms: int
    """baseline + novelty + one ablation per component."""
    seconds_at_n: float
    seconds_needed: float | None
    affordable: bool
    """The arms at the run's seeds fit the budget share of one iteration."""
    supports_claim: bool
    """The seeds the power calculation asks for fit the budget share too."""
    power: PowerEstimate
    note: str


def pilot_for(task: Task, dataset: str, memory: Sequence[Finding], train_fraction: float = 1.0) -> Pilot:
    """The baseline's sd pooled (root mean square) over every run on this task, dataset and
    train fraction and the task's prior, and the latest measured pair time.

    One run's sd over three seeds is a noisy number (a lucky 0.002 would make every claim look
    adequately powered); pooling runs, with the prior as one of them, steadies it.
    """
    runs: dict[str, Finding] = {}
    for finding in memory:
        same = finding.task == task.name and finding.dataset == dataset and finding.train_fraction == train_fraction
        if same and finding.baseline_sd and finding.pair_s:
            runs[finding.run_id] = finding
    prior = task.prior_for(train_fraction)
    sds = [f.baseline_sd for f in runs.values() if f.baseline_sd] + ([prior.baseline_sd] if prior else [])
    if not sds:
        pair = (task.timeouts.train + task.timeouts.predict) / 4
        return Pilot(baseline_sd=DEFAULT_SD, pair_s=pair, source="assumed (nothing measured yet)")
    pooled = math.sqrt(sum(sd * sd for sd in sds) / len(sds))
    latest = list(runs.values())[-1] if runs else None
    pair_s = latest.pair_s if latest and latest.pair_s else prior.pair_s if prior else DEFAULT_PAIR_S
    parts = ([f"{len(runs)} run(s) in the findings memory"] if runs else []) + (["the task's prior"] if prior else [])
    detail = f"; prior: {prior.measured}" if prior and not runs else ""
    return Pilot(baseline_sd=pooled, pair_s=pair_s, source=f"pooled over {' and '.join(parts)}{detail}")


def check(
    hypothesis: Hypothesis,
    task: Task,
    pilot: Pilot,
    *,
    seeds: int,
    iteration_s: float,
    parallel: int = 1,
    metric: str = "accuracy",
) -> EngineeringCheck:
    """Contracts, cost and power of one hypothesis; `iteration_s` is its share of the budget."""
    unknown_slots = sorted(set(hypothesis.modules) - set(task.slots))
    unknown_hyper = sorted(set(hypothesis.hyper) - set(task.defaults))
    arms = 2 + len(hypothesis.components())
    effect = hypothesis.expected_effect or max(hypothesis.success_threshold, DEFAULT_EFFECT)
    power = estimate(pilot.baseline_sd, effect, seeds, family=arms - 1)
    per_seed = arms * pilot.pair_s / max(parallel, 1)
    seconds_at_n = per_seed * seeds
    seconds_needed = per_seed * power.seeds_needed if power.seeds_needed else None
    affordable = seconds_at_n <= iteration_s
    supports = seconds_needed is not None and seconds_needed <= iteration_s
    parts = [power.describe(metric)]
    if unknown_slots or unknown_hyper:
        parts.append(f"not in the task's contracts: {', '.join(unknown_slots + unknown_hyper)}")
    parts.append(
        f"{arms} arms x {seeds} seeds take about {seconds_at_n:.0f}s of the {iteration_s:.0f}s an iteration can have"
    )
    if not power.adequate:
        if supports:
            parts.append(f"the budget can pay for n = {power.seeds_needed} ({seconds_needed:.0f}s)")
        else:
            needed = f"{seconds_needed:.0f}s" if seconds_needed else "more seeds than it will size"
            parts.append(f"the budget cannot support the claim ({needed} needed)")
    return EngineeringCheck(
        hypothesis=hypothesis.id,
        unknown_slots=unknown_slots,
        unknown_hyper=unknown_hyper,
        arms=arms,
        seconds_at_n=round(seconds_at_n, 1),
        seconds_needed=round(seconds_needed, 1) if seconds_needed else None,
        affordable=affordable,
        supports_claim=supports,
        power=power,
        note="; ".join(parts),
    )
