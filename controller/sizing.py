"""Power in the loop: before an iteration, can its seeds detect the effect it is looking for?

The baseline's seed-to-seed sd is the larger of this run's (once the baseline has three
scored seeds) and the task's prior for the train fraction: three seeds can give a lucky
small sd, and planning on it would call every claim adequately powered. The
effect is the hypothesis's claimed one (or its threshold, at least DEFAULT_EFFECT). When the
run's seeds are too few, the iteration gets more (up to MAX_AUTO_SEEDS) if the budget left
can pay for every arm at that count; otherwise it keeps them and the verdict will say
"underpowered", which is not evidence of no effect.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from controller.plan import Hypothesis
from controller.power import PowerEstimate, estimate
from controller.registry import AttemptRecord
from controller.research.engineer import DEFAULT_EFFECT, DEFAULT_SD
from controller.selection import counted
from controller.tasks import Task

MAX_AUTO_SEEDS = 10
"""The most seeds per arm the loop raises an iteration to on its own."""
MIN_MEASURED = 3
"""Baseline seeds needed before its own sd replaces the pilot's."""
BUDGET_SHARE = 0.5
"""An iteration may spend at most this share of the budget left on extra seeds."""
MIN_RETEST_SEEDS = 3
"""A second look at a hypothesis's ablations adds at least this many fresh seeds, or none."""


@dataclass(frozen=True)
class Room:
    """What the budget and the iteration's limits leave for more jobs."""

    pair_s: float
    """Seconds of one train + evaluate pair (estimated_pair_s)."""
    available_s: float
    parallel: int = 1
    attempts_left: float = float("inf")
    iteration_s_left: float = float("inf")

    def seconds(self, arms: int, seeds: int) -> float:
        """Wall seconds for `arms` arms at `seeds` more seeds each."""
        return arms * seeds * self.pair_s / max(self.parallel, 1)

    def fits(self, arms: int, seeds: int) -> bool:
        """Whether the iteration's limits (attempts, wall) allow that many more pairs."""
        return 2 * arms * seeds <= self.attempts_left and self.seconds(arms, seeds) <= self.iteration_s_left


class Sizing(BaseModel):
    """How many seeds an iteration runs, and the power statement behind it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seeds: list[int]
    power: PowerEstimate
    """At the seeds chosen."""
    sd_source: str
    raised: bool = False
    note: str


def estimated_pair_s(task: Task, records: Iterable[AttemptRecord], train_fraction: float = 1.0) -> float:
    """Typical seconds of one train + evaluate pair so far (before two jobs ran: the task's
    measured prior, else a quarter of its timeouts)."""
    done = [r.result.duration_s for r in records if r.kind in {"train", "eval"}]
    if len(done) >= 2:
        return 2 * statistics.median(done)
    prior = task.prior_for(train_fraction)
    if prior is not None:
        return prior.pair_s
    return task.timeouts.train / 4 + task.timeouts.predict / 4


def baseline_sd(task: Task, baseline: Mapping[int, AttemptRecord]) -> float | None:
    """The baseline's measured seed-to-seed sd in this run (None below MIN_MEASURED seeds)."""
    values = list(counted(baseline).values())
    return statistics.stdev(values) if len(values) >= MIN_MEASURED else None


def size_iteration(
    task: Task,
    hypothesis: Hypothesis,
    *,
    seeds: list[int],
    arms: int,
    measured_sd: float | None,
    room: Room,
    train_fraction: float = 1.0,
) -> Sizing:
    """The iteration's seeds: the run's, or more when power asks and the budget and the
    iteration's limits (attempts, wall time) allow every arm at that count."""
    prior = task.prior_for(train_fraction)
    if measured_sd is not None and measured_sd > 0 and (prior is None or measured_sd >= prior.baseline_sd):
        sd, source = measured_sd, f"the baseline's sd in this run ({measured_sd:.4f})"
    elif prior is not None:  # three seeds can give a lucky small sd: never plan below the prior's
        sd, source = prior.baseline_sd, f"the task's prior ({prior.baseline_sd:.4f})"
    else:
        sd, source = DEFAULT_SD, f"an assumed sd ({DEFAULT_SD})"
    effect = hypothesis.expected_effect or max(hypothesis.success_threshold, DEFAULT_EFFECT)
    family = max(arms - 1, 1)
    metric = task.metric.name
    at_n = estimate(sd, effect, len(seeds), family=family)
    if at_n.adequate:
        return Sizing(seeds=seeds, power=at_n, sd_source=source, note=f"{at_n.describe(metric)} (sd from {source})")
    needed = at_n.seeds_needed
    if needed is None or needed > MAX_AUTO_SEEDS:
        why = f"the loop raises seeds to at most {MAX_AUTO_SEEDS}"
        return Sizing(
            seeds=seeds, power=at_n, sd_source=source, note=f"{at_n.describe(metric)}; {why} (sd from {source})"
        )
    extra_s = room.seconds(arms, needed - len(seeds))
    if not room.fits(arms, needed):
        why = f"n = {needed} for {arms} arms does not fit the iteration's attempt or wall limit (--iteration-*)"
    elif extra_s > BUDGET_SHARE * room.available_s:
        why = f"raising to n = {needed} needs about {extra_s:.0f}s more, over half the {room.available_s:.0f}s left"
    else:
        more = list(range(max(seeds) + 1, max(seeds) + 1 + needed - len(seeds)))
        raised = estimate(sd, effect, needed, family=family)
        note = f"seeds raised from {len(seeds)} to {needed} for power: {raised.describe(metric)} (sd from {source})"
        return Sizing(seeds=[*seeds, *more], power=raised, sd_source=source, raised=True, note=note)
    return Sizing(seeds=seeds, power=at_n, sd_source=source, note=f"{at_n.describe(metric)}; {why} (sd from {source})")


def retest_seeds(seeds: list[int], arms: int, room: Room) -> list[int]:
    """Fresh seeds for a second look at an iteration's ablations: as many again as it had,
    fewer (not under MIN_RETEST_SEEDS) when that is all the budget left and the iteration's
    limits can pay for `arms` arms; [] when not even that fits."""
    start = max(seeds) + 1
    for extra in range(len(seeds), MIN_RETEST_SEEDS - 1, -1):
        if room.fits(arms, extra) and room.seconds(arms, extra) <= room.available_s:
            return list(range(start, start + extra))
    return []
