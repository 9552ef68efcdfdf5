"""Pure decisions over host-scored records: arm statistics, eligibility, the best arm, verdicts.

Rules that keep selection from being won by luck:
- an arm's statistics count only host-scored, non-suspect seeds;
- an arm is eligible (best so far, the `target` stopping rule, the test split) only with
  every one of the run's seeds scored, and never with fewer than MIN_SELECTION_SEEDS;
- every arm compared with the baseline in one iteration is one family: its Welch p-values
  are Holm-corrected for improvement (an arm that did worse ranks last, with p 1, so that
  sabotaging some arms cannot lighten the others' correction), and "supported" needs the
  corrected p below alpha;
- bounded metrics (accuracy) have their intervals clipped to the range.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

from controller.agents.base import IterationOutcome
from controller.plan import Arm, Hypothesis
from controller.registry import AttemptRecord
from controller.stats import DEFAULT_ALPHA, ArmStats, Comparison, compare, holm, summarize

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
    """Host scores by seed, suspect attempts and `repeated_seeds` left out."""
    repeated = repeated_seeds(records)
    return {
        seed: record.host_score
        for seed, record in sorted(records.items())
        if record.host_score is not None and not record.suspect and seed not in repeated
    }


TWIN_MIN_ERRORS = 10
"""Below this many errors, honest seeds may make the very same few mistakes."""


def _fingerprint(record: AttemptRecord) -> str | None:
    """The digest two seeds must share to be one model; None where that could be honest.

    Honest seeds differ in initialisation and data order, so they miss partly different
    samples; a module that re-seeds torch (or swaps its generator) trains the same model for
    every seed. Exact equality only: on digits at a tenth of its train split, honest seeds'
    error sets overlap by 0.8 (intersection over union) on average and 0.9 at most, so a
    looser match would throw out honest seeds. Near-perfect models (under TWIN_MIN_ERRORS
    errors) may honestly predict alike; records from before `wrong_indices` compare digests.
    """
    if record.wrong_indices is not None and len(record.wrong_indices) < TWIN_MIN_ERRORS:
        return None
    return record.predictions_digest


def repeated_seeds(records: Mapping[int, AttemptRecord]) -> dict[int, int]:
    """Seeds that predict exactly as an earlier counted seed does -> that earlier seed.

    An arm whose seeds are one model has one draw of its mean, not n, yet a spread near zero
    that wins a Welch test far more often than alpha. Repeats count once, and the arm then
    lacks seeds to be selected or supported.
    """
    first: dict[str, int] = {}
    repeated: dict[int, int] = {}
    for seed, record in sorted(records.items()):
        digest = _fingerprint(record)
        if digest is None or record.host_score is None or record.suspect:
            continue
        if digest in first:
            repeated[seed] = first[digest]
        else:
            first[digest] = seed
    return repeated


def eligible(records: Mapping[int, AttemptRecord], seeds: Collection[int]) -> bool:
    """Whether an arm can be selected: every one of the run's seeds counted, not merely as many.

    Counting is not enough once an arm holds seeds beyond the run's (a power raise, an
    ablation re-test): a module that fails the seeds it does badly on, where no repair can
    blame it, would otherwise be selected on the seeds it chose to keep.
    """
    scored = counted(records)
    return set(seeds) <= scored.keys() and len(scored) >= required_seeds(list(seeds))


def choose_eligible(
    arms: Iterable[Arm],
    scores: Mapping[str, Mapping[int, AttemptRecord]],
    stats: Mapping[str, ArmStats],
    seeds: Collection[int],
    higher_is_better: bool,
) -> tuple[Arm, ArmStats] | None:
    """The best of the arms that are `eligible` on the run's seeds (by their validation mean)."""
    candidates = [(a, stats[a.name]) for a in arms if a.name in stats and eligible(scores.get(a.key, {}), seeds)]
    return choose_best(candidates, required_seeds(list(seeds)), higher_is_better)


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


def improvement_p(comparison: Comparison, higher_is_better: bool = True) -> float | None:
    """The p-value a family corrects for a claim of improvement: Welch's (two-sided, so
    conservative for the one-sided claim) where the arm did better, 1 where it did worse.

    Holm steps down from the smallest p: an arm that is significantly *worse* would otherwise
    take the strictest rank and lighten the correction of every other arm. Generated code
    that recognises its ablation arms could sabotage them on purpose and turn its own
    unsupported novelty into a supported one; with this, a worse arm ranks last.
    """
    if comparison.p_value is None:
        return None
    better = comparison.diff > 0 if higher_is_better else comparison.diff < 0
    return comparison.p_value if better else 1.0


def compare_family(
    stats: Mapping[str, ArmStats], baseline: str, higher_is_better: bool = True
) -> dict[str, Comparison]:
    """Every other arm against the baseline; for improvement, Holm-corrected as one family."""
    base = stats.get(baseline)
    if base is None:
        return {}
    raw = {name: compare(arm, base) for name, arm in stats.items() if name != baseline}
    adjusted = holm({name: improvement_p(c, higher_is_better) for name, c in raw.items()})
    return {name: c.with_holm(adjusted[name]) for name, c in raw.items()}


CLAIM_FLOOR = 0.01
"""The effect a hypothesis is taken to claim when it names none (one accuracy point)."""


ATTRIBUTION_LOOKS = 2
"""An iteration's ablations are read at most twice: after its seeds, and once more after a
re-test that adds fresh seeds to the novelty and its unclear ablations."""
ATTRIBUTION_ALPHA = DEFAULT_ALPHA / ATTRIBUTION_LOOKS
"""Each look is one Holm family at alpha / looks: over both looks, the chance of any false
attribution stays under alpha whatever the first look showed (a union bound; optional
stopping on the second look cannot inflate it)."""


def attribute(
    hypothesis: Hypothesis,
    stats: Mapping[str, ArmStats],
    higher_is_better: bool = True,
    alpha: float = ATTRIBUTION_ALPHA,
) -> dict[str, str]:
    """For a supported hypothesis, what each component's ablation says about it.

    `carries`: the novelty beats the arm without the component by the threshold (the gain
    needs it). `not needed`: the arm without it still beats the baseline by the threshold.
    Both kinds of test, for every component, are one Holm family at `alpha` (one look).
    `unclear`: neither could be shown at these seeds. `not ablated`: its arm was not run.
    `needed by the rest`: it would carry, but without it the arm falls significantly below
    the baseline, which has none of the components. Then the rest harms without it (an
    interaction), or generated code that recognises its ablation wrecks it; either way the
    ablation does not show that the component makes the gain. The test is unadjusted:
    demoting a claim is the cautious side.
    """
    novelty, base = stats.get(f"novelty:{hypothesis.id}"), stats.get("baseline")
    names = {c: hypothesis.ablation_arm(c) for c in hypothesis.components()}
    tests: dict[tuple[str, str], Comparison] = {}
    for component, arm in names.items():
        if novelty is None or arm not in stats:
            continue
        tests[component, "carries"] = compare(novelty, stats[arm])
        if base is not None:
            tests[component, "not needed"] = compare(stats[arm], base)
    adjusted = holm({f"{c}|{kind}": improvement_p(t, higher_is_better) for (c, kind), t in tests.items()})
    shown = {
        key
        for key, t in tests.items()
        if t.with_holm(adjusted[f"{key[0]}|{key[1]}"]).supported(hypothesis.success_threshold, higher_is_better, alpha)
    }
    verdicts = {}
    for component in names:
        if not any(c == component for c, _ in tests):
            verdicts[component] = "not ablated"
        elif (component, "not needed") in shown:
            verdicts[component] = "not needed"
        elif (component, "carries") in shown:
            fallen = base is not None and _below(stats[names[component]], base, higher_is_better, alpha)
            verdicts[component] = "needed by the rest" if fallen else "carries"
        else:
            verdicts[component] = "unclear"
    return verdicts


def _below(arm: ArmStats, baseline: ArmStats, higher_is_better: bool, alpha: float) -> bool:
    """Whether the baseline significantly beats this arm."""
    return compare(baseline, arm).supported(0.0, higher_is_better, alpha)


def needs_retest(verdicts: Mapping[str, str]) -> list[str]:
    """The components worth a second look: none carried the gain and these were unclear."""
    if any(v == "carries" for v in verdicts.values()):
        return []
    return [c for c, v in verdicts.items() if v == "unclear"]


def attribution_note(verdicts: Mapping[str, str]) -> str:
    """One line for the report: which component carried the gain."""
    carriers = [c for c, v in verdicts.items() if v == "carries"]
    detail = ", ".join(f"{c}: {v}" for c, v in verdicts.items())
    if all(v == "not ablated" for v in verdicts.values()):
        return f"ablations: none was run, the budget left did not pay for them ({detail})"
    if len(carriers) == 1:
        return f"ablations: {carriers[0]} carried the gain ({detail})"
    if carriers:
        return f"ablations: the gain needs {' and '.join(carriers)} together ({detail})"
    if needing := [c for c, v in verdicts.items() if v == "needed by the rest"]:
        return (
            f"ablations: without {' or '.join(needing)} the rest falls below the baseline, so no component is"
            f" shown to carry the gain ({detail})"
        )
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


def judge(
    iteration: int, hypothesis: Hypothesis, stats: Mapping[str, ArmStats], higher_is_better: bool
) -> IterationOutcome:
    """An iteration's verdict from its arms' statistics: the family of comparisons against the
    baseline (Holm-corrected), supported or not, the first look at the ablations, and for a
    null result whether its CI rules the claim out."""
    comparisons = compare_family(stats, "baseline", higher_is_better)
    novelty = comparisons.get(f"novelty:{hypothesis.id}")
    supported = novelty is not None and novelty.supported(hypothesis.success_threshold, higher_is_better)
    baseline = stats.get("baseline")
    return IterationOutcome(
        iteration=iteration,
        hypothesis=hypothesis,
        supported=supported,
        arm_means={name: s.mean for name, s in stats.items()},
        baseline_mean=baseline.mean if baseline else None,
        p_holm={name: c.p_holm for name, c in comparisons.items()},
        attribution=attribute(hypothesis, stats, higher_is_better) if supported else {},
        excluded=None if supported or novelty is None else claim_excluded(hypothesis, novelty, higher_is_better),
    )
