"""`controller rerun RUN_ID`: reproduce the best configuration and check it against its CI.

The rerun is a run of its own (`<run_id>-rerun-N`) that reuses the original's data splits
(copied, labels included, host-side only), trains the recorded modules and hyperparameters
on the recorded seeds, and evaluates once on the test split. It reports whether the new
test metric falls inside the 95% CI that best.json recorded.
"""

from __future__ import annotations

import shutil
from typing import Any

from controller.errors import BadInputError
from controller.loop import ResearchLoop
from controller.plan import Arm, ModuleCode
from controller.registry import RunStore
from controller.stats import summarize


def prepare_rerun_store(runs_dir: Any, original: RunStore) -> tuple[RunStore, dict[str, Any], dict[str, Any]]:
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
    shutil.copytree(original.root / "data", store.root / "data")
    return store, best, config


def rerun_best(loop: ResearchLoop, best: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """Train and test the recorded configuration; compare with the recorded CI."""
    modules = {slot: ModuleCode(slot=slot, code=m["code"], origin="rerun") for slot, m in config["modules"].items()}
    arm = Arm(name=config["arm"], modules=modules, hyper=config["hyper"])
    if arm.key != config["arm_key"]:
        msg = f"best_config.json does not hash to its arm key ({arm.key} != {config['arm_key']}); was it edited?"
        raise BadInputError(msg)
    loop.arms[arm.name] = arm
    loop.iteration = 1
    for seed in config["seeds"]:
        loop.train_and_score(arm, seed)
    records = loop.scores.get(arm.key, {})
    models = {
        f"s{seed}": loop.store.attempt_dir(loop.index[f"train/{arm.key}/s{seed}"].number)
        / "outputs"
        / "out"
        / "model.pt"
        for seed in sorted(records)
    }
    if not models:
        return {"reproduced": False, "reason": "no seed trained successfully"}
    test = loop.predict_and_score(f"test/{arm.key}", "test", arm, models, "test", final=True)
    if test is None or not test.host_scores:
        return {"reproduced": False, "reason": f"test evaluation failed: {test.reason if test else 'not run'}"}
    values = [test.host_scores[name] for name in sorted(test.host_scores)]
    new = summarize(arm.name, values)
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
