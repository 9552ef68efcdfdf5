"""The interface every agent implements. The loop only talks to this."""

from __future__ import annotations

from abc import ABC, abstractmethod

from pydantic import BaseModel, ConfigDict, Field

from controller.plan import Hypothesis, ModuleCode, Plan, Review
from controller.tasks import Task

TRIM_CHARS = 4000
"""How much of a log the agent sees (head and tail); the full text stays on disk."""


def trim(text: str, limit: int = TRIM_CHARS) -> str:
    """Head and tail of a long text, saying how much was cut (for prompts only)."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[... {len(text) - limit} characters cut ...]\n{text[-half:]}"


class GuardFailure(BaseModel):
    """What the repair step shows the agent: the structured exception and trimmed logs."""

    model_config = ConfigDict(extra="forbid")

    stage: str
    """compile, import or smoke: the harness stage that failed."""
    exception_type: str = ""
    message: str = ""
    traceback: str = ""
    """Frames rendered as text; generated-file frames marked with '>'."""
    stderr_tail: str = ""
    status: str = "error"


class IterationOutcome(BaseModel):
    """One iteration's results, as the agent sees them to refine the plan."""

    model_config = ConfigDict(extra="forbid")

    iteration: int
    hypothesis: Hypothesis
    supported: bool
    arm_means: dict[str, float] = Field(default_factory=dict)
    """Host-scored validation mean per arm name."""
    baseline_mean: float | None = None
    p_holm: dict[str, float | None] = Field(default_factory=dict)
    """Per arm: Welch's p against the baseline, Holm-corrected over the iteration's arms."""
    notes: list[str] = Field(default_factory=list)
    power: str = ""
    """The power statement the iteration ran under (controller.sizing)."""
    adequate: bool | None = None
    """Whether, by the sizing before it ran, its seeds could detect the claimed effect."""
    excluded: bool | None = None
    """For a hypothesis not supported: whether the CI of its difference rules out the claimed
    effect (refuted). False: the data still hold the claim; no evidence either way."""
    seeds: int | None = None
    attribution: dict[str, str] = Field(default_factory=dict)
    """For a supported hypothesis: component -> carries / needed by the rest / not needed / unclear / not ablated."""

    @property
    def verdict(self) -> str:
        if f"novelty:{self.hypothesis.id}" not in self.arm_means:
            return "untested (no novelty seed was scored)"
        return verdict_of(self.supported, self.excluded)


def verdict_of(supported: bool, excluded: bool | None) -> str:
    """The words for an iteration's verdict: a null result says whether it rules the claim out."""
    if supported:
        return "supported"
    if excluded:
        return "not supported: the claimed effect is ruled out (refuted)"
    if excluded is None:
        return "not supported"
    return "not supported, inconclusive: the CI still holds the claimed effect (no evidence either way)"


class Agent(ABC):
    """Plans hypotheses, writes and repairs modules, and refines the plan from results."""

    name: str = "abstract"

    @abstractmethod
    def plan(self, task: Task, seeds: list[int]) -> Plan:
        """The initial plan: hypotheses with metric, threshold and stopping rule."""

    @abstractmethod
    def write_module(self, task: Task, slot: str, hypothesis: Hypothesis) -> ModuleCode:
        """Source for one slot of a hypothesis."""

    @abstractmethod
    def repair(
        self,
        task: Task,
        slot: str,
        hypothesis: Hypothesis,
        module: ModuleCode,
        failure: GuardFailure,
        last_good: ModuleCode,
    ) -> ModuleCode:
        """A fixed module, given the failure; may return `last_good` (a rollback)."""

    @abstractmethod
    def refine(self, task: Task, plan: Plan, history: list[IterationOutcome]) -> Hypothesis | None:
        """The next hypothesis, planned from the results so far; None when out of ideas."""

    @abstractmethod
    def review(self, task: Task, outcome: IterationOutcome) -> Review:
        """A short reading of one iteration for the report."""
