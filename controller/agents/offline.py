"""OfflineAgent: the embedded default, a deterministic template policy that needs no LLM.

Its ideas come from a fixed library of templates (jinja2, in controller/templates/, one
family per slot: augmentations, heads, models, losses, optimisers, schedules, samplers and
training epochs) plus learning-rate and width tweaks. It repairs by rolling back to
the last module of the slot that passed the guard. Given the same results it makes the
same decisions, which is also what makes `controller resume` replay exactly.
"""

from __future__ import annotations

import re

from jinja2 import Environment, PackageLoader, StrictUndefined
from typing_extensions import override

from controller.agents.base import Agent, GuardFailure, IterationOutcome
from controller.plan import Hypothesis, ModuleCode, Plan, Review, StoppingRules
from controller.tasks import Task

_TEMPLATE = re.compile(r"^template:(?P<name>[a-z_]+)(?P<params>(?: [a-z_]+=[0-9.]+)*)$")

# The idea library, in the order the agent tries it. Each module description names a
# template and its parameters; `hyper` tweaks are relative to the task defaults.
LIBRARY: tuple[Hypothesis, ...] = (
    Hypothesis(
        id="shift-mlp",
        statement="Random 1-pixel shifts plus an MLP head (128 hidden, dropout 0.2) raise "
        "validation accuracy over the linear-head baseline.",
        modules={"augment": "template:shift max_shift=1", "head": "template:mlp hidden=128 dropout=0.2"},
    ),
    Hypothesis(
        id="wide-lr",
        statement="A wider trunk (64 channels) with a doubled learning rate learns a better "
        "digit representation in the same epochs.",
        hyper={"width": 64, "lr": 0.006},
    ),
    Hypothesis(
        id="noise-bnmlp",
        statement="Gaussian input noise (sigma 0.1) with a batch-normalised MLP head "
        "regularises the small training set.",
        modules={"augment": "template:noise sigma=0.1", "head": "template:bn_mlp hidden=128"},
    ),
    Hypothesis(
        id="cutout",
        statement="Cutout of a 2x2 patch improves robustness to missing strokes.",
        modules={"augment": "template:cutout size=2"},
    ),
    Hypothesis(
        id="shift-noise-long",
        statement="Shift-and-noise augmentation with more epochs beats the baseline.",
        modules={"augment": "template:shift_noise max_shift=1 sigma=0.05"},
        hyper={"epochs": 20},
    ),
    Hypothesis(
        id="residual-smooth-sgd",
        statement="A residual trunk trained with label smoothing (0.1) and Nesterov SGD "
        "generalises better than the plain CNN under Adam and cross-entropy.",
        modules={
            "model": "template:residual width=32",
            "loss": "template:smooth eps=0.1",
            "optimizer": "template:sgd momentum=0.9 lr_scale=10",
        },
    ),
    Hypothesis(
        id="balanced-cosine",
        statement="Class-balanced sampling with a cosine learning-rate schedule evens out the "
        "classes a small split under-represents.",
        modules={"sampler": "template:balanced", "schedule": "template:cosine floor=0.05"},
    ),
    Hypothesis(
        id="deep-adamw-clip",
        statement="A deeper trunk under AdamW (weight decay 0.05) with gradients clipped to norm 1 "
        "trains more stably than the baseline.",
        modules={
            "model": "template:deep width=32",
            "optimizer": "template:adamw weight_decay=0.05",
            "train_epoch": "template:clip max_norm=1.0",
        },
    ),
)


FOLLOW_UPS: tuple[tuple[str, dict[str, str], dict[str, float | int | str], str], ...] = (
    ("smooth", {"loss": "template:smooth eps=0.1"}, {}, "label smoothing (0.1) in the loss adds to it"),
    ("w64", {}, {"width": 64}, "a 64-channel trunk adds to it"),
)
"""What the agent adds to its latest supported hypothesis, in order, when that part is untouched."""


class OfflineAgent(Agent):
    """Deterministic templates; no network, no cost."""

    name = "offline"

    def __init__(self) -> None:
        self._env = Environment(
            loader=PackageLoader("controller", "templates"),
            undefined=StrictUndefined,
            keep_trailing_newline=True,
            autoescape=False,  # noqa: S701 - renders Python source, not HTML
        )

    @override
    def plan(self, task: Task, seeds: list[int]) -> Plan:
        return Plan(
            task=task.name,
            objective=f"Improve host-scored validation {task.metric.name} on {task.name} over "
            "the baseline with generated augmentation and head modules.",
            hypotheses=[LIBRARY[0]],
            stopping=StoppingRules(max_iterations=len(LIBRARY) + 1, patience=3),
            seeds=seeds,
        )

    @override
    def write_module(self, task: Task, slot: str, hypothesis: Hypothesis) -> ModuleCode:
        description = hypothesis.modules[slot]
        match = _TEMPLATE.match(description.strip())
        if match is None:
            msg = f"the offline agent cannot write {description!r}; use template:NAME key=value"
            raise ValueError(msg)
        params = dict(p.split("=", 1) for p in match["params"].split())
        code = self._env.get_template(f"{slot}_{match['name']}.py.j2").render(**params)
        return ModuleCode(slot=slot, code=code, origin="agent")

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
        # Templates have no bugs to reason about: the only safe repair is a rollback.
        return ModuleCode(slot=slot, code=last_good.code, origin="rollback")

    @override
    def refine(self, task: Task, plan: Plan, history: list[IterationOutcome]) -> Hypothesis | None:
        tried = {outcome.hypothesis.id for outcome in history}
        supported = [o for o in history if o.supported]
        if supported:
            # Build on the latest success: keep its components, add the next untried tweak.
            base = supported[-1].hypothesis
            for suffix, modules, hyper, clause in FOLLOW_UPS:
                combined_id = f"{base.id[:44]}-{suffix}"
                if combined_id in tried or set(modules) & set(base.modules) or set(hyper) & set(base.hyper):
                    continue
                return Hypothesis(
                    id=combined_id,
                    statement=f"{base.statement.rstrip('.')}; {clause}.",
                    modules={**base.modules, **modules},
                    hyper={**base.hyper, **hyper},
                    success_threshold=base.success_threshold,
                )
        # A plan from the research front-end is followed as written (its dropped ideas stay
        # dropped); the plain offline plan goes on through the library.
        pool = [*plan.hypotheses] if plan.topic else [*plan.hypotheses, *LIBRARY]
        for candidate in pool:
            if candidate.id not in tried:
                return candidate
        return None

    @override
    def review(self, task: Task, outcome: IterationOutcome) -> Review:
        verdict = "supported" if outcome.supported else "not supported"
        means = ", ".join(f"{arm} {mean:.4f}" for arm, mean in outcome.arm_means.items())
        return Review(summary=f"Hypothesis {outcome.hypothesis.id} is {verdict} ({means}).")
