"""Selection that luck cannot win: eligibility, suspects, Holm, Welch, bounded intervals."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from controller.plan import Arm, Hypothesis
from controller.registry import AttemptRecord
from controller.selection import (
    arm_stats,
    choose_best,
    choose_eligible,
    compare_family,
    counted,
    eligible,
    repeated_seeds,
    required_seeds,
)
from controller.stats import ArmStats, holm, summarize
from sandbox.policy import Policy
from sandbox.results import AttemptResult, Status
from tests.controller.fakes import FakeSandbox, make_loop


def _record(seed: int, score: float, *, suspect: bool = False) -> AttemptRecord:
    result = AttemptResult(status=Status.ok, exit_code=0, duration_s=1.0, started_at=datetime.now(UTC), limits=Policy())
    return AttemptRecord(
        number=seed + 1, key=f"eval/x/s{seed}", kind="eval", iteration=1, seed=seed, status="ok",
        host_score=score, suspect=suspect, result=result,
    )  # fmt: skip


def _arm(name: str) -> Arm:
    return Arm(name=name, modules={}, hyper={"name": name})


def test_suspect_seeds_never_count_and_the_arm_loses_eligibility() -> None:
    records = {0: _record(0, 0.90), 1: _record(1, 1.00, suspect=True), 2: _record(2, 0.92)}
    stats = arm_stats("a", records, "accuracy")
    assert stats is not None and stats.n == 2 and stats.values == [0.90, 0.92]
    assert choose_best([(_arm("a"), stats)], min_seeds=3, higher_is_better=True) is None


def test_eligibility_needs_every_run_seed_not_merely_as_many() -> None:
    # Seeds 3 and 4 came from a re-test; the run's seed 1 failed where no repair could blame
    # the module. Five counted seeds, but not the run's three: not selectable.
    dropped = {s: _record(s, 0.99) for s in (0, 2, 3, 4, 5)}
    full = {s: _record(s, 0.95) for s in (0, 1, 2)}
    assert not eligible(dropped, [0, 1, 2]) and eligible(full, [0, 1, 2])
    assert not eligible({**full, 1: _record(1, 0.95, suspect=True)}, [0, 1, 2])
    arms = [Arm(name=n, modules={}, hyper={"name": n}) for n in ("dropped", "full")]
    scores = {arms[0].key: dropped, arms[1].key: full}
    stats = {a.name: s for a in arms if (s := arm_stats(a.name, scores[a.key], "accuracy"))}
    chosen = choose_eligible(arms, scores, stats, [0, 1, 2], higher_is_better=True)
    assert chosen is not None and chosen[0].name == "full"
    assert choose_eligible(arms[:1], scores, stats, [0, 1, 2], higher_is_better=True) is None


def test_seeds_with_identical_predictions_count_once() -> None:
    records = {s: _record(s, 0.95).model_copy(update={"predictions_digest": "same"}) for s in (0, 1, 2)}
    records[3] = _record(3, 0.93).model_copy(update={"predictions_digest": "other"})
    records[4] = _record(4, 0.94)  # no digest (a record from before digests): counted as it is
    # (these records predate wrong_indices too, so the digests compare exactly)
    assert repeated_seeds(records) == {1: 0, 2: 0}
    assert list(counted(records)) == [0, 3, 4] and not eligible(records, [0, 1, 2])


def _missing(seed: int, wrong: set[int]) -> AttemptRecord:
    return _record(seed, 1 - len(wrong) / 200).model_copy(update={"wrong_indices": sorted(wrong)})


def test_only_exactly_alike_seeds_with_enough_errors_count_once() -> None:
    pinned = set(range(0, 200, 10))  # 20 errors, predicted alike by every seed
    same = {s: _missing(s, pinned).model_copy(update={"predictions_digest": "same"}) for s in (0, 1, 2)}
    assert repeated_seeds(same) == {1: 0, 2: 0} and not eligible(same, [0, 1, 2])
    # Honest seeds on a small split miss nearly the same samples (overlap 0.9 was measured on
    # digits): they are not twins, or honest arms would lose seeds.
    close = {s: _missing(s, pinned - {10 * s}).model_copy(update={"predictions_digest": f"d{s}"}) for s in (0, 1, 2)}
    assert repeated_seeds(close) == {} and eligible(close, [0, 1, 2])
    # Near-perfect models may honestly make the very same few mistakes.
    few = {s: _missing(s, {4, 9, 77}).model_copy(update={"predictions_digest": "same"}) for s in (0, 1, 2)}
    assert repeated_seeds(few) == {} and eligible(few, [0, 1, 2])


def test_an_arm_is_never_selected_on_one_seed() -> None:
    assert required_seeds([0]) == 2 and required_seeds([0, 1, 2]) == 3
    lucky = summarize("lucky", [0.99])
    steady = summarize("steady", [0.95, 0.96, 0.95])
    chosen = choose_best([(_arm("lucky"), lucky), (_arm("steady"), steady)], 3, higher_is_better=True)
    assert chosen is not None and chosen[0].name == "steady"
    assert choose_best([(_arm("lucky"), lucky)], required_seeds([0]), higher_is_better=True) is None


def test_sabotaged_arms_cannot_lighten_the_novelty_correction() -> None:
    # Generated code that recognises its ablation arms (the other slots are the baseline's)
    # could wreck them: two arms far worse than the baseline would take Holm's strictest
    # ranks and leave the novelty's raw p uncorrected. A worse arm ranks last instead.
    base = summarize("baseline", [0.900, 0.905, 0.895, 0.902, 0.898])
    novelty = summarize("novelty:x", [0.911, 0.904, 0.914, 0.909, 0.901])
    honest = [summarize(f"ablation:x-no-{c}", [0.901, 0.906, 0.897, 0.899, 0.903]) for c in "ab"]
    wrecked = [summarize(f"ablation:x-no-{c}", [0.50, 0.51, 0.49, 0.505, 0.495]) for c in "ab"]
    verdicts = []
    for ablations in (honest, wrecked):
        family = compare_family({"baseline": base, "novelty:x": novelty, **{a.arm: a for a in ablations}}, "baseline")
        verdicts.append(family["novelty:x"])
        assert all(family[a.arm].p_holm == 1.0 for a in ablations if family[a.arm].diff < 0)
    assert verdicts[0].p_value is not None and 0.0167 < verdicts[0].p_value < 0.05  # supported only if uncorrected
    assert verdicts[1].p_holm == verdicts[0].p_holm == pytest.approx(3 * verdicts[0].p_value)
    assert not verdicts[1].supported(0.005)
    lower = compare_family({"baseline": base, "novelty:x": novelty}, "baseline", higher_is_better=False)
    assert lower["novelty:x"].p_holm == 1.0  # for a loss, a higher mean is no improvement


def test_a_hypothesis_may_not_set_what_the_loop_owns(tmp_path: Path) -> None:
    # holdout_fraction 0 would train the novelty on the baseline's holdout and switch off the
    # check of its telemetry.
    with pytest.raises(ValueError, match="hyper may not set holdout_fraction"):
        Hypothesis(id="more-data", statement="s", hyper={"lr": 0.01, "holdout_fraction": 0})
    assert Hypothesis(id="ok", statement="s", hyper={"lr": 0.01, "arch": "resnet18"}).hyper["arch"] == "resnet18"
    loop = make_loop(tmp_path, FakeSandbox(), seeds=2)
    recorded = Arm(name="novelty:old", modules={}, hyper={"lr": 0.01, "holdout_fraction": 0.0, "seed": 99})
    config = loop.trial.config_for(recorded, 3)  # an arm recorded before the rule: the loop's values win
    assert config["holdout_fraction"] == loop.task.defaults["holdout_fraction"] and config["seed"] == 3
    assert config["lr"] == 0.01


def test_holm_adjusts_and_keeps_the_order() -> None:
    adjusted = holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": None})
    assert adjusted == {"a": pytest.approx(0.03), "c": pytest.approx(0.06), "b": pytest.approx(0.06), "d": None}
    assert holm({"only": 0.2}) == {"only": 0.2}
    assert holm({"x": 0.6, "y": 0.7}) == {"x": 1.0, "y": 1.0}


def test_support_needs_the_holm_corrected_welch_p_not_only_a_raw_one() -> None:
    base = summarize("baseline", [0.900, 0.905, 0.895])
    better = summarize("better", [0.915, 0.920, 0.910])
    noise = [summarize(f"n{i}", [0.90 + 0.004 * i, 0.905, 0.895 + 0.003 * i]) for i in range(5)]
    alone = compare_family({"baseline": base, "better": better}, "baseline")["better"]
    crowd = compare_family({"baseline": base, "better": better, **{s.arm: s for s in noise}}, "baseline")["better"]
    assert alone.p_value == crowd.p_value and alone.p_value is not None and alone.p_value < 0.05
    assert crowd.p_holm is not None and crowd.p_holm > alone.p_value
    assert alone.supported(0.005)  # one comparison: p ~ 0.02 holds
    assert not crowd.supported(0.005)  # one of six comparisons: the same p no longer does
    assert alone.diff_ci_low is not None and alone.diff_ci_low < alone.diff < (alone.diff_ci_high or 0)


def test_a_ci_that_excludes_the_baseline_mean_is_not_enough_on_its_own() -> None:
    # the arm's own CI sits above the baseline mean, but the baseline is noisy: Welch disagrees
    base = summarize("baseline", [0.80, 0.95, 0.86])
    arm = summarize("arm", [0.905, 0.91, 0.915])
    comparison = compare_family({"baseline": base, "arm": arm}, "baseline")["arm"]
    assert comparison.ci_excludes_baseline
    assert comparison.p_value is not None and comparison.p_value > 0.05
    assert not comparison.supported(0.005)


def test_accuracy_intervals_are_clipped_to_their_range() -> None:
    unclipped = summarize("a", [0.99, 1.0, 0.995])
    clipped = summarize("a", [0.99, 1.0, 0.995], bounds=(0.0, 1.0))
    assert unclipped.ci_high is not None and unclipped.ci_high > 1.0
    assert clipped.ci_high == 1.0 and clipped.ci_low == unclipped.ci_low


def test_the_report_states_holm_corrected_p_values_and_eligibility(tmp_path: Path) -> None:
    import json

    loop = make_loop(tmp_path, FakeSandbox())
    loop.run()
    aggregates = json.loads((loop.store.root / "aggregates.json").read_text())
    assert aggregates["multiple_comparisons"].startswith("holm")
    compared = [a["vs_baseline"] for a in aggregates["arms"].values() if "vs_baseline" in a]
    assert compared and all(c["p_holm"] is not None and c["p_holm"] >= c["p_value"] for c in compared)
    assert all(a["eligible"] for a in aggregates["arms"].values())
    summary = (loop.store.root / "report" / "summary.md").read_text()
    assert "p (Holm)" in summary


def test_ablations_name_the_component_that_carried_the_gain() -> None:
    from controller.plan import Hypothesis
    from controller.selection import attribute, attribution_note
    from controller.stats import summarize

    hypothesis = Hypothesis(id="h", statement="s", modules={"augment": "a", "head": "b"})
    stats = {
        "baseline": summarize("baseline", [0.90, 0.91, 0.905, 0.902], bounds=(0.0, 1.0)),
        "novelty:h": summarize("novelty:h", [0.95, 0.951, 0.949, 0.952], bounds=(0.0, 1.0)),
        "ablation:h-no-augment": summarize("ablation:h-no-augment", [0.903, 0.906, 0.901, 0.904], bounds=(0.0, 1.0)),
        "ablation:h-no-head": summarize("ablation:h-no-head", [0.948, 0.95, 0.951, 0.947], bounds=(0.0, 1.0)),
    }
    verdicts = attribute(hypothesis, stats)
    assert verdicts == {"module:augment": "carries", "module:head": "not needed"}
    assert attribution_note(verdicts).startswith("ablations: module:augment carried the gain")
    without = {k: v for k, v in stats.items() if k != "ablation:h-no-head"}
    assert attribute(hypothesis, without)["module:head"] == "not ablated"
    # an ablation that sits between the two, at too few seeds to tell: neither claim is made
    vague = {
        **stats,
        "ablation:h-no-augment": summarize("ablation:h-no-augment", [0.92, 0.95, 0.91, 0.94], bounds=(0.0, 1.0)),
    }
    assert attribute(hypothesis, vague)["module:augment"] == "unclear"


def test_an_ablation_wrecked_below_the_baseline_does_not_say_its_component_carries() -> None:
    # The generated head recognises the baseline augmentation beside it and sabotages training,
    # and the augmentation does the same to the baseline head: each ablation craters, and each
    # component would "carry" the gain though neither was shown to make it.
    from controller.plan import Hypothesis
    from controller.selection import attribute, attribution_note
    from controller.stats import summarize

    hypothesis = Hypothesis(id="h", statement="s", modules={"augment": "a", "head": "b"})
    wrecked = [0.50, 0.52, 0.51, 0.505]
    stats = {
        "baseline": summarize("baseline", [0.90, 0.91, 0.905, 0.902], bounds=(0.0, 1.0)),
        "novelty:h": summarize("novelty:h", [0.95, 0.951, 0.949, 0.952], bounds=(0.0, 1.0)),
        "ablation:h-no-augment": summarize("ablation:h-no-augment", wrecked, bounds=(0.0, 1.0)),
        "ablation:h-no-head": summarize("ablation:h-no-head", wrecked, bounds=(0.0, 1.0)),
    }
    verdicts = attribute(hypothesis, stats)
    assert verdicts == {"module:augment": "needed by the rest", "module:head": "needed by the rest"}
    note = attribution_note(verdicts)
    assert "rest falls below the baseline" in note and "carried the gain (" not in note
    # An ablation that falls back to the baseline, not below it, still shows its component carries.
    honest = {**stats, "ablation:h-no-head": summarize("ablation:h-no-head", [0.901, 0.905, 0.9, 0.903], bounds=(0, 1))}
    assert attribute(hypothesis, honest)["module:head"] == "carries"


def test_each_look_at_the_ablations_is_one_holm_family_at_half_alpha() -> None:
    """A gain that a single test at alpha = 0.05 would attribute is 'unclear' at one look of
    two: Holm over every attribution test of the look, at 0.025. Only then may a second look
    with fresh seeds follow without inflating the chance of a false attribution."""
    from controller.plan import Hypothesis
    from controller.selection import ATTRIBUTION_ALPHA, attribute, attribution_note, needs_retest
    from controller.stats import compare, summarize

    hypothesis = Hypothesis(id="h", statement="s", hyper={"width": 64, "lr": 0.006})
    noise = [0, 2, 3, 1, 2, 0]  # in 1/200ths, the same for every arm: a 6/200 gain from width

    def arm(name: str, gain: int, n: int) -> ArmStats:
        return summarize(name, [(160 + gain + k) / 200 for k in noise[:n]], bounds=(0.0, 1.0))

    def arms(n: int) -> dict[str, ArmStats]:
        return {"baseline": arm("baseline", 0, 3), "novelty:h": arm("novelty:h", 6, n),
                "ablation:h-no-width": arm("ablation:h-no-width", 0, n),
                "ablation:h-no-lr": arm("ablation:h-no-lr", 6, n)}  # fmt: skip

    first = arms(3)
    p = compare(first["novelty:h"], first["ablation:h-no-width"]).p_value
    assert p is not None and 4 * p < 0.05  # alone, or at alpha = 0.05, width would be named
    verdicts = attribute(hypothesis, first)
    assert verdicts == {"hyper:lr": "unclear", "hyper:width": "unclear"} and ATTRIBUTION_ALPHA == 0.025
    assert needs_retest(verdicts) == ["hyper:lr", "hyper:width"]
    assert attribute(hypothesis, arms(6)) == {"hyper:lr": "unclear", "hyper:width": "carries"}
    assert needs_retest({"hyper:lr": "unclear", "hyper:width": "carries"}) == []
    unrun = attribution_note({"hyper:lr": "not ablated", "hyper:width": "not ablated"})
    assert unrun.startswith("ablations: none was run") and "not needed" not in unrun


def test_a_null_result_refutes_only_when_its_ci_rules_the_claim_out() -> None:
    from controller.plan import Hypothesis
    from controller.selection import claim_excluded
    from controller.stats import compare, summarize

    claim = Hypothesis(id="h", statement="s", hyper={"lr": 0.1}, expected_effect=0.02)
    base = summarize("baseline", [0.90, 0.901, 0.899, 0.90, 0.902], bounds=(0.0, 1.0))
    flat = summarize("novelty:h", [0.90, 0.902, 0.899, 0.901, 0.90], bounds=(0.0, 1.0))
    noisy = summarize("novelty:h", [0.88, 0.95, 0.90, 0.96, 0.87], bounds=(0.0, 1.0))
    assert claim_excluded(claim, compare(flat, base)) is True  # +2 points lies far outside a tight CI
    assert claim_excluded(claim, compare(noisy, base)) is False  # a wide CI still holds +2: no evidence
