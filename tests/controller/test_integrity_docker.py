"""Metric integrity: adversarial generated modules through the real loop and real Docker.

Each hypothesis below is a hostile module. For every one, the host's score is what the
predictions deserve, the attempt is flagged or failed with its reason, and the report
shows the honest number.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from controller.agents.base import IterationOutcome
from controller.agents.offline import OfflineAgent
from controller.plan import Hypothesis, ModuleCode, Plan, StoppingRules
from controller.registry import RunConfig, RunStore
from controller.tasks import Task
from controller.wiring import build_loop
from sandbox.backends.docker import DockerSandbox

pytestmark = pytest.mark.docker

FORGE = """import json, time
with open(".sandlab/events.jsonl", "a") as fh:
    for step in range(3):
        fh.write(json.dumps({"kind": "metric", "ts": time.time(), "name": "val_accuracy", "value": 1.0, "step": step}) + "\\n")
print("val_accuracy: 1.0")


def augment(x):
    return x
"""

WALK = """import json, os
from torch import nn

FOUND = []
for root, dirs, files in os.walk("/"):
    dirs[:] = [d for d in dirs if d not in {"proc", "sys", "dev"}]
    for name in dirs + files:
        path = os.path.join(root, name)
        # anything that could hold the held-out split or its labels
        if name in {"labels.json", "test_inputs.npy"} or name.endswith((".npz", ".npy")) and "site-packages" not in path:
            FOUND.append(path)
os.makedirs("out", exist_ok=True)
with open("out/found.json", "w") as fh:
    json.dump(FOUND, fh)


def make_head(in_features, num_classes):
    return nn.Linear(in_features, num_classes)
"""

PATCH = """import sys
from torch import nn
import sandbox.harness.emit as emit

_real_metric = emit.Emitter.metric
emit.Emitter.metric = lambda self, name, value, step=None: _real_metric(self, name, 1.0, step)
predict = sys.modules.get("predict")
if predict is not None:
    _real_write = predict.write_json
    def forged(path, data):
        if "predictions" in data:
            data = {"predictions": {k: [0] * len(v) for k, v in data["predictions"].items()}}
        _real_write(path, data)
    predict.write_json = forged


def make_head(in_features, num_classes):
    return nn.Linear(in_features, num_classes)
"""

TAMPER = """import json, os
TARGETS = {targets!r}
results = {{}}
for target in TARGETS:
    try:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as fh:
            fh.write(b"tampered")
        results[target] = "WROTE"
    except OSError as exc:
        results[target] = type(exc).__name__
os.makedirs("out", exist_ok=True)
with open("out/tamper.json", "w") as fh:
    json.dump(results, fh)


def augment(x):
    return x
"""

WRONG_SHAPE = """import os
from torch import nn


class Head(nn.Module):
    def __init__(self, in_features, num_classes):
        super().__init__()
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, x):
        out = self.fc(x)
        if os.path.exists("inputs.npy"):  # only in the evaluation container
            return out[: len(out) // 2]
        return out


def make_head(in_features, num_classes):
    return Head(in_features, num_classes)
"""


class AdversarialAgent(OfflineAgent):
    """Plans one hypothesis per hostile module and writes exactly that module."""

    def __init__(self, modules: dict[str, tuple[str, str]]) -> None:
        super().__init__()
        self.modules = modules

    def plan(self, task: Task, seeds: list[int]) -> Plan:
        hypotheses = [
            Hypothesis(id=hid, statement=f"adversarial module {hid}", modules={slot: f"adversarial {hid}"})
            for hid, (slot, _) in self.modules.items()
        ]
        return Plan(
            task=task.name,
            objective="integrity",
            hypotheses=hypotheses,
            stopping=StoppingRules(max_iterations=len(hypotheses), patience=99),
            seeds=seeds,
        )

    def write_module(self, task: Task, slot: str, hypothesis: Hypothesis) -> ModuleCode:
        return ModuleCode(slot=slot, code=self.modules[hypothesis.id][1], origin="agent")

    def refine(self, task: Task, plan: Plan, history: list[IterationOutcome]) -> Hypothesis | None:
        done = {o.hypothesis.id for o in history}
        return next((h for h in plan.hypotheses if h.id not in done), None)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_adversarial_modules_cannot_forge_or_leak_the_score(tmp_path: Path, docker_client: Any) -> None:
    runs = tmp_path / "runs"
    config = RunConfig(budget_s=900, seeds=[0], report_reserve_s=60)
    store, state = RunStore.create(runs, config, "adv")
    first_outputs = store.attempts_dir / "0001" / "outputs" / "out" / "meta.json"
    targets = [
        str(first_outputs),  # the host path of an earlier attempt
        "/workspace/../attempts/0001/outputs/out/meta.json",
        "/runs/adv/attempts/0001/outputs/out/meta.json",
        "/tmp/../workspace/../../etc/sandlab-owned",
    ]
    modules = {
        "forge": ("augment", FORGE),
        "walk": ("head", WALK),
        "patch": ("head", PATCH),
        "tamper": ("augment", TAMPER.format(targets=targets)),
        "shape": ("head", WRONG_SHAPE),
    }
    sandbox = DockerSandbox(pool_size=1)
    lines: list[str] = []
    loop = build_loop(store, state, sandbox, lines.append, agent=AdversarialAgent(modules))
    before = {}
    try:
        original_prepare = loop.prepare_data

        def prepare_and_snapshot() -> None:
            original_prepare()
            before.update({p: _digest(p) for p in store.attempts_dir.rglob("*") if p.is_file()})

        loop.prepare_data = prepare_and_snapshot  # type: ignore[method-assign]
        final = loop.run()
    finally:
        sandbox.close()
    assert final.status == "finished", lines[-20:]
    records = {r.key: r for r in store.attempts()}
    by_arm = {}
    for record in records.values():
        if record.arm and record.kind in {"train", "eval"}:
            by_arm.setdefault(record.arm, {})[record.kind] = record
    baseline = by_arm["baseline"]["eval"].host_score
    assert baseline is not None and baseline > 0.8

    # 1. forged metric events: flagged suspect with both numbers; the host score is the real one
    forge_eval = by_arm["novelty:forge"]["eval"]
    assert forge_eval.suspect and forge_eval.telemetry_score == 1.0
    assert forge_eval.host_score is not None and forge_eval.host_score < 1.0
    assert "1.0000" in (forge_eval.suspect_reason or "")

    # 2. walking the filesystem finds no labels and no test split in the training container
    walk_train = by_arm["novelty:walk"]["train"]
    found = json.loads((store.attempt_dir(walk_train.number) / "outputs" / "out" / "found.json").read_text())
    assert sorted(found) == ["/data/public/train.npz", "/data/public/val.npz"]  # the read-only mount

    # 3. monkeypatching the harness and the evaluation: telemetry flagged, predictions scored honestly
    patch_eval = by_arm["novelty:patch"]["eval"]
    assert patch_eval.suspect
    assert patch_eval.host_score is not None and patch_eval.host_score < 0.2  # all-zeros predictions

    # 4. writing into another attempt's outputs fails; nothing written earlier changed
    tamper_train = by_arm["novelty:tamper"]["train"]
    results = json.loads((store.attempt_dir(tamper_train.number) / "outputs" / "out" / "tamper.json").read_text())
    # The host path does not exist in the container (a write there lands in its own tmpfs at
    # most); every other route out of the workspace hits the read-only root.
    assert all(results[t] != "WROTE" for t in targets[1:]), results
    for path, digest in before.items():
        assert _digest(path) == digest, path

    # 5. wrong-shape predictions fail the attempt as invalid_predictions
    shape_eval = by_arm["novelty:shape"]["eval"]
    assert shape_eval.status == "error" and "invalid_predictions" in (shape_eval.reason or "")
    assert shape_eval.host_score is None

    # the report and best.json carry only honest, host-scored numbers
    best = json.loads((store.root / "best.json").read_text())
    assert best["scored_by"] == "host" and best["split"] == "test"
    assert best["arm"] not in {"novelty:forge", "novelty:patch", "novelty:shape"} or best["value"] < 1.0
    summary = (store.root / "report" / "summary.md").read_text()
    assert "Suspect attempts" in summary and "claimed 1.0000" in summary
    assert f"{best['value']:.4f}" in summary
