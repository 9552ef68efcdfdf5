"""The offline planning session: the roles, the rules no voice can talk around, the plan."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controller.agents.offline import LIBRARY
from controller.plan import Hypothesis, Plan
from controller.power import estimate
from controller.research.engineer import Pilot, pilot_for
from controller.research.memory import Finding, read_memory, record_findings, refuted
from controller.research.novelty import TOO_CLOSE, judge
from controller.research.offline_roles import OfflineRoles
from controller.research.planning import PlanningError, run_session
from controller.research.session import Context, Critique, Proposal, SessionTurn, Spoken, Verdict
from controller.research.sources import builtin_corpus
from controller.tasks import load_task

TOPIC = "data augmentation for small digit datasets"
PILOT = Pilot(baseline_sd=0.0092, pair_s=9.0, source="test")


def _context(memory: list[Finding] | None = None, **overrides: object) -> Context:
    papers = [p.with_key() for p in builtin_corpus().papers]
    values: dict[str, object] = {
        "topic": TOPIC,
        "idea": None,
        "task": load_task("digits"),
        "dataset": "digits",
        "papers": papers,
        "summaries": {},
        "memory": memory or [],
        "pilot": PILOT,
        "seeds": 3,
        "budget_s": 240.0,
    }
    values.update(overrides)
    return Context(**values)  # type: ignore[arg-type]


def _session(ctx: Context) -> tuple[Plan, list[SessionTurn]]:
    turns: list[SessionTurn] = []
    plan, _ = run_session(ctx, OfflineRoles(), turns.append)
    return plan, turns


def test_an_idea_that_restates_a_paper_is_dropped_with_the_paper_cited_and_replaced() -> None:
    plan, turns = _session(_context())
    cutout = next(v for v in judge([h for h in LIBRARY if h.id == "cutout"], _context().papers))
    # Cutout is DeVries and Taylor's method; random erasing (Zhong et al.) is the same idea.
    assert cutout.verdict == "too_close" and cutout.cited in {"devries2017improved", "zhong2020random"}
    assert [t.role for t in turns] == ["pi", "engineer", "reviewer", "pi", "engineer", "reviewer"]
    first_review = turns[2]
    drop = next(v for v in first_review.data["verdicts"] if v["hypothesis"] == "cutout")
    assert drop["decision"] == "drop" and drop["cited"] == [cutout.cited]
    assert cutout.cited in first_review.cited and "too close to" in drop["reasons"][0]
    assert "cutout" not in [h.id for h in plan.hypotheses]
    assert "cutout" in turns[0].hypotheses and "cutout" not in turns[3].hypotheses
    assert len(plan.hypotheses) == 3


def test_every_hypothesis_carries_citations_power_seeds_and_a_stopping_rule() -> None:
    ctx = _context()
    plan, _ = _session(ctx)
    keys = {p.key for p in ctx.papers}
    assert Plan.model_validate(plan.model_dump()) == plan and plan.topic == TOPIC
    assert plan.rationale is not None and plan.rationale.baseline_citations
    assert set(plan.rationale.baseline_citations + plan.rationale.dataset_citations) <= keys
    assert any(h.citations for h in plan.hypotheses)
    for hypothesis in plan.hypotheses:
        assert set(hypothesis.citations) <= keys
        family = len(hypothesis.components()) + 1
        expected = estimate(PILOT.baseline_sd, 0.01, 3, family=family)
        assert hypothesis.seeds_needed == expected.seeds_needed
        assert hypothesis.power.startswith(expected.describe())
        assert "underpowered, not as evidence of no effect" in hypothesis.stopping


def test_the_session_is_deterministic() -> None:
    first, turns_a = _session(_context())
    second, turns_b = _session(_context())
    assert first == second and turns_a == turns_b


def test_the_engineer_says_when_the_budget_cannot_support_the_claim() -> None:
    tight, _ = _session(_context(budget_s=60.0))
    assert all("the budget cannot support the claim" in h.power for h in tight.hypotheses)
    roomy, _ = _session(_context(budget_s=36_000.0))
    assert all("the budget can pay for n = " in h.power for h in roomy.hypotheses)


def _refutation(hypothesis: str) -> Finding:
    return Finding(
        run_id="old",
        task="digits",
        dataset="digits",
        hypothesis=hypothesis,
        statement="...",
        verdict="refuted",
        effect=-0.001,
        n=20,
        power="adequately powered",
    )


def test_the_pi_skips_what_memory_refuted_and_the_reviewer_drops_it_without_a_reason() -> None:
    ctx = _context([_refutation("noise-bnmlp")])
    plan, turns = _session(ctx)
    assert "noise-bnmlp" not in turns[0].hypotheses
    assert "not proposing `noise-bnmlp`: refuted in run old" in turns[0].content
    assert "noise-bnmlp" not in [h.id for h in plan.hypotheses]

    class Stubborn(OfflineRoles):
        """A PI that proposes the refuted idea anyway, once without and once with a reason."""

        def __init__(self, reason: str) -> None:
            super().__init__()
            self.reason = reason

        def propose(self, ctx: Context) -> tuple[Proposal, Spoken]:
            again = next(h for h in LIBRARY if h.id == "noise-bnmlp").model_copy(update={"retest_reason": self.reason})
            return Proposal(objective="o", hypotheses=[again]), Spoken("again")

        def revise(self, ctx: Context, proposal: Proposal, critique: Critique) -> tuple[Proposal, Spoken]:
            return proposal, Spoken("no change")

    with pytest.raises(PlanningError, match="refuted in run old"):
        run_session(ctx, Stubborn(""), lambda turn: None)
    plan, _ = run_session(ctx, Stubborn("the old run used 8x8 inputs only"), lambda turn: None)
    assert [h.id for h in plan.hypotheses] == ["noise-bnmlp"]


def test_a_reviewer_cannot_keep_an_idea_too_close_to_a_paper() -> None:
    ctx = _context()
    devries = next(p for p in ctx.papers if p.key == "devries2017improved")
    copy = Hypothesis(
        id="copy", statement=f"{devries.title}. {devries.summary}", modules={"augment": "template:cutout size=2"}
    )

    class Lenient(OfflineRoles):
        def propose(self, ctx: Context) -> tuple[Proposal, Spoken]:
            return Proposal(objective="o", hypotheses=[copy, LIBRARY[1]]), Spoken("p")

        def review(self, ctx, proposal, report, novelty):  # type: ignore[no-untyped-def]
            keep = [Verdict(hypothesis=h.id, decision="keep") for h in proposal.hypotheses]
            return Critique(verdicts=keep), Spoken("all fine")

        def revise(self, ctx: Context, proposal: Proposal, critique: Critique) -> tuple[Proposal, Spoken]:
            return proposal, Spoken("no change")

    verdict = judge([copy], ctx.papers)[0]
    assert verdict.nearest[0].key == "devries2017improved" and verdict.nearest[0].score >= TOO_CLOSE
    plan, _ = run_session(ctx, Lenient(), lambda turn: None)
    assert [h.id for h in plan.hypotheses] == [LIBRARY[1].id]


def test_citations_of_papers_not_retrieved_are_removed() -> None:
    ctx = _context()
    invented = LIBRARY[0].model_copy(update={"citations": ["made2024up", ctx.papers[0].key]})

    class Inventive(OfflineRoles):
        def propose(self, ctx: Context) -> tuple[Proposal, Spoken]:
            return Proposal(objective="o", hypotheses=[invented]), Spoken("p", cited=["made2024up"])

    turns: list[SessionTurn] = []
    plan, _ = run_session(ctx, Inventive(), turns.append)
    assert plan.hypotheses[0].citations == [ctx.papers[0].key]
    assert "made2024up" not in turns[0].cited


def test_memory_appends_once_per_run_and_hypothesis_and_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "memory.jsonl"
    assert record_findings(path, [_refutation("a"), _refutation("b")]) == 2
    assert record_findings(path, [_refutation("a")]) == 0
    path.write_text(path.read_text() + "not json\n")
    findings = read_memory(path)
    assert [f.hypothesis for f in findings] == ["a", "b"]
    later = _refutation("a").model_copy(update={"run_id": "new", "verdict": "supported"})
    record_findings(path, [later])
    assert set(refuted(read_memory(path), "digits")) == {"b"}


def test_the_pilot_pools_measured_runs_with_the_task_prior() -> None:
    task = load_task("digits")
    prior = task.prior_for(1.0)
    assert prior is not None
    alone = pilot_for(task, "digits", [])
    assert alone.baseline_sd == prior.baseline_sd and alone.source.startswith("pooled over the task's prior")
    lucky = _refutation("a").model_copy(update={"baseline_sd": 0.002, "pair_s": 12.0, "run_id": "r9"})
    pilot = pilot_for(task, "digits", [lucky])
    assert pilot.baseline_sd == pytest.approx(((0.002**2 + prior.baseline_sd**2) / 2) ** 0.5)
    assert pilot.pair_s == 12.0 and pilot.source.startswith("pooled over 1 run(s) in the findings memory")
    assert pilot_for(task, "mnist", [lucky]).baseline_sd == prior.baseline_sd


def test_the_prior_is_the_one_measured_nearest_the_train_fraction() -> None:
    task = load_task("digits")
    full, low = task.prior_for(1.0), task.prior_for(0.1)
    assert full is not None and low is not None and full.train_fraction == 1.0 and low.train_fraction == 0.1
    assert task.prior_for(0.05) == low and task.prior_for(0.6) == full
    assert pilot_for(task, "digits", [], 0.1).baseline_sd == low.baseline_sd


def test_a_refutation_without_a_recorded_effect_still_drops_the_idea() -> None:
    ctx = _context([_refutation("noise-bnmlp").model_copy(update={"effect": None})])
    again = next(h for h in LIBRARY if h.id == "noise-bnmlp")

    class Stubborn(OfflineRoles):
        def propose(self, ctx: Context) -> tuple[Proposal, Spoken]:
            return Proposal(objective="o", hypotheses=[again, LIBRARY[1]]), Spoken("p")

    turns: list[SessionTurn] = []
    plan, _ = run_session(ctx, Stubborn(), turns.append)
    assert "noise-bnmlp" not in [h.id for h in plan.hypotheses]
    assert "effect not recorded" in json.dumps(turns[2].data)
