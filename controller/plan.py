"""The records the agent and the loop exchange: plans, hypotheses, arms, modules, reviews."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

Value = float | int | str
Hyper = dict[str, Value]
RESERVED_HYPER = frozenset(
    {"holdout_fraction", "seed", "data_dir", "threads", "models", "input_shape", "num_classes", "mean", "std"}
)
"""Job settings the loop owns: what data a job sees and how it is checked. A hypothesis
that set `holdout_fraction: 0` would train its novelty on the baseline's holdout and switch
off the check of its telemetry; none of these is a hyperparameter to test."""


def check_hyper(hyper: Hyper) -> Hyper:
    """Raise ValueError naming any reserved key."""
    if reserved := sorted(RESERVED_HYPER & hyper.keys()):
        msg = f"hyper may not set {', '.join(reserved)}: the loop owns them (what data a job sees, how it is checked)"
        raise ValueError(msg)
    return hyper


AblationDimension = str
"""optimizer, scheduler, or a task slot with a suite of alternatives (augment, head)."""
DIMENSION_VALUES: dict[str, tuple[str, ...]] = {
    "optimizer": ("adam", "sgd", "adamw"),
    "scheduler": ("none", "cosine", "step"),
}
"""Values of each systematic ablation dimension; the first is the reference."""


class Hypothesis(BaseModel):
    """One testable idea and its success threshold.

    The metric is the task's and the stopping rules are the plan's: a per-hypothesis metric
    or free-text stopping rule that nothing enforced is not part of the model (older plan
    files that carry them still load; the keys are dropped).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _drop_unenforced_legacy_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if k not in {"metric", "stopping_rule"}}
        return data

    id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_\-]{0,47}$")]
    statement: str
    """What is claimed, in a sentence."""
    modules: dict[str, str] = Field(default_factory=dict)
    """slot -> description of the module to write for it (the novelty's code components)."""
    hyper: Annotated[Hyper, AfterValidator(check_hyper)] = Field(default_factory=dict)
    """Hyperparameter changes (lr, width, epochs ...) relative to the task defaults."""
    success_threshold: float = 0.005
    """Minimum improvement of the mean over the baseline for the hypothesis to hold (besides
    a Holm-corrected Welch p below 0.05)."""
    citations: list[str] = Field(default_factory=list)
    """Keys of the papers (literature/papers.jsonl) the idea rests on."""
    rationale: str = ""
    expected_effect: float | None = None
    """The improvement the PI claims; what the Engineer's power calculation sizes seeds for."""
    seeds_needed: int | None = None
    """Seeds per arm the power calculation asks for (None: more than it will size)."""
    power: str = ""
    """The Engineer's power statement, e.g. "underpowered: needs n = 7 to detect +1.0 points"."""
    stopping: str = ""
    """How testing this hypothesis ends, as the loop enforces it."""
    retest_reason: str = ""
    """Why an idea the findings memory records as refuted is proposed again."""

    def components(self) -> list[str]:
        """Named parts, each of which gets its own ablation arm."""
        return [f"module:{slot}" for slot in sorted(self.modules)] + [f"hyper:{key}" for key in sorted(self.hyper)]

    def ablation_arm(self, component: str) -> str:
        """The name of the arm that reverts one component ("module:head") to its baseline."""
        return f"ablation:{self.id}-no-{component.partition(':')[2]}"


class StoppingRules(BaseModel):
    """When the whole run stops (besides the budget)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_iterations: int = Field(default=6, ge=1)
    patience: int = Field(default=3, ge=1)
    """Stop after this many iterations in a row without a supported hypothesis."""
    target: float | None = None
    """Stop once the best arm's validation mean reaches this."""

    def reasons(self, iterations: int, supported: list[bool], best: tuple[float, int] | None) -> list[str]:
        """Which of these rules say stop, given the iterations run, their verdicts in order and
        the best arm's (validation mean, seeds)."""
        found = []
        if iterations >= self.max_iterations:
            found.append(f"reached {self.max_iterations} iterations")
        recent = supported[-self.patience :]
        if len(recent) == self.patience and not any(recent):
            found.append(f"{self.patience} iterations without a supported hypothesis")
        if self.target is not None and best is not None and best[0] >= self.target:
            found.append(f"target {self.target} reached (validation mean over {best[1]} seeds)")
        return found


class Matrix(BaseModel):
    """The experiment matrix, declared in the plan and expanded deterministically.

    Every arm (baseline, novelty, ablations) is crossed with `variants`; `ablate` adds arms
    that vary one systematic dimension of the novelty; `sweep` tries values of the novelty
    on one seed first and keeps the best by host-scored validation. All of it times seeds.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    variants: dict[str, list[Value]] = Field(default_factory=dict)
    """e.g. {"arch": ["cnn", "resnet18"], "lr": [0.003, 0.006], "input_size": [0, 16]}; the first value of
    each list is the reference, so the plain arm is not repeated."""
    ablate: list[AblationDimension] = Field(default_factory=list)
    """Systematic ablation dimensions: optimizer family, scheduler, and slots with a suite
    (the digits task: augment = augmentation suite, head)."""
    sweep: dict[str, list[Value]] = Field(default_factory=dict)
    """Small sweep with automatic selection, e.g. {"lr": [0.001, 0.003, 0.01]}."""


class Rationale(BaseModel):
    """Why these baselines and this dataset, with the papers that say so."""

    model_config = ConfigDict(extra="forbid")

    baselines: str = ""
    baseline_citations: list[str] = Field(default_factory=list)
    datasets: str = ""
    dataset_citations: list[str] = Field(default_factory=list)


class Plan(BaseModel):
    """plan.json: hypotheses, success criteria and stopping rules."""

    model_config = ConfigDict(extra="forbid")

    task: str
    objective: str
    topic: str = ""
    rationale: Rationale | None = None
    hypotheses: list[Hypothesis]
    success_criteria: str = (
        "a hypothesis is supported when its mean over every seed improves on the baseline by at "
        "least its threshold and Welch's test, Holm-corrected over the iteration's arms, gives "
        "p < 0.05 (host-scored validation, suspect attempts excluded)"
    )
    stopping: StoppingRules = Field(default_factory=StoppingRules)
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    matrix: Matrix = Field(default_factory=Matrix)


class ModuleCode(BaseModel):
    """Source for one slot."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    slot: str
    code: str
    origin: str = "agent"
    """agent, repair, baseline or rollback."""
    tests: str = ""
    """The agent's own pytest file for the module (optional): the guard runs it after the
    trusted smoke check passed. It never reaches training, so it is not part of `digest`."""

    @property
    def digest(self) -> str:
        """Short content hash: the module's identity in arms and registry keys."""
        return hashlib.sha256(self.code.encode()).hexdigest()[:12]

    @property
    def guard_digest(self) -> str:
        """What the guard checked: the code, and the tests when there are any."""
        if not self.tests:
            return self.digest
        return hashlib.sha256(self.code.encode() + b"\0" + self.tests.encode()).hexdigest()[:12]


class Arm(BaseModel):
    """One configuration to train over seeds: modules per slot plus hyperparameters."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    """baseline, novelty:<hyp>, or ablation:<hyp>-<component>."""
    modules: dict[str, ModuleCode]
    hyper: Hyper

    @property
    def key(self) -> str:
        """Identity of the configuration, independent of its name."""
        payload = {
            "modules": {s: m.digest for s, m in sorted(self.modules.items())},
            "hyper": dict(sorted(self.hyper.items())),
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


class Review(BaseModel):
    """The agent's reading of an iteration's results."""

    model_config = ConfigDict(extra="forbid")

    summary: str
    next_idea: str = ""
