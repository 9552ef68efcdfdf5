"""What a run found, hypothesis by hypothesis, for the findings memory across runs.

Each tested hypothesis becomes one Finding: supported, refuted (not supported although the
seeds could detect the claimed effect), underpowered (not supported, and the seeds could not
have detected it: no evidence either way) or untested. The baseline's measured sd and job
time go with it: the next plan's pilot.
"""

from __future__ import annotations

import statistics
from typing import Any

from controller.power import estimate
from controller.report import Results
from controller.research.engineer import DEFAULT_EFFECT
from controller.research.memory import Finding, memory_path, record_findings


def pair_seconds(results: Results) -> float | None:
    """Median train job plus median evaluation job, in wall seconds."""
    trains = [r.result.duration_s for r in results.index.values() if r.kind == "train"]
    evals = [r.result.duration_s for r in results.index.values() if r.kind == "eval"]
    if not trains or not evals:
        return None
    return round(statistics.median(trains) + statistics.median(evals), 2)


def run_findings(results: Results, aggregate: dict[str, Any]) -> list[Finding]:
    arms: dict[str, Any] = aggregate.get("arms", {})
    baseline = arms.get("baseline", {}).get("validation")
    sd = baseline.get("std") if baseline else None
    pair_s = pair_seconds(results)
    config = results.state.config
    findings = []
    for outcome in results.history:
        hypothesis = outcome.hypothesis
        entry = arms.get(f"novelty:{hypothesis.id}", {})
        comparison = entry.get("vs_baseline")
        base = dict(
            run_id=results.state.run_id,
            task=results.task.name,
            dataset=config.dataset,
            train_fraction=config.train_fraction,
            hypothesis=hypothesis.id,
            statement=hypothesis.statement,
            components=hypothesis.components(),
            baseline_sd=sd,
            pair_s=pair_s,
        )
        if comparison is None or baseline is None:
            findings.append(Finding(**base, verdict="untested"))
            continue
        n = min(entry["validation"]["n"], baseline["n"])
        effect = hypothesis.expected_effect or max(hypothesis.success_threshold, DEFAULT_EFFECT)
        family = max(len([a for a in outcome.arm_means if a != "baseline"]), 1)
        power = estimate(sd or 0.0, effect, n, family=family)
        verdict = "supported" if outcome.supported else "refuted" if outcome.excluded else "underpowered"
        findings.append(
            Finding(
                **base,
                verdict=verdict,
                effect=comparison["diff"],
                ci_low=comparison.get("diff_ci_low"),
                ci_high=comparison.get("diff_ci_high"),
                p_holm=comparison.get("p_holm"),
                n=n,
                power=power.describe(results.task.metric.name),
            )
        )
    return findings


def remember(results: Results, aggregate: dict[str, Any]) -> int:
    """Append this run's findings to the memory; returns how many were new."""
    path = memory_path(results.store.root.parent, results.state.config.memory)
    return record_findings(path, run_findings(results, aggregate))
