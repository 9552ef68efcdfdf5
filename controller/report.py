"""The run's tables: aggregates.json, best.json, best_config.json and report/summary.md.

The report reads a snapshot of results (`Results`) and writes files; it runs no jobs
(controller/outputs.py adds the figures, the paper, its review and the dashboard).
Every number in it is host-scored. Arms are compared on the validation split, one family
per iteration (Holm-corrected Welch tests against the baseline); suspect attempts are
listed and never counted; the best arm is chosen among arms with every seed scored; that
arm alone was evaluated once on the held-out test split, and that is the number best.json
reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from controller.agents.base import IterationOutcome
from controller.llm import LLMClient
from controller.plan import Arm
from controller.registry import AttemptRecord, RunState
from controller.selection import arm_stats, compare_family, counted, eligible, metric_bounds, repeated_seeds
from controller.stats import ArmStats, summarize
from controller.store import RunStore, guard_key, train_key, write_text_atomic
from controller.tasks import Task
from sandbox.durations import format_duration


@dataclass(frozen=True)
class Results:
    """A snapshot of what the run found, for the report."""

    store: RunStore
    state: RunState
    task: Task
    history: list[IterationOutcome]
    arms: dict[str, Arm]
    scores: dict[str, dict[int, AttemptRecord]]
    """arm key -> seed -> the host-scored validation attempt."""
    index: dict[str, AttemptRecord]
    required_seeds: int
    chosen: tuple[Arm, ArmStats] | None
    tests: list[AttemptRecord]
    """The selected arm's test-split attempts, one per seed (none before the end)."""
    note: str
    """Why the test split was not evaluated, if it was not."""
    data_shape: dict[str, Any]
    policies: dict[str, str]
    final: bool = True
    """False for the progress snapshot written after each iteration (no test result yet,
    no LaTeX compile, the dashboard refreshes itself)."""
    llm: LLMClient | None = None
    """The run's LLM client (cached, budgeted) when the agent has one: prose and review."""

    def selectable(self, name: str) -> bool:
        """Whether the arm could be selected: every one of the run's seeds counted."""
        return eligible(self.scores.get(self.arms[name].key, {}), self.state.config.seeds)

    def stats(self) -> dict[str, ArmStats]:
        metric = self.task.metric.name
        return {
            name: s for name, arm in self.arms.items() if (s := arm_stats(name, self.scores.get(arm.key, {}), metric))
        }


def aggregates(results: Results) -> dict[str, Any]:
    """Every arm's statistics; its comparison with the baseline, Holm-corrected per iteration."""
    stats = results.stats()
    comparisons: dict[str, Any] = {}
    for outcome in results.history:
        family = {n: s for n, s in stats.items() if n in outcome.arm_means or n == "baseline"}
        family_p = compare_family(family, "baseline", results.task.metric.higher_is_better)
        comparisons.update({n: c.model_dump() for n, c in family_p.items()})
    arms: dict[str, Any] = {}
    for name, arm in results.arms.items():
        if name not in stats:
            continue
        records = results.scores.get(arm.key, {})
        repeated = repeated_seeds(records)
        entry: dict[str, Any] = {
            "arm_key": arm.key,
            "hyper": arm.hyper,
            "modules": {slot: m.digest for slot, m in arm.modules.items()},
            "validation": stats[name].model_dump(),
            "eligible": eligible(records, results.state.config.seeds),
            "attempts": {str(seed): rec.number for seed, rec in sorted(records.items())},
            "suspect_attempts": [r.number for seed, r in sorted(records.items()) if r.suspect or seed in repeated],
            "repeated_seeds": {str(seed): earlier for seed, earlier in repeated.items()},
        }
        if name in comparisons:
            entry["vs_baseline"] = comparisons[name]
        arms[name] = entry
    return {
        "metric": results.task.metric.name,
        "split": "validation",
        "scored_by": "host",
        "multiple_comparisons": "holm, per iteration, against the baseline",
        "required_seeds": results.required_seeds,
        "arms": arms,
    }


def best_summary(results: Results) -> dict[str, Any]:
    """best.json: the selected arm, its validation statistics, and its one test evaluation."""
    best: dict[str, Any] = {"metric": results.task.metric.name, "scored_by": "host", "split": "test"}
    best["selected_on"] = "validation"
    if results.chosen is None:
        best.update(
            value=None,
            reason=f"no arm has {results.required_seeds} host-scored, non-suspect validation seeds",
        )
        return best
    arm, val_stats = results.chosen
    seeds = sorted(counted(results.scores[arm.key]))  # the seeds its validation statistics count
    best.update(
        arm=arm.name,
        arm_key=arm.key,
        validation=val_stats.model_dump(),
        attempts={
            "train": [results.index[train_key(arm.key, s)].number for s in seeds],
            "eval": [results.scores[arm.key][s].number for s in seeds],
        },
        value=None,
    )
    by_seed = {record.seed: record for record in results.tests}
    failed = [(s, by_seed.get(s)) for s in seeds if s not in by_seed or not by_seed[s].host_scores]
    if failed:
        seed, record = failed[0]
        why = f"seed {seed}: {record.reason}" if record is not None else "not run"
        best["reason"] = results.note or f"test evaluation failed ({why})"
        return best
    values = [by_seed[s].host_scores[f"s{s}"] for s in seeds]
    test_stats = summarize(arm.name, values, bounds=metric_bounds(results.task.metric.name))
    best.update(
        value=test_stats.mean,
        test=test_stats.model_dump(),
        per_seed={f"s{s}": v for s, v in zip(seeds, values, strict=True)},
    )
    best["attempts"]["test"] = [by_seed[s].number for s in seeds]
    return best


def best_config(results: Results, arm: Arm) -> dict[str, Any]:
    """Everything needed to rerun the best configuration: code, hyperparameters, data, trunk."""
    config = results.state.config
    modules = {}
    for slot, module in arm.modules.items():
        guard = results.index.get(guard_key(slot, module.digest))
        modules[slot] = {
            "digest": module.digest,
            "origin": module.origin,
            "code_path": f"attempts/{guard.number:04d}/code/{slot}.py" if guard else None,
            "code": module.code,
        }
    first_train = results.index.get(train_key(arm.key, config.seeds[0]))
    return {
        "task": results.task.name,
        "dataset": config.dataset,
        "train_fraction": config.train_fraction,
        "data_root": config.data_root,
        "model": {"arch": arm.hyper.get("arch", config.arch), "pretrained": config.pretrained},
        "input_shape": results.data_shape["input_shape"],
        "num_classes": results.data_shape["num_classes"],
        "normalisation": {"mean": results.data_shape["mean"], "std": results.data_shape["std"]},
        "arm": arm.name,
        "arm_key": arm.key,
        "hyper": arm.hyper,
        "modules": modules,
        "seeds": config.seeds,
        "image": first_train.result.image if first_train else None,
        "image_id": first_train.result.image_id if first_train else None,
        "policies": results.policies,
    }


def write_tables(results: Results) -> tuple[dict[str, Any], dict[str, Any]]:
    """aggregates.json always; best.json and best_config.json only for the final snapshot
    (mid-run there is no test result to report, and none is invented)."""
    store = results.store
    aggregate = aggregates(results)
    store.write("aggregates.json", aggregate)
    best = best_summary(results)
    if results.final:
        if results.chosen is not None:
            store.write("best_config.json", best_config(results, results.chosen[0]))
        store.write("best.json", best)
    return aggregate, best


def write_summary(results: Results, aggregate: dict[str, Any], best: dict[str, Any], problems: list[str]) -> Path:
    """report/summary.md."""
    path = results.store.root / "report" / "summary.md"
    write_text_atomic(path, render_summary(results, aggregate, best, problems))
    return path


def render_summary(
    results: Results, aggregate: dict[str, Any], best: dict[str, Any], problems: list[str] | None = None
) -> str:
    """report/summary.md from its jinja2 template."""
    env = Environment(
        loader=PackageLoader("controller", "templates"),
        undefined=StrictUndefined,
        autoescape=False,  # noqa: S701 - renders Markdown, not HTML
        trim_blocks=True,
        lstrip_blocks=True,
    )
    state = results.state
    return env.get_template("summary.md.j2").render(
        state=state,
        task=results.task,
        plan=results.store.read("plan.json") or {},
        history=results.history,
        aggregate=aggregate,
        best=best,
        attempts=results.store.attempts(),
        wall=format_duration(max(state.totals.wall_s, 0.1)),
        budget=format_duration(state.config.budget_s),
        generated=datetime.now(UTC).isoformat(timespec="seconds"),
        problems=problems or [],
        final=results.final,
        research=research_digest(results.store),
    )


def research_digest(store: RunStore) -> dict[str, Any] | None:
    """What the research front-end left, for the summary (None when the run had none)."""
    sources = store.read("literature/sources.json")
    session = store.root / "planning" / "session.jsonl"
    if sources is None and not session.is_file():
        return None
    papers = store.root / "literature" / "papers.jsonl"
    turns = session.read_text().splitlines() if session.is_file() else []
    novelty = store.read("literature/novelty.json") or {}
    rejected = {v["idea"]: v.get("cited") for v in novelty.get("ideas", []) if v.get("verdict") == "too_close"}
    return {
        "papers": len(papers.read_text().splitlines()) if papers.is_file() else 0,
        "sources": {name: entry.get("status", "?") for name, entry in (sources or {}).items()},
        "turns": len(turns),
        "rejected": rejected,
    }
