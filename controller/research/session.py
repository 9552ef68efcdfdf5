"""The planning session's records and the roles' interface: PI, Engineer, Reviewer.

planning/session.jsonl holds one SessionTurn per line: who spoke, in which round, what they
said, which papers they cited, which hypotheses it concerns, and what the turn cost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from controller.plan import Hypothesis, Matrix, Rationale
from controller.research.engineer import EngineeringCheck, Pilot
from controller.research.memory import Finding
from controller.research.novelty import NoveltyVerdict
from controller.research.papers import Paper
from controller.research.summarize import PaperSummary
from controller.tasks import Task

Role = Literal["pi", "engineer", "reviewer"]


class SessionTurn(BaseModel):
    """One turn of the planning session."""

    model_config = ConfigDict(extra="forbid")

    round: int
    role: Role
    content: str
    cited: list[str] = Field(default_factory=list)
    """Paper keys the turn cites (only keys of literature/papers.jsonl are kept)."""
    hypotheses: list[str] = Field(default_factory=list)
    tokens: int = 0
    cost_usd: float = 0.0
    origin: Literal["offline", "llm"] = "offline"
    data: dict[str, Any] = Field(default_factory=dict)
    """The turn's structured part (the proposal, the checks, the verdicts)."""


class Proposal(BaseModel):
    """What the PI puts forward (and revises)."""

    model_config = ConfigDict(extra="forbid")

    objective: str
    hypotheses: list[Hypothesis]
    rationale: Rationale = Field(default_factory=Rationale)
    note: str = ""


class Verdict(BaseModel):
    """The Reviewer on one hypothesis."""

    model_config = ConfigDict(extra="forbid")

    hypothesis: str
    decision: Literal["keep", "revise", "drop"]
    reasons: list[str] = Field(default_factory=list)
    cited: list[str] = Field(default_factory=list)


class Critique(BaseModel):
    model_config = ConfigDict(extra="forbid")

    verdicts: list[Verdict]
    summary: str = ""

    @property
    def approved(self) -> bool:
        return all(v.decision == "keep" for v in self.verdicts)

    def decision(self, hypothesis: str) -> Verdict | None:
        return next((v for v in self.verdicts if v.hypothesis == hypothesis), None)


class EngineerReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    checks: list[EngineeringCheck]
    matrix: Matrix = Field(default_factory=Matrix)
    note: str = ""


@dataclass
class Context:
    """What every role sees."""

    topic: str
    idea: str | None
    task: Task
    dataset: str
    papers: list[Paper]
    summaries: dict[str, PaperSummary]
    memory: list[Finding]
    pilot: Pilot
    seeds: int
    budget_s: float
    """Seconds the run has for experiments (after the report reserve)."""
    parallel: int = 1
    rounds: int = 2
    novelty: list[NoveltyVerdict] = field(default_factory=list)

    @property
    def keys(self) -> set[str]:
        return {p.key for p in self.papers}


@dataclass
class Spoken:
    """A role's reply plus what it cost (zero offline)."""

    content: str
    tokens: int = 0
    cost_usd: float = 0.0
    origin: Literal["offline", "llm"] = "offline"
    cited: list[str] = field(default_factory=list)


class Roles(Protocol):
    """The three voices. The session's code enforces the hard rules around them."""

    def propose(self, ctx: Context) -> tuple[Proposal, Spoken]: ...

    def engineer(self, ctx: Context, proposal: Proposal, checks: list[EngineeringCheck]) -> tuple[Matrix, Spoken]: ...

    def review(
        self, ctx: Context, proposal: Proposal, report: EngineerReport, novelty: list[NoveltyVerdict]
    ) -> tuple[Critique, Spoken]: ...

    def revise(self, ctx: Context, proposal: Proposal, critique: Critique) -> tuple[Proposal, Spoken]: ...
