"""Power in the loop: an iteration gets the seeds its claim needs when the budget allows,
and says "underpowered" (with what it would take) when it does not."""

from __future__ import annotations

import json
from pathlib import Path

from controller.plan import Hypothesis
from controller.power import estimate
from controller.sizing import MAX_AUTO_SEEDS, size_iteration
from controller.tasks import load_task
from tests.controller.fakes import FakeSandbox, make_loop

TASK = load_task("digits")
CLAIM = Hypothesis(id="h", statement="s", modules={"augment": "x"}, expected_effect=0.03)


def test_enough_seeds_are_kept() -> None:
    big = CLAIM.model_copy(update={"expected_effect": 0.12})
    sizing = size_iteration(TASK, big, seeds=[0, 1, 2], arms=3, measured_sd=0.015, pair_s=9, available_s=600)
    assert sizing.seeds == [0, 1, 2] and sizing.power.adequate and not sizing.raised
    assert sizing.note.startswith("adequately powered: n = 3")
    assert "the baseline's sd in this run (0.0150)" in sizing.note


def test_a_lucky_small_sd_never_plans_below_the_prior() -> None:
    sizing = size_iteration(TASK, CLAIM, seeds=[0, 1, 2], arms=3, measured_sd=0.002, pair_s=9, available_s=600)
    assert TASK.prior is not None and sizing.power.sd == TASK.prior.baseline_sd
    assert f"the task's prior ({TASK.prior.baseline_sd:.4f})" in sizing.note


def test_too_few_seeds_are_raised_when_the_budget_pays_for_every_arm() -> None:
    sizing = size_iteration(TASK, CLAIM, seeds=[0, 1, 2], arms=3, measured_sd=0.015, pair_s=9, available_s=3600)
    needed = estimate(0.015, 0.03, 3, family=2).seeds_needed
    assert needed is not None and 3 < needed <= MAX_AUTO_SEEDS
    assert sizing.raised and sizing.seeds == list(range(needed)) and sizing.power.adequate
    assert sizing.note.startswith(f"seeds raised from 3 to {needed} for power")


def test_without_the_budget_the_iteration_says_underpowered_and_why() -> None:
    sizing = size_iteration(TASK, CLAIM, seeds=[5, 6, 7], arms=3, measured_sd=0.015, pair_s=9, available_s=60)
    assert sizing.seeds == [5, 6, 7] and not sizing.power.adequate and not sizing.raised
    assert sizing.note.startswith("underpowered: needs n = ") and "over half the 60s left" in sizing.note


def test_a_claim_past_the_ceiling_is_not_sized() -> None:
    tiny = CLAIM.model_copy(update={"expected_effect": 0.002})
    sizing = size_iteration(TASK, tiny, seeds=[0, 1, 2], arms=3, measured_sd=0.015, pair_s=1, available_s=1e6)
    assert not sizing.raised and f"at most {MAX_AUTO_SEEDS}" in sizing.note


def test_the_prior_stands_in_until_the_baseline_has_three_seeds() -> None:
    sizing = size_iteration(TASK, CLAIM, seeds=[0, 1, 2], arms=3, measured_sd=None, pair_s=9, available_s=600)
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
