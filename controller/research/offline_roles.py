"""The offline session: the same three roles, deterministic, over the corpus and the idea bank.

The PI ranks the offline agent's idea bank by TF-IDF similarity to the topic (and the seed
idea), skips what the findings memory refuted, proposes the best few with the papers each
rests on, and replaces what the Reviewer drops. The Engineer reads out the computed checks.
The Reviewer adds soft remarks (no citation, underpowered) to the session's hard rules.
"""

from __future__ import annotations

from controller.agents.offline import LIBRARY
from controller.plan import Hypothesis, Matrix, Rationale
from controller.research.engineer import EngineeringCheck
from controller.research.memory import refuted
from controller.research.novelty import NoveltyVerdict, idea_text
from controller.research.session import Context, Critique, EngineerReport, Proposal, Spoken, Verdict
from controller.research.text import similarity

PROPOSED = 3
"""Hypotheses the PI puts forward at once."""
CITE_MIN = 0.05
"""Cosine under which a paper is not cited for an idea."""
CITED_PER_IDEA = 2
EXPECTED_EFFECT = 0.01
"""The offline PI claims one accuracy point for every idea (its templates know no better)."""


def _paper_docs(ctx: Context) -> list[str]:
    return [" ".join(filter(None, [p.title, p.abstract, p.summary, " ".join(p.tags)])) for p in ctx.papers]


def _cite(ctx: Context, queries: list[str], per: int = CITED_PER_IDEA) -> list[list[str]]:
    if not ctx.papers:
        return [[] for _ in queries]
    rows = similarity(queries, _paper_docs(ctx))
    cited = []
    for row in rows:
        ranked = sorted(range(len(row)), key=lambda j: (-row[j], j))
        cited.append([ctx.papers[j].key for j in ranked[:per] if row[j] >= CITE_MIN])
    return cited


class OfflineRoles:
    """Template reasoning; no network, no cost; the same inputs give the same session."""

    def __init__(self) -> None:
        self.proposed: set[str] = set()

    def _candidates(self, ctx: Context) -> tuple[list[Hypothesis], list[str]]:
        """The bank, best match to the topic first, minus what memory refuted."""
        query = " ".join(filter(None, [ctx.topic, ctx.idea]))
        scores = similarity([query], [idea_text(h) for h in LIBRARY])[0]
        ranked = [LIBRARY[i] for i in sorted(range(len(LIBRARY)), key=lambda i: (-scores[i], i))]
        gone = refuted(ctx.memory, ctx.task.name)
        notes = [f"- not proposing `{h.id}`: refuted in run {gone[h.id].run_id}" for h in ranked if h.id in gone]
        return [h for h in ranked if h.id not in gone], notes

    def _grounded(self, ctx: Context, hypotheses: list[Hypothesis]) -> list[Hypothesis]:
        citations = _cite(ctx, [idea_text(h) for h in hypotheses])
        out = []
        for hypothesis, keys in zip(hypotheses, citations, strict=True):
            titles = {p.key: p.title for p in ctx.papers}
            basis = "; ".join(f"[{k}] {titles[k]}" for k in keys) or "no retrieved paper addresses it directly"
            out.append(
                hypothesis.model_copy(
                    update={
                        "citations": keys,
                        "rationale": f"Builds on {basis}. Claimed effect: +{EXPECTED_EFFECT * 100:.0f} point.",
                        "expected_effect": EXPECTED_EFFECT,
                    }
                )
            )
        return out

    def _rationale(self, ctx: Context) -> Rationale:
        baseline_q = "convolutional neural network trained with gradient descent baseline for image classification"
        dataset_q = f"{ctx.task.description} handwritten digit recognition dataset"
        baseline, dataset = _cite(ctx, [baseline_q, dataset_q])
        return Rationale(
            baselines=(
                "Every arm is compared with the task's trusted baseline (its small convolutional trunk, linear head "
                "and default optimiser), trained on the same seeds: the standard reference for a small image task."
            ),
            baseline_citations=baseline,
            datasets=f"The run uses the {ctx.dataset} dataset of task {ctx.task.name}: {ctx.task.description}",
            dataset_citations=dataset,
        )

    def propose(self, ctx: Context) -> tuple[Proposal, Spoken]:
        candidates, notes = self._candidates(ctx)
        chosen = self._grounded(ctx, candidates[:PROPOSED])
        self.proposed.update(h.id for h in chosen)
        lines = [f"Topic: {ctx.topic}."]
        if ctx.idea:
            lines.append(f"Seed idea considered: {ctx.idea.strip().splitlines()[0][:200]}")
        lines += [f"- `{h.id}`: {h.statement} {h.rationale}" for h in chosen]
        lines += notes
        proposal = Proposal(
            objective=f"{ctx.topic}: improve host-scored validation {ctx.task.metric.name} on {ctx.task.name}.",
            hypotheses=chosen,
            rationale=self._rationale(ctx),
        )
        cited = [k for h in chosen for k in h.citations]
        return proposal, Spoken("\n".join(lines), cited=cited)

    def engineer(self, ctx: Context, proposal: Proposal, checks: list[EngineeringCheck]) -> tuple[Matrix, Spoken]:
        lines = [
            f"Pilot: baseline sd {ctx.pilot.baseline_sd:.4f}, {ctx.pilot.pair_s:.0f}s per pair ({ctx.pilot.source})."
        ]
        lines += [f"- `{c.hypothesis}`: {c.note}" for c in checks]
        return Matrix(), Spoken("\n".join(lines))

    def review(
        self, ctx: Context, proposal: Proposal, report: EngineerReport, novelty: list[NoveltyVerdict]
    ) -> tuple[Critique, Spoken]:
        checks = {c.hypothesis: c for c in report.checks}
        verdicts = []
        for hypothesis in proposal.hypotheses:
            reasons = []
            if not hypothesis.citations:
                reasons.append("no retrieved paper supports it: weakly grounded")
            check = checks.get(hypothesis.id)
            if check is not None and not check.power.adequate:
                reasons.append(f"{check.power.describe()}; a null result must be reported as underpowered")
            verdicts.append(Verdict(hypothesis=hypothesis.id, decision="keep", reasons=reasons))
        lines = [f"- `{v.hypothesis}`: {'; '.join(v.reasons) or 'sound'}" for v in verdicts]
        return Critique(verdicts=verdicts, summary="offline review"), Spoken("\n".join(lines))

    def revise(self, ctx: Context, proposal: Proposal, critique: Critique) -> tuple[Proposal, Spoken]:
        dropped = [v for v in critique.verdicts if v.decision == "drop"]
        kept = [h for h in proposal.hypotheses if all(v.hypothesis != h.id for v in dropped)]
        candidates, _ = self._candidates(ctx)
        fresh = [h for h in candidates if h.id not in self.proposed][: len(dropped)]
        added = self._grounded(ctx, fresh)
        self.proposed.update(h.id for h in added)
        lines = [f"- dropping `{v.hypothesis}`: {'; '.join(v.reasons)}" for v in dropped]
        lines += [f"- adding `{h.id}`: {h.statement} {h.rationale}" for h in added]
        revised = proposal.model_copy(update={"hypotheses": kept + added})
        return revised, Spoken("\n".join(lines) or "no change", cited=[k for h in added for k in h.citations])
