"""LLMAgent: plans, writes, repairs and refines through any OpenAI-compatible chat model.

Every request goes through `LLMClient.complete_structured`, so replies are validated against
the small response schemas below (invalid ones are sent back with the error) and every call
is retried, cached and costed there. The model's answers are then sanitised against the
task: hypothesis ids are made valid and unique, unknown slots and hyperparameters dropped.
Prompts are jinja2 templates in controller/prompts/.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Literal, TypeVar

import structlog
from jinja2 import Environment, PackageLoader, StrictUndefined
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from typing_extensions import override

from controller.agents.base import Agent, GuardFailure, IterationOutcome, trim
from controller.llm import ChatMessage, LLMClient, LLMOutputError, LLMUsage
from controller.plan import Hypothesis, ModuleCode, Plan, Review
from controller.tasks import Task

log = structlog.get_logger(__name__)
Reply = TypeVar("Reply", bound=BaseModel)

MAX_PLAN_HYPOTHESES = 5
MAX_ID_CHARS = 48
HISTORY_SHOWN = 8
"""Iterations shown to `refine`, the latest ones; older ones are counted, not shown."""
CODE_TRIM_CHARS = 12_000
TEXT_TRIM_CHARS = 4_000
MESSAGE_TRIM_CHARS = 1_000
_FENCE = re.compile(r"```[A-Za-z0-9_+-]*[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)
_ID_INVALID = re.compile(r"[^a-z0-9_\-]+")


def strip_fences(code: str) -> str:
    """The code inside the first ``` fence, if there is one; the text itself otherwise."""
    match = _FENCE.search(code)
    body = match.group(1) if match else code
    return body.strip("\n").rstrip() + "\n"


def sanitize_id(raw: str, fallback: str) -> str:
    """A valid Hypothesis id (lowercase, [a-z0-9_-], at most 48 characters) from `raw`."""
    cleaned = _ID_INVALID.sub("-", raw.strip().lower())
    cleaned = re.sub(r"^[^a-z0-9]+", "", cleaned)[:MAX_ID_CHARS].rstrip("-_")
    return cleaned or fallback


def unique_id(candidate: str, taken: set[str]) -> str:
    """`candidate`, or `candidate-N` (still at most 48 characters) when it is taken."""
    if candidate not in taken:
        return candidate
    number = 2
    while True:
        suffix = f"-{number}"
        attempt = candidate[: MAX_ID_CHARS - len(suffix)].rstrip("-_") + suffix
        if attempt not in taken:
            return attempt
        number += 1


# -- response schemas: what the model must return -------------------------------------------


class HypothesisDraft(BaseModel):
    """A hypothesis as the model proposes it, before it is checked against the task."""

    model_config = ConfigDict(extra="ignore")

    id: str
    statement: str = Field(min_length=1)
    modules: dict[str, str] = Field(default_factory=dict)
    """slot -> description of the module to write for it."""
    hyper: dict[str, float | int] = Field(default_factory=dict)
    """hyperparameter -> new value."""
    success_threshold: float = 0.005


class PlanDraft(BaseModel):
    """The initial plan."""

    model_config = ConfigDict(extra="ignore")

    objective: str = Field(min_length=1)
    hypotheses: list[HypothesisDraft] = Field(min_length=1)


class CodeReply(BaseModel):
    """The full source of one module."""

    model_config = ConfigDict(extra="ignore")

    code: str
    tests: str = ""
    """An optional pytest file testing the module's contract (the guard runs it)."""

    @field_validator("code")
    @classmethod
    def _unfenced(cls, value: str) -> str:
        code = strip_fences(value)
        if not code.strip():
            msg = "code is empty"
            raise ValueError(msg)
        return code

    @field_validator("tests")
    @classmethod
    def _unfenced_tests(cls, value: str) -> str:
        return strip_fences(value) if value.strip() else ""


class RefineDecision(BaseModel):
    """Continue with a new hypothesis, or stop."""

    model_config = ConfigDict(extra="ignore")

    decision: Literal["continue", "stop"]
    reason: str = ""
    hypothesis: HypothesisDraft | None = None

    @model_validator(mode="after")
    def _hypothesis_when_continuing(self) -> RefineDecision:
        if self.decision == "continue" and self.hypothesis is None:
            msg = 'decision "continue" needs a "hypothesis"'
            raise ValueError(msg)
        return self


class ReviewDraft(BaseModel):
    """A short reading of one iteration."""

    model_config = ConfigDict(extra="ignore")

    summary: str = Field(min_length=1)
    next_idea: str = ""


# -- the agent ---------------------------------------------------------------------------------


class LLMAgent(Agent):
    """An agent backed by a chat model; `usage` is the client's running LLMUsage."""

    name = "llm"

    def __init__(
        self,
        model: str,
        *,
        cache_dir: Path | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        client: LLMClient | None = None,
        max_repairs: int = 2,
    ) -> None:
        self.client = client or LLMClient(model, base_url=base_url, api_key=api_key, cache_dir=cache_dir)
        self.usage: LLMUsage = self.client.usage
        self.max_repairs = max_repairs
        self._env = Environment(
            loader=PackageLoader("controller", "prompts"),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            autoescape=False,  # noqa: S701 - renders prompts, not HTML
        )

    # -- Agent ----------------------------------------------------------------------------------

    @override
    def plan(self, task: Task, seeds: list[int]) -> Plan:
        draft = self._ask(
            task, "plan.j2", PlanDraft, **self._task_context(task), seeds=seeds, max_hypotheses=MAX_PLAN_HYPOTHESES
        )
        hypotheses: list[Hypothesis] = []
        taken: set[str] = set()
        for index, item in enumerate(draft.hypotheses[:MAX_PLAN_HYPOTHESES], start=1):
            hypothesis = draft_to_hypothesis(task, item, taken, fallback_id=f"h{index}")
            if hypothesis is not None:
                hypotheses.append(hypothesis)
                taken.add(hypothesis.id)
        if not hypotheses:
            msg = (
                f"model {self.client.model} planned no hypothesis that changes a slot or "
                f"hyperparameter of task {task.name}; try a stronger model or --agent offline"
            )
            raise LLMOutputError(msg)
        return Plan(task=task.name, objective=draft.objective.strip(), hypotheses=hypotheses, seeds=seeds)

    @override
    def write_module(self, task: Task, slot: str, hypothesis: Hypothesis) -> ModuleCode:
        spec = task.slots[slot]
        reply = self._ask(
            task,
            "write_module.j2",
            CodeReply,
            slot=slot,
            entry=spec.entry,
            contract=spec.contract,
            hypothesis=hypothesis,
            description=hypothesis.modules.get(slot, hypothesis.statement),
            baseline=trim(task.baseline_code(slot).rstrip(), CODE_TRIM_CHARS),
        )
        return ModuleCode(slot=slot, code=reply.code, origin="agent", tests=reply.tests)

    @override
    def repair(
        self,
        task: Task,
        slot: str,
        hypothesis: Hypothesis,
        module: ModuleCode,
        failure: GuardFailure,
        last_good: ModuleCode,
    ) -> ModuleCode:
        spec = task.slots[slot]
        try:
            reply = self._ask(
                task,
                "repair.j2",
                CodeReply,
                slot=slot,
                entry=spec.entry,
                contract=spec.contract,
                hypothesis=hypothesis,
                description=hypothesis.modules.get(slot, hypothesis.statement),
                code=trim(module.code.rstrip(), CODE_TRIM_CHARS),
                tests=trim(module.tests.rstrip(), CODE_TRIM_CHARS),
                failure=failure,
                message=trim(failure.message, MESSAGE_TRIM_CHARS),
                traceback=trim(failure.traceback, TEXT_TRIM_CHARS),
                stderr_tail=trim(failure.stderr_tail, TEXT_TRIM_CHARS),
            )
        except LLMOutputError as error:
            log.warning("llm_agent.repair_rollback", slot=slot, error=str(error))
            return ModuleCode(slot=slot, code=last_good.code, origin="rollback")
        tests = reply.tests or module.tests  # "" keeps the module's tests
        if reply.code.strip() == module.code.strip() and tests.strip() == module.tests.strip():
            log.warning("llm_agent.repair_unchanged", slot=slot)
            return ModuleCode(slot=slot, code=last_good.code, origin="rollback")
        return ModuleCode(slot=slot, code=reply.code, origin="repair", tests=tests)

    @override
    def refine(self, task: Task, plan: Plan, history: list[IterationOutcome]) -> Hypothesis | None:
        tried = {outcome.hypothesis.id for outcome in history}
        untried = [h for h in plan.hypotheses if h.id not in tried]
        shown = history[-HISTORY_SHOWN:]
        try:
            decision = self._ask(
                task,
                "refine.j2",
                RefineDecision,
                **self._task_context(task),
                plan=plan,
                history=shown,
                omitted=len(history) - len(shown),
                untried=untried,
                tried=sorted(tried) or ["(none)"],
            )
        except LLMOutputError as error:
            log.warning("llm_agent.refine_failed", error=str(error))
            return None
        if decision.decision == "stop" or decision.hypothesis is None:
            log.info("llm_agent.stop", reason=decision.reason)
            return None
        hypothesis = draft_to_hypothesis(task, decision.hypothesis, tried, fallback_id=f"h{len(history) + 1}")
        if hypothesis is None:
            log.warning("llm_agent.refine_empty", proposed=decision.hypothesis.id)
        return hypothesis

    @override
    def review(self, task: Task, outcome: IterationOutcome) -> Review:
        try:
            draft = self._ask(task, "review.j2", ReviewDraft, outcome=outcome)
        except LLMOutputError as error:
            log.warning("llm_agent.review_failed", error=str(error))
            verdict = "supported" if outcome.supported else "not supported"
            return Review(summary=f"Hypothesis {outcome.hypothesis.id} is {verdict} (the model gave no usable review).")
        return Review(summary=draft.summary.strip(), next_idea=draft.next_idea.strip())

    # -- helpers ----------------------------------------------------------------------------------

    def _ask(self, task: Task, template: str, schema: type[Reply], **context: Any) -> Reply:
        messages: list[ChatMessage] = [
            {"role": "system", "content": self._render("system.j2", task=task)},
            {"role": "user", "content": self._render(template, task=task, **context)},
        ]
        return self.client.complete_structured(messages, schema, max_repairs=self.max_repairs)

    def _render(self, template: str, **context: Any) -> str:
        return self._env.get_template(template).render(**context).strip() + "\n"

    @staticmethod
    def _task_context(task: Task) -> dict[str, Any]:
        return {"slots": sorted(task.slots.items()), "hyper_defaults": sorted(_numeric_defaults(task).items())}


def draft_to_hypothesis(task: Task, draft: HypothesisDraft, taken: set[str], *, fallback_id: str) -> Hypothesis | None:
    """The draft checked against the task; None when nothing valid is left to test."""
    modules = {
        slot: text.strip() for slot, text in sorted(draft.modules.items()) if slot in task.slots and text.strip()
    }
    dropped = sorted(set(draft.modules) - set(modules))
    hyper = clamp_hyper(task, draft.hyper)
    dropped += sorted(f"hyper:{key}" for key in set(draft.hyper) - set(hyper))
    if dropped:
        log.info("llm_agent.dropped", hypothesis=draft.id, dropped=dropped)
    if not modules and not hyper:
        return None
    threshold = draft.success_threshold
    if not math.isfinite(threshold) or threshold < 0:
        threshold = 0.0
    return Hypothesis(
        id=unique_id(sanitize_id(draft.id, fallback_id), taken),
        statement=draft.statement.strip(),
        modules=modules,
        hyper=hyper,
        success_threshold=threshold,
    )


def _numeric_defaults(task: Task) -> dict[str, float | int]:
    return {
        key: value
        for key, value in task.defaults.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


def clamp_hyper(task: Task, proposed: dict[str, float | int]) -> dict[str, float | int]:
    """Only the task's numeric hyperparameters, typed like their defaults, and real changes.

    Non-finite values are dropped, as are non-positive values for a positive default, and
    values equal to the default (they would only add a no-op ablation arm).
    """
    defaults = _numeric_defaults(task)
    clamped: dict[str, float | int] = {}
    for key, value in sorted(proposed.items()):
        default = defaults.get(key)
        if default is None or isinstance(value, bool) or not math.isfinite(value):
            continue
        typed: float | int = round(value) if isinstance(default, int) else float(value)
        if (default > 0 and typed <= 0) or typed == default:
            continue
        clamped[key] = typed
    return clamped
