"""`controller rerun RUN_ID`: reproduce the best configuration and check it against its CI.

The rerun is a run of its own (`<run_id>-rerun-N`) with the original's config. It reuses
the original's data splits (copied host-side, labels included, sealed again), so it trains
exactly what the original trained: the same dataset, shapes and normalisation (read from
data/meta.json), trunk, recorded modules, hyperparameters and seeds. Then it evaluates once
on the test split and says whether the new mean falls inside the recorded 95% CI.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from controller.errors import BadInputError
from controller.loop import ResearchLoop
from controller.plan import Arm, ModuleCode
from controller.selection import metric_bounds
from controller.stats import summarize
from controller.store import RunStore


def prepare_rerun_store(runs_dir: Path, original: RunStore) -> tuple[RunStore, dict[str, Any], dict[str, Any]]:
    """Create the rerun's folder with the original's config and data; return best and config."""
    best = original.read("best.json")
    config = original.read("best_config.json")
    if not best or not config or best.get("value") is None:
        msg = f"run {original.root.name} has no best configuration with a test result to rerun"
        raise BadInputError(msg)
    state = original.load_state()
    n = 1
    while (runs_dir / f"{state.run_id}-rerun-{n}").exists():
        n += 1
    store, _ = RunStore.create(runs_dir, state.config.model_copy(deep=True), f"{state.run_id}-rerun-{n}")
    shutil.copytree(original.data_dir, store.data_dir)
    store.seal_private(store.data_dir)
    return store, best, config


def rerun_best(loop: ResearchLoop, best: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """Train and test the recorded configuration; compare with the recorded CI."""
    modules = {slot: ModuleCode(slot=slot, code=m["code"], origin="rerun") for slot, m in config["modules"].items()}
    arm = Arm(name=config["arm"], modules=modules, hyper=config["hyper"])
    if arm.key != config["arm_key"]:
        msg = f"best_config.json does not hash to its arm key ({arm.key} != {config['arm_key']}); was it edited?"
        raise BadInputError(msg)
    loop.data.prepare()  # the copied splits: reads meta.json (shapes, normalisation)
    loop.arms[arm.name] = arm
    loop.iteration = loop.attempts.iteration = 1
    trains = {}
    for seed in config["seeds"]:
        record = loop.trial.train(arm, seed)
        if record.status == "ok":
            trains[seed] = record
    if not trains:
        return {"reproduced": False, "reason": "no seed trained successfully"}
    tests = loop.trial.test(arm, trains)
    if failed := [r for r in tests if not r.host_scores]:
        return {"reproduced": False, "reason": f"test evaluation failed (seed {failed[0].seed}): {failed[0].reason}"}
    values = [score for r in tests for score in r.host_scores.values()]
    new = summarize(arm.name, values, bounds=metric_bounds(best["metric"]))
    recorded = best["test"]
    low, high = recorded.get("ci_low"), recorded.get("ci_high")
    inside = low is not None and high is not None and low <= new.mean <= high
    verdict = {
        "arm": arm.name,
        "metric": best["metric"],
        "recorded": {"mean": recorded["mean"], "ci_low": low, "ci_high": high, "n": recorded["n"]},
        "rerun": new.model_dump(),
        "inside_recorded_ci": inside,
        "reproduced": inside,
    }
    loop.store.write("rerun.json", verdict)
    return verdict
