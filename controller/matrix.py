"""The experiment matrix as pure functions: expand a hypothesis into arms, shrink to a budget.

Expansion is deterministic: baseline, novelty, one ablation per novelty component, the
systematic-dimension arms, each crossed with the plan's variants (the first value of each
variant is the reference, so the plain arm is not repeated), duplicates (same key) dropped.
Effects (guarding a suite's modules, running a sweep) happen before, in the loop; their
results come in as data.
"""

from __future__ import annotations

import itertools

from controller.plan import DIMENSION_VALUES, Arm, Hyper, Hypothesis, Matrix, ModuleCode, Value
from controller.tasks import Task


def task_defaults(task: Task) -> Hyper:
    """The task's scalar hyperparameter defaults."""
    return {k: v for k, v in task.defaults.items() if isinstance(v, int | float | str) and not isinstance(v, bool)}


def baseline_modules(task: Task) -> dict[str, ModuleCode]:
    return {s: ModuleCode(slot=s, code=task.baseline_code(s), origin="baseline") for s in task.slots}


def baseline_arm(task: Task) -> Arm:
    return Arm(name="baseline", modules=baseline_modules(task), hyper=task_defaults(task))


def novelty_arm(task: Task, hypothesis: Hypothesis, modules: dict[str, ModuleCode], hyper: Hyper | None = None) -> Arm:
    """The hypothesis's arm: its modules over the baseline's, its hyperparameters over the defaults."""
    chosen = hyper if hyper is not None else {**task_defaults(task), **hypothesis.hyper}
    return Arm(name=f"novelty:{hypothesis.id}", modules={**baseline_modules(task), **modules}, hyper=chosen)


def tag(point: dict[str, Value]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(point.items()))


def grid_points(grid: dict[str, list[Value]]) -> list[dict[str, Value]]:
    """Every combination of a grid, in a fixed order."""
    keys = sorted(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(grid[k] for k in keys))]


def expand(
    task: Task,
    hypothesis: Hypothesis,
    novelty: Arm,
    matrix: Matrix,
    suites: dict[str, dict[str, ModuleCode]] | None = None,
) -> list[Arm]:
    """The iteration's arms. `suites`: per slot dimension, the suite modules that passed the guard."""
    baseline = baseline_arm(task)
    defaults = task_defaults(task)
    core = [baseline, novelty]
    for component in hypothesis.components():
        kind, _, name = component.partition(":")
        if kind == "module":
            modules, hyper = {**novelty.modules, name: baseline.modules[name]}, novelty.hyper
        else:
            modules, hyper = novelty.modules, {**novelty.hyper, name: defaults[name]}
        core.append(Arm(name=hypothesis.ablation_arm(component), modules=modules, hyper=hyper))
    for dimension in matrix.ablate:
        if dimension in DIMENSION_VALUES:
            core += [
                Arm(
                    name=f"ablation:{hypothesis.id}-{dimension}={value}",
                    modules=novelty.modules,
                    hyper={**novelty.hyper, dimension: value},
                )
                for value in DIMENSION_VALUES[dimension][1:]
            ]
            continue
        for name, module in (suites or {}).get(dimension, {}).items():
            core.append(
                Arm(
                    name=f"ablation:{hypothesis.id}-{dimension}={name}",
                    modules={**novelty.modules, dimension: module},
                    hyper=novelty.hyper,
                )
            )
    crossed = list(core)
    references = {k: values[0] for k, values in matrix.variants.items()}
    for point in grid_points(matrix.variants):
        if point == references:
            continue  # the reference combination is the plain arm itself
        crossed += [
            Arm(name=f"{arm.name}@{tag(point)}", modules=arm.modules, hyper={**arm.hyper, **point}) for arm in core
        ]
    arms: list[Arm] = []
    seen: set[str] = set()
    for arm in crossed:
        if arm.key not in seen:
            seen.add(arm.key)
            arms.append(arm)
    return arms


def shrink_to_budget(
    arms: list[Arm], jobs_left: dict[str, int], per_job_s: float, available_s: float, parallel: int
) -> tuple[list[Arm], list[str], float]:
    """Drop arms, last first, until the unfinished jobs fit; never baseline or novelty, never seeds.

    `jobs_left` is, per arm key, how many of its seeds still need a train+evaluate pair.
    Returns the arms kept, the names dropped, and the estimate for the full matrix.
    """

    def cost(candidate: list[Arm]) -> float:
        return sum(jobs_left.get(arm.key, 0) for arm in candidate) * per_job_s / max(parallel, 1)

    kept = list(arms)
    dropped: list[str] = []
    while cost(kept) > available_s and len(kept) > 2:
        dropped.append(kept.pop().name)
    return kept, dropped, cost(arms)
