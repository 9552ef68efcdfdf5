"""Power in the loop: an iteration gets the seeds its claim needs when the budget allows,
and says "underpowered" (with what it would take) when it does not."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from controller.loop import ResearchLoop
from controller.plan import Hypothesis
from controller.power import estimate
from controller.sizing import MAX_AUTO_SEEDS, Room, size_iteration
from controller.tasks import load_task
from sandbox.base import Job
from tests.controller.fakes import Canned, FakeSandbox, make_loop

TASK = load_task("digits")
CLAIM = Hypothesis(id="h", statement="s", modules={"augment": "x"}, expected_effect=0.03)


def test_enough_seeds_are_kept() -> None:
    big = CLAIM.model_copy(update={"expected_effect": 0.12})
    sizing = size_iteration(TASK, big, seeds=[0, 1, 2], arms=3, measured_sd=0.015, room=Room(pair_s=9, available_s=600))
    assert sizing.seeds == [0, 1, 2] and sizing.power.adequate and not sizing.raised
    assert sizing.note.startswith("adequately powered: n = 3")
    assert "the baseline's sd in this run (0.0150)" in sizing.note


def test_a_lucky_small_sd_never_plans_below_the_prior() -> None:
    sizing = size_iteration(
        TASK, CLAIM, seeds=[0, 1, 2], arms=3, measured_sd=0.002, room=Room(pair_s=9, available_s=600)
    )
    assert TASK.prior is not None and sizing.power.sd == TASK.prior.baseline_sd
    assert f"the task's prior ({TASK.prior.baseline_sd:.4f})" in sizing.note


def test_too_few_seeds_are_raised_when_the_budget_pays_for_every_arm() -> None:
    sizing = size_iteration(
        TASK, CLAIM, seeds=[0, 1, 2], arms=3, measured_sd=0.015, room=Room(pair_s=9, available_s=3600)
    )
    needed = estimate(0.015, 0.03, 3, family=2).seeds_needed
    assert needed is not None and 3 < needed <= MAX_AUTO_SEEDS
    assert sizing.raised and sizing.seeds == list(range(needed)) and sizing.power.adequate
    assert sizing.note.startswith(f"seeds raised from 3 to {needed} for power")


def test_without_the_budget_the_iteration_says_underpowered_and_why() -> None:
    sizing = size_iteration(
        TASK, CLAIM, seeds=[5, 6, 7], arms=3, measured_sd=0.015, room=Room(pair_s=9, available_s=60)
    )
    assert sizing.seeds == [5, 6, 7] and not sizing.power.adequate and not sizing.raised
    assert sizing.note.startswith("underpowered: needs n = ") and "over half the 60s left" in sizing.note


def test_a_claim_past_the_ceiling_is_not_sized() -> None:
    tiny = CLAIM.model_copy(update={"expected_effect": 0.002})
    sizing = size_iteration(
        TASK, tiny, seeds=[0, 1, 2], arms=3, measured_sd=0.015, room=Room(pair_s=1, available_s=1e6)
    )
    assert not sizing.raised and f"at most {MAX_AUTO_SEEDS}" in sizing.note


def test_the_prior_stands_in_until_the_baseline_has_three_seeds() -> None:
    sizing = size_iteration(
        TASK, CLAIM, seeds=[0, 1, 2], arms=3, measured_sd=None, room=Room(pair_s=9, available_s=600)
    )
    assert TASK.prior is not None and f"the task's prior ({TASK.prior.baseline_sd:.4f})" in sizing.note


def test_the_loop_records_power_per_iteration_and_the_report_words_the_verdict(tmp_path: Path) -> None:
    loop = make_loop(tmp_path, FakeSandbox())
    loop.run()
    root = loop.store.root
    journal = json.loads((root / "journal.json").read_text())
    assert journal and all(o["power"] and o["seeds"] >= 3 and o["adequate"] is not None for o in journal)
    summary = (root / "report" / "summary.md").read_text()
    assert "Power: " in summary
    for outcome in journal:
        if not outcome["supported"]:
            assert outcome["excluded"] is not None
            word = "ruled out (refuted)" if outcome["excluded"] else "inconclusive: the CI still holds"
            assert word in summary
    # seeds the sizing added are trained for the baseline too: every arm compared on the same seeds
    base = json.loads((root / "aggregates.json").read_text())["arms"]["baseline"]["validation"]["n"]
    assert base == max(o["seeds"] for o in journal)


def test_the_loop_raises_seeds_for_every_arm_of_an_underpowered_iteration(tmp_path: Path) -> None:
    from controller.agents.offline import LIBRARY
    from controller.plan import Plan, StoppingRules

    claim = LIBRARY[0].model_copy(update={"expected_effect": 0.02})  # needs 6 seeds at the prior's sd
    loop = make_loop(tmp_path, FakeSandbox())
    plan = Plan(task="digits", objective="o", topic="t", hypotheses=[claim], stopping=StoppingRules(max_iterations=1))
    loop.store.write("plan.json", plan)
    loop.run()
    root = loop.store.root
    outcome = json.loads((root / "journal.json").read_text())[0]
    needed = estimate(TASK.prior.baseline_sd, 0.02, 3, family=3).seeds_needed  # type: ignore[union-attr]
    assert outcome["seeds"] == needed and outcome["power"].startswith(f"seeds raised from 3 to {needed}")
    arms = json.loads((root / "aggregates.json").read_text())["arms"]
    assert {name: arm["validation"]["n"] for name, arm in arms.items()} == dict.fromkeys(arms, needed)


def test_a_retest_adds_as_many_fresh_seeds_again_or_fewer_or_none() -> None:
    from controller.sizing import MIN_RETEST_SEEDS, retest_seeds

    assert retest_seeds([0, 1, 2, 3, 4], 2, Room(pair_s=10, available_s=1000)) == [5, 6, 7, 8, 9]
    # 60 s pays for 3 more seeds of 2 arms at 10 s a pair, not 5
    assert retest_seeds([0, 1, 2, 3, 4], 2, Room(pair_s=10, available_s=60)) == [5, 6, 7]
    assert retest_seeds([0, 1, 2, 3, 4], 2, Room(pair_s=10, available_s=10 * 2 * MIN_RETEST_SEEDS - 1)) == []
    assert retest_seeds([0, 1, 2], 2, Room(pair_s=10, available_s=1000, attempts_left=11)) == []  # 12 attempts
    assert retest_seeds([100, 101, 102], 3, Room(pair_s=1, available_s=1000, parallel=3)) == [103, 104, 105]


class _Graded(FakeSandbox):
    """A 6/200 validation gain from width 64 and none from lr, over a seed noise that leaves
    the first look's attribution unclear at 3 seeds and clear at 6."""

    NOISE = (0, 2, 3, 1, 2, 0)

    def honest(self, kind: str, job: Job) -> Canned:
        if kind != "train":
            return super().honest(kind, job)
        config = json.loads(job.files["config.json"])
        q = (160 + 6 * (int(config["width"]) == 64) + self.NOISE[int(config["seed"]) % 6]) / 200
        return Canned(files={"out/model.pt": struct.pack("d", q)})


def _one_hypothesis_loop(tmp_path: Path, **kwargs: object) -> ResearchLoop:
    from controller.plan import Plan, StoppingRules

    claim = Hypothesis(id="wide", statement="a wider trunk", hyper={"width": 64, "lr": 0.006}, expected_effect=0.1)
    loop = make_loop(tmp_path, _Graded(), **kwargs)  # type: ignore[arg-type]
    plan = Plan(task="digits", objective="o", topic="t", hypotheses=[claim], stopping=StoppingRules(max_iterations=1))
    loop.store.write("plan.json", plan)
    return loop


def test_unclear_ablations_of_a_supported_hypothesis_get_a_second_look_on_fresh_seeds(tmp_path: Path) -> None:
    loop = _one_hypothesis_loop(tmp_path)
    loop.run()
    root = loop.store.root
    outcome = json.loads((root / "journal.json").read_text())[0]
    assert outcome["supported"] and outcome["seeds"] == 3
    assert outcome["attribution"] == {"hyper:lr": "unclear", "hyper:width": "carries"}  # baseline: 3 seeds
    assert any("re-tested on seeds 3-5" in note for note in outcome["notes"])
    assert any(n.startswith("ablations: hyper:width carried the gain") for n in outcome["notes"])
    # the verdict stays the first look's (3 seeds, Holm over 3 arms); the novelty and its
    # ablations got the fresh seeds, the baseline did not
    assert 0.02 < outcome["p_holm"]["novelty:wide"] < 0.05
    arms = json.loads((root / "aggregates.json").read_text())["arms"]
    assert {name: arm["validation"]["n"] for name, arm in arms.items()} == {
        "baseline": 3, "novelty:wide": 6, "ablation:wide-no-lr": 6, "ablation:wide-no-width": 6,
    }  # fmt: skip
    events = [json.loads(line) for line in (root / "events.jsonl").read_text().splitlines()]
    assert [e["seeds"] for e in events if e["event"] == "attribution.retest"] == [[3, 4, 5]]


def test_without_the_budget_for_a_second_look_the_ablations_stay_unclear_and_say_why(tmp_path: Path) -> None:
    from controller.ledger import IterationLimits

    # 3 seeds x 4 arms x 2 jobs, plus the modules' guards, leave no room for 3 more seeds of 3 arms
    loop = _one_hypothesis_loop(tmp_path, limits=IterationLimits(attempts=30))
    loop.run()
    outcome = json.loads((loop.store.root / "journal.json").read_text())[0]
    assert outcome["supported"] and outcome["attribution"] == {"hyper:lr": "unclear", "hyper:width": "unclear"}
    assert any("at more seeds does not fit the budget left" in note for note in outcome["notes"])
    assert any("these seeds cannot tell which component" in note for note in outcome["notes"])
