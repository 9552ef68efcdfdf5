"""The run's outputs: aggregates.json, best.json, best_config.json and report/summary.md.

Every number here is host-scored. Arms are compared and the best is chosen on the
validation split (mean over seeds, with its CI); the chosen configuration alone is then
evaluated once on the held-out test split, and that is the number best.json reports.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from controller.budget import AdmissionRefusedError
from controller.errors import BudgetExceededError
from controller.plan import Arm
from controller.registry import write_text_atomic
from controller.stats import ArmStats, compare, summarize
from sandbox.durations import format_duration

if TYPE_CHECKING:
    from controller.loop import ResearchLoop


def choose_best(loop: ResearchLoop) -> tuple[Arm, ArmStats] | None:
    """The arm with the best validation mean over seeds; full seed sets first."""
    higher = loop.task.metric.higher_is_better
    seeds = len(loop.state.config.seeds)
    candidates = [(arm, s) for arm in loop.arms.values() if (s := loop.arm_stats(arm)) is not None]
    if not candidates:
        return None
    full = [c for c in candidates if c[1].n >= seeds] or candidates
    return max(full, key=lambda c: c[1].mean if higher else -c[1].mean)


def aggregates(loop: ResearchLoop) -> dict[str, Any]:
    """Every arm's statistics and its comparison against the baseline."""
    baseline = loop.arms.get("baseline")
    base_stats = loop.arm_stats(baseline) if baseline else None
    arms: dict[str, Any] = {}
    for name, arm in loop.arms.items():
        stats = loop.arm_stats(arm)
        if stats is None:
            continue
        entry: dict[str, Any] = {
            "arm_key": arm.key,
            "hyper": arm.hyper,
            "modules": {slot: m.digest for slot, m in arm.modules.items()},
            "validation": stats.model_dump(),
            "attempts": {str(seed): rec.number for seed, rec in sorted(loop.scores.get(arm.key, {}).items())},
        }
        if base_stats is not None and name != "baseline":
            entry["vs_baseline"] = compare(stats, base_stats).model_dump()
        arms[name] = entry
    return {"metric": loop.task.metric.name, "split": "validation", "scored_by": "host", "arms": arms}


def write_outputs(loop: ResearchLoop) -> None:
    """Write aggregates, best and report; run the single test evaluation if time allows."""
    store, task = loop.store, loop.task
    aggregate = aggregates(loop)
    store.write("aggregates.json", aggregate)
    chosen = choose_best(loop)
    best: dict[str, Any] = {
        "metric": task.metric.name,
        "scored_by": "host",
        "split": "test",
        "selected_on": "validation",
    }
    if chosen is None:
        best.update({"value": None, "reason": "no arm produced a host-scored result"})
    else:
        arm, val_stats = chosen
        records = loop.scores[arm.key]
        best.update(
            {
                "arm": arm.name,
                "arm_key": arm.key,
                "validation": val_stats.model_dump(),
                "attempts": {"train": [], "eval": [r.number for _, r in sorted(records.items())]},
            }
        )
        train_numbers = [loop.index[f"train/{arm.key}/s{seed}"].number for seed in sorted(records)]
        best["attempts"]["train"] = train_numbers
        models = {
            f"s{seed}": store.attempt_dir(n) / "outputs" / "out" / "model.pt"
            for seed, n in zip(sorted(records), train_numbers, strict=True)
        }
        try:
            test = loop.predict_and_score(f"test/{arm.key}", "test", arm, models, "test", final=True)
        except (AdmissionRefusedError, BudgetExceededError) as exc:
            test = None
            best["reason"] = f"test split not evaluated: {exc}"
        if test is not None and test.host_scores:
            values = [test.host_scores[f"s{seed}"] for seed in sorted(records)]
            test_stats = summarize(arm.name, values)
            best.update(
                {
                    "value": test_stats.mean,
                    "test": test_stats.model_dump(),
                    "per_seed": dict(zip([f"s{s}" for s in sorted(records)], values, strict=True)),
                }
            )
            best["attempts"]["test"] = test.number
        else:
            best.setdefault("reason", f"test evaluation failed: {test.reason if test else 'not run'}")
            best["value"] = None
        store.write("best_config.json", best_config(loop, arm))
    store.write("best.json", best)
    write_text_atomic(store.root / "report" / "summary.md", render_summary(loop, aggregate, best))


def best_config(loop: ResearchLoop, arm: Arm) -> dict[str, Any]:
    """Everything needed to rerun the best configuration."""
    modules = {}
    for slot, module in arm.modules.items():
        guard = loop.index.get(f"guard/{slot}/{module.digest}")
        modules[slot] = {
            "digest": module.digest,
            "origin": module.origin,
            "code_path": f"attempts/{guard.number:04d}/code/{slot}.py" if guard else None,
            "code": module.code,
        }
    first_train = loop.index.get(f"train/{arm.key}/s{loop.state.config.seeds[0]}")
    return {
        "task": loop.task.name,
        "dataset": loop.task.name,
        "model": "small-cnn",
        "arm": arm.name,
        "arm_key": arm.key,
        "hyper": arm.hyper,
        "modules": modules,
        "seeds": loop.state.config.seeds,
        "image": first_train.result.image if first_train else None,
        "policies": {"train": loop.ctx.policies.train.name, "evaluate": loop.ctx.policies.evaluate.name},
    }


def render_summary(loop: ResearchLoop, aggregate: dict[str, Any], best: dict[str, Any]) -> str:
    """report/summary.md from its jinja2 template."""
    env = Environment(
        loader=PackageLoader("controller", "templates"),
        undefined=StrictUndefined,
        autoescape=False,  # noqa: S701 - renders Markdown, not HTML
        trim_blocks=True,
        lstrip_blocks=True,
    )
    state = loop.state
    return env.get_template("summary.md.j2").render(
        state=state,
        task=loop.task,
        plan=loop.store.read("plan.json") or {},
        history=loop.history,
        aggregate=aggregate,
        best=best,
        attempts=loop.store.attempts(),
        wall=format_duration(max(state.totals.wall_s, 0.1)),
        budget=format_duration(state.config.budget_s),
        generated=datetime.now(UTC).isoformat(timespec="seconds"),
    )
