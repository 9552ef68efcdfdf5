"""The planning session: PI proposes, Engineer checks, Reviewer critiques, PI revises.

The roles speak (templates offline, a model with --agent llm); this module holds the rules
no voice can talk its way around: citations must name retrieved papers, an idea too close
to a paper is dropped with the paper cited, a hypothesis the findings memory records as
refuted is dropped unless the PI says why it should be retested, and every power and cost
figure is the Engineer's arithmetic (controller.research.engineer), not a model's.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from controller.errors import ControllerError
from controller.plan import DIMENSION_VALUES, Hypothesis, Matrix, Plan, StoppingRules
from controller.research import engineer
from controller.research.memory import refuted
from controller.research.novelty import NoveltyVerdict, judge
from controller.research.session import (
    Context,
    Critique,
    EngineerReport,
    Proposal,
    Roles,
    SessionTurn,
    Spoken,
    Verdict,
)

log = structlog.get_logger("sandlab.planning")
MAX_HYPOTHESES = 5


class PlanningError(ControllerError):
    """The session ended with nothing to test."""


def admit(ctx: Context, proposal: Proposal) -> Proposal:
    """Citations limited to retrieved papers, ids unique, at most MAX_HYPOTHESES."""
    keys = ctx.keys
    seen: set[str] = set()
    hypotheses: list[Hypothesis] = []
    for hypothesis in proposal.hypotheses:
        if hypothesis.id in seen or len(hypotheses) >= MAX_HYPOTHESES:
            continue
        seen.add(hypothesis.id)
        hypotheses.append(hypothesis.model_copy(update={"citations": [c for c in hypothesis.citations if c in keys]}))
    rationale = proposal.rationale.model_copy(
        update={
            "baseline_citations": [c for c in proposal.rationale.baseline_citations if c in keys],
            "dataset_citations": [c for c in proposal.rationale.dataset_citations if c in keys],
        }
    )
    return proposal.model_copy(update={"hypotheses": hypotheses, "rationale": rationale})


def checked_matrix(ctx: Context, matrix: Matrix) -> Matrix:
    """The Engineer's matrix with unknown ablation dimensions and sweep keys removed."""
    known = {*DIMENSION_VALUES, *(slot for slot, spec in ctx.task.slots.items() if spec.suite)}
    numeric = {k for k, v in ctx.task.defaults.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    return Matrix(
        variants={},
        ablate=[d for d in matrix.ablate if d in known],
        sweep={k: v[:4] for k, v in matrix.sweep.items() if k in numeric and v},
    )


def enforce(ctx: Context, proposal: Proposal, critique: Critique, novelty: list[NoveltyVerdict]) -> Critique:
    """The Reviewer's verdicts plus the rules that always hold (drops override keeps)."""
    refuted_before = refuted(ctx.memory, ctx.task.name)
    by_idea = {v.idea: v for v in novelty}
    verdicts = []
    for hypothesis in proposal.hypotheses:
        given = critique.decision(hypothesis.id) or Verdict(hypothesis=hypothesis.id, decision="keep")
        decision, reasons, cited = given.decision, [], list(given.cited)
        close = by_idea.get(hypothesis.id)
        if close is not None and close.verdict == "too_close" and close.cited:
            decision = "drop"
            reasons.append(f"too close to [{close.cited}] (cosine {close.nearest[0].score:.2f} >= {close.threshold})")
            cited.append(close.cited)
        prior = refuted_before.get(hypothesis.id)
        if prior is not None and not hypothesis.retest_reason.strip():
            decision = "drop"
            effect = f"{prior.effect:+.4f}" if prior.effect is not None else "not recorded"
            reasons.append(
                f"refuted in run {prior.run_id} (effect {effect}, {prior.power or 'the CI ruled the claim out'}) "
                "and no reason to retest it was given"
            )
        if not hypothesis.modules and not hypothesis.hyper:
            decision = "drop"
            reasons.append("changes no slot and no hyperparameter of the task")
        reasons += given.reasons  # the rules that always hold first, then the Reviewer's own
        verdicts.append(Verdict(hypothesis=hypothesis.id, decision=decision, reasons=reasons, cited=cited))
    return Critique(verdicts=verdicts, summary=critique.summary)


def stopping_text(hypothesis: Hypothesis, check: engineer.EngineeringCheck, n: int, rules: StoppingRules) -> str:
    verdict = "refuted" if check.power.adequate else "reported as underpowered, not as evidence of no effect"
    return (
        f"tested once, in its own iteration, over the run's {n} seeds; supported only if the mean gains at least "
        f"{hypothesis.success_threshold} and the Holm-corrected Welch p < 0.05, otherwise {verdict}. The run stops "
        f"after {rules.max_iterations} iterations, {rules.patience} in a row without support, or at the budget."
    )


def run_session(ctx: Context, roles: Roles, record: Callable[[SessionTurn], None]) -> tuple[Plan, list[NoveltyVerdict]]:
    """Run the rounds, logging every turn through `record`; returns the plan and novelty verdicts."""

    def say(round_: int, role: str, spoken: Spoken, hypotheses: list[str], data: dict[str, object]) -> None:
        turn = SessionTurn.model_validate(
            {
                "round": round_,
                "role": role,
                "content": spoken.content,
                "cited": [c for c in dict.fromkeys(spoken.cited) if c in ctx.keys],
                "hypotheses": hypotheses,
                "tokens": spoken.tokens,
                "cost_usd": spoken.cost_usd,
                "origin": spoken.origin,
                "data": data,
            }
        )
        record(turn)

    proposal, spoken = roles.propose(ctx)
    proposal = admit(ctx, proposal)
    say(1, "pi", spoken, [h.id for h in proposal.hypotheses], proposal.model_dump(mode="json"))
    novelty: list[NoveltyVerdict] = []
    checks: dict[str, engineer.EngineeringCheck] = {}
    matrix = Matrix()
    critique = Critique(verdicts=[])
    for round_ in range(1, max(ctx.rounds, 1) + 1):
        verdicts = judge(proposal.hypotheses, ctx.papers)
        novelty += verdicts
        share = ctx.budget_s / max(len(proposal.hypotheses), 1)
        found = [
            engineer.check(h, ctx.task, ctx.pilot, seeds=ctx.seeds, iteration_s=share, parallel=ctx.parallel)
            for h in proposal.hypotheses
        ]
        checks.update({c.hypothesis: c for c in found})
        matrix, spoken = roles.engineer(ctx, proposal, found)
        matrix = checked_matrix(ctx, matrix)
        report = EngineerReport(checks=found, matrix=matrix, note=spoken.content)
        say(round_, "engineer", spoken, [c.hypothesis for c in found], report.model_dump(mode="json"))
        critique, spoken = roles.review(ctx, proposal, report, verdicts)
        critique = enforce(ctx, proposal, critique, verdicts)
        spoken.cited += [c for v in critique.verdicts for c in v.cited]
        say(round_, "reviewer", spoken, [v.hypothesis for v in critique.verdicts], critique.model_dump(mode="json"))
        if critique.approved or round_ == ctx.rounds:
            break
        proposal, spoken = roles.revise(ctx, proposal, critique)
        proposal = admit(ctx, proposal)
        say(round_ + 1, "pi", spoken, [h.id for h in proposal.hypotheses], proposal.model_dump(mode="json"))
    kept = [h for h in proposal.hypotheses if (v := critique.decision(h.id)) is None or v.decision != "drop"]
    if not kept:
        reasons = "; ".join(f"{v.hypothesis}: {', '.join(v.reasons)}" for v in critique.verdicts)
        msg = f"the planning session kept no hypothesis ({reasons or 'none proposed'}); give another --topic or --idea"
        raise PlanningError(msg)
    rules = StoppingRules(max_iterations=max(6, len(kept) + 1), patience=3)
    final = []
    for hypothesis in kept:
        check = checks[hypothesis.id]
        final.append(
            hypothesis.model_copy(
                update={
                    "expected_effect": check.power.effect,
                    "seeds_needed": check.power.seeds_needed,
                    "power": check.note,
                    "stopping": stopping_text(hypothesis, check, ctx.seeds, rules),
                }
            )
        )
    plan = Plan(
        task=ctx.task.name,
        objective=proposal.objective,
        topic=ctx.topic,
        rationale=proposal.rationale,
        hypotheses=final,
        stopping=rules,
        seeds=list(range(ctx.seeds)),
        matrix=matrix,
    )
    log.info("planning.done", hypotheses=[h.id for h in final], rounds=round_)
    return plan, novelty
