"""Pure decisions over host-scored records: arm statistics, eligibility, the best arm, verdicts.

Rules that keep selection from being won by luck:
- an arm's statistics count only host-scored, non-suspect seeds;
- an arm is eligible (best so far, the `target` stopping rule, the test split) only with
  every one of the run's seeds scored, and never with fewer than MIN_SELECTION_SEEDS;
- every arm compared with the baseline in one iteration is one family: its Welch p-values
  are Holm-corrected, and "supported" needs the corrected p below alpha;
- bounded metrics (accuracy) have their intervals clipped to the range.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from controller.plan import Arm, Hypothesis
from controller.registry import AttemptRecord
from controller.stats import ArmStats, Comparison, compare, holm, summarize

MIN_SELECTION_SEEDS = 2
"""No arm is ever selected on fewer seeds than this, whatever the run was started with."""
ACCURACY_BOUNDS = (0.0, 1.0)


def metric_bounds(metric: str) -> tuple[float, float] | None:
    """The range of a bounded metric (accuracy), or None."""
    return ACCURACY_BOUNDS if metric == "accuracy" else None


def required_seeds(seeds: list[int]) -> int:
    """Seeds an arm needs scored before it can be selected."""
    return max(MIN_SELECTION_SEEDS, len(seeds))


def counted(records: Mapping[int, AttemptRecord]) -> dict[int, float]:
    """Host scores by seed, suspect attempts left out."""
    return {
        seed: record.host_score
        for seed, record in sorted(records.items())
        if record.host_score is not None and not record.suspect
    }


def arm_stats(name: str, records: Mapping[int, AttemptRecord], metric: str) -> ArmStats | None:
    """The arm's statistics over its counted seeds, or None when none counts."""
    values = list(counted(records).values())
    return summarize(name, values, bounds=metric_bounds(metric)) if values else None


def choose_best(
    candidates: Iterable[tuple[Arm, ArmStats]], min_seeds: int, higher_is_better: bool
) -> tuple[Arm, ArmStats] | None:
    """The eligible arm with the best validation mean; None when no arm is eligible."""
    eligible = [(arm, stats) for arm, stats in candidates if stats.n >= min_seeds]
    if not eligible:
        return None
    return max(eligible, key=lambda c: c[1].mean if higher_is_better else -c[1].mean)


def compare_family(stats: Mapping[str, ArmStats], baseline: str) -> dict[str, Comparison]:
    """Every other arm against the baseline, Welch p-values Holm-corrected as one family."""
    base = stats.get(baseline)
    if base is None:
        return {}
    raw = {name: compare(arm, base) for name, arm in stats.items() if name != baseline}
    adjusted = holm({name: c.p_value for name, c in raw.items()})
    return {name: c.with_holm(adjusted[name]) for name, c in raw.items()}


CLAIM_FLOOR = 0.01
"""The effect a hypothesis is taken to claim when it names none (one accuracy point)."""


def attribute(
    hypothesis: Hypothesis,
    stats: Mapping[str, ArmStats],
    comparisons: Mapping[str, Comparison],
    higher_is_better: bool = True,
) -> dict[str, str]:
    """For a supported hypothesis, what each component's ablation says about it.

    `carries`: the novelty beats the arm without the component (Welch, Holm-corrected over the
    components, by the threshold): the gain needs it. `not needed`: the arm without it still
    beats the baseline. `unclear`: neither could be shown at these seeds. `not ablated`: its
    arm was not run (budget).
    """
    novelty = stats.get(f"novelty:{hypothesis.id}")
    names = {c: f"ablation:{hypothesis.id}-no-{c.partition(':')[2]}" for c in hypothesis.components()}
    against = {c: compare(novelty, stats[arm]) for c, arm in names.items() if novelty is not None and arm in stats}
    adjusted = holm({c: comparison.p_value for c, comparison in against.items()})
    verdicts = {}
    for component, arm in names.items():
        if component not in against:
            verdicts[component] = "not ablated"
        elif arm in comparisons and comparisons[arm].supported(hypothesis.success_threshold, higher_is_better):
            verdicts[component] = "not needed"
        elif (
            against[component].with_holm(adjusted[component]).supported(hypothesis.success_threshold, higher_is_better)
        ):
            verdicts[component] = "carries"
        else:
            verdicts[component] = "unclear"
    return verdicts


def attribution_note(verdicts: Mapping[str, str]) -> str:
    """One line for the report: which component carried the gain."""
    carriers = [c for c, v in verdicts.items() if v == "carries"]
    detail = ", ".join(f"{c}: {v}" for c, v in verdicts.items())
    if len(carriers) == 1:
        return f"ablations: {carriers[0]} carried the gain ({detail})"
    if carriers:
        return f"ablations: the gain needs {' and '.join(carriers)} together ({detail})"
    if any(v == "unclear" for v in verdicts.values()):
        return f"ablations: these seeds cannot tell which component carried the gain ({detail})"
    return f"ablations: no single component is needed for the gain ({detail})"


def claim_excluded(hypothesis: Hypothesis, novelty: Comparison, higher_is_better: bool = True) -> bool | None:
    """Whether the data rule out the effect the hypothesis claims: the 95% CI of the difference
    lies wholly below it. Only then is a hypothesis that was not supported refuted; a wide CI
    that still holds the claim is no evidence either way. None when there is no CI."""
    claim = hypothesis.expected_effect or max(hypothesis.success_threshold, CLAIM_FLOOR)
    bound = novelty.diff_ci_high if higher_is_better else novelty.diff_ci_low
    if bound is None:
        return None
    return bound < claim if higher_is_better else bound > -claim
