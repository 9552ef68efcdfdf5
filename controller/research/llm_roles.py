"""The planning session through a model: each role a prompt and a validated reply schema.

The model writes the words and the choices; the numbers it is shown (power, seeds, cost) are
the Engineer's arithmetic, and whatever it returns is checked again by the session's rules
(controller.research.planning): unknown citations, slots and hyperparameters are dropped.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from controller.agents.llm_agent import HypothesisDraft, draft_to_hypothesis
from controller.plan import Hypothesis, Matrix, Rationale
from controller.research.asker import Asker, Spent
from controller.research.engineer import EngineeringCheck
from controller.research.novelty import NoveltyVerdict
from controller.research.session import Context, Critique, EngineerReport, Proposal, Spoken, Verdict

PAPERS_SHOWN = 20


class ResearchHypothesisDraft(HypothesisDraft):
    citations: list[str] = Field(default_factory=list)
    rationale: str = ""
    expected_effect: float | None = None
    retest_reason: str = ""


class ProposalDraft(BaseModel):
    model_config = ConfigDict(extra="ignore")

    objective: str = Field(min_length=1)
    hypotheses: list[ResearchHypothesisDraft] = Field(min_length=1)
    baseline_rationale: str = ""
    baseline_citations: list[str] = Field(default_factory=list)
    dataset_rationale: str = ""
    dataset_citations: list[str] = Field(default_factory=list)
    note: str = ""


class EngineerDraft(BaseModel):
    model_config = ConfigDict(extra="ignore")

    note: str = Field(min_length=1)
    ablate: list[str] = Field(default_factory=list)
    sweep: dict[str, list[float]] = Field(default_factory=dict)


class VerdictDraft(BaseModel):
    model_config = ConfigDict(extra="ignore")

    hypothesis: str
    decision: Literal["keep", "revise", "drop"]
    reasons: list[str] = Field(default_factory=list)
    cited: list[str] = Field(default_factory=list)


class CritiqueDraft(BaseModel):
    model_config = ConfigDict(extra="ignore")

    summary: str = Field(min_length=1)
    verdicts: list[VerdictDraft] = Field(default_factory=list)


def _spoken(content: str, spent: Spent, cited: list[str] | None = None) -> Spoken:
    return Spoken(content, tokens=spent.tokens, cost_usd=spent.cost_usd, origin="llm", cited=cited or [])


class LLMRoles:
    """PI, Engineer and Reviewer as prompts to one model."""

    def __init__(self, asker: Asker) -> None:
        self.asker = asker

    def _papers(self, ctx: Context) -> list[dict[str, object]]:
        ranked = sorted(ctx.papers, key=lambda p: -(ctx.summaries[p.key].relevance if p.key in ctx.summaries else 0))
        shown: list[dict[str, object]] = []
        for paper in ranked[:PAPERS_SHOWN]:
            summary = ctx.summaries.get(paper.key)
            shown.append(
                {
                    "key": paper.key,
                    "title": paper.title,
                    "year": paper.year,
                    "method": summary.method if summary else "",
                    "result": summary.result if summary else "",
                    "critique": summary.critique if summary else "",
                }
            )
        return shown

    def _proposal(self, ctx: Context, draft: ProposalDraft) -> Proposal:
        taken: set[str] = set()
        hypotheses: list[Hypothesis] = []
        for index, item in enumerate(draft.hypotheses, start=1):
            base = draft_to_hypothesis(ctx.task, item, taken, fallback_id=f"h{index}")
            if base is None:
                continue
            taken.add(base.id)
            effect = item.expected_effect
            hypotheses.append(
                base.model_copy(
                    update={
                        "citations": list(dict.fromkeys(item.citations)),
                        "rationale": item.rationale.strip(),
                        "expected_effect": effect
                        if effect is not None and math.isfinite(effect) and effect > 0
                        else None,
                        "retest_reason": item.retest_reason.strip(),
                    }
                )
            )
        rationale = Rationale(
            baselines=draft.baseline_rationale.strip(),
            baseline_citations=draft.baseline_citations,
            datasets=draft.dataset_rationale.strip(),
            dataset_citations=draft.dataset_citations,
        )
        return Proposal(objective=draft.objective.strip(), hypotheses=hypotheses, rationale=rationale, note=draft.note)

    def _context(self, ctx: Context) -> dict[str, object]:
        slots = sorted(ctx.task.slots.items())
        defaults = sorted(
            (k, v) for k, v in ctx.task.defaults.items() if isinstance(v, int | float) and not isinstance(v, bool)
        )
        memory = [f for f in ctx.memory if f.task == ctx.task.name][-20:]
        return {
            "ctx": ctx,
            "slots": slots,
            "hyper_defaults": defaults,
            "papers": self._papers(ctx),
            "memory": memory,
        }

    @staticmethod
    def _said(proposal: Proposal) -> str:
        return "\n".join(f"- `{h.id}`: {h.statement} {h.rationale}".rstrip() for h in proposal.hypotheses) or "(none)"

    def propose(self, ctx: Context) -> tuple[Proposal, Spoken]:
        draft, spent = self.asker.ask(
            "research_pi.j2", ProposalDraft, **self._context(ctx), critique=None, proposal=None
        )
        proposal = self._proposal(ctx, draft)
        cited = [c for h in proposal.hypotheses for c in h.citations]
        return proposal, _spoken(self._said(proposal), spent, cited)

    def engineer(self, ctx: Context, proposal: Proposal, checks: list[EngineeringCheck]) -> tuple[Matrix, Spoken]:
        draft, spent = self.asker.ask(
            "research_engineer.j2", EngineerDraft, **self._context(ctx), proposal=proposal, checks=checks
        )
        matrix = Matrix(ablate=draft.ablate, sweep={k: list(v) for k, v in draft.sweep.items()})
        facts = "\n".join(f"- `{c.hypothesis}`: {c.note}" for c in checks)
        return matrix, _spoken(f"{draft.note.strip()}\n{facts}", spent)

    def review(
        self, ctx: Context, proposal: Proposal, report: EngineerReport, novelty: list[NoveltyVerdict]
    ) -> tuple[Critique, Spoken]:
        draft, spent = self.asker.ask(
            "research_reviewer.j2",
            CritiqueDraft,
            **self._context(ctx),
            proposal=proposal,
            report=report,
            novelty=novelty,
        )
        ids = {h.id for h in proposal.hypotheses}
        verdicts = [
            Verdict(hypothesis=v.hypothesis, decision=v.decision, reasons=v.reasons, cited=v.cited)
            for v in draft.verdicts
            if v.hypothesis in ids
        ]
        lines = [draft.summary.strip()] + [
            f"- `{v.hypothesis}`: {v.decision}: {'; '.join(v.reasons)}" for v in verdicts
        ]
        return Critique(verdicts=verdicts, summary=draft.summary.strip()), _spoken("\n".join(lines), spent)

    def revise(self, ctx: Context, proposal: Proposal, critique: Critique) -> tuple[Proposal, Spoken]:
        draft, spent = self.asker.ask(
            "research_pi.j2", ProposalDraft, **self._context(ctx), critique=critique, proposal=proposal
        )
        revised = self._proposal(ctx, draft)
        cited = [c for h in revised.hypotheses for c in h.citations]
        return revised, _spoken(self._said(revised), spent, cited)
