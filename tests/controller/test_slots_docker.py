"""Every slot kind through the real loop and real Docker.

The offline agent's hypotheses change the model, the loss, the optimiser, the schedule, the
sampler and the training epoch; each trains for real, and each ablation arm trains with
exactly one of the changed slots reverted to the task's baseline module. Then the LLM path:
a generated training epoch whose own test fails, then whose training crashes at epoch 2, is
repaired from each structured failure, guarded again, and trains.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from controller.agents.offline import LIBRARY, OfflineAgent
from controller.plan import Plan, StoppingRules
from controller.registry import RunConfig
from controller.store import RunStore
from controller.tasks import load_task
from controller.wiring import build_loop
from sandbox.backends.docker import DockerSandbox
from tests.controller.fake_openai import FakeOpenAI, for_the_paper, json_reply

pytestmark = pytest.mark.docker

TASK = load_task("digits")
HYPOTHESES = ("residual-smooth-sgd", "balanced-cosine", "deep-adamw-clip")


def test_offline_hypotheses_over_every_new_slot_train_with_one_ablation_per_slot(
    tmp_path: Path, docker_client: Any
) -> None:
    runs = tmp_path / "runs"
    store, state = RunStore.create(runs, RunConfig(budget_s=900, seeds=[0], report_reserve_s=60), "slots")
    chosen = [h for h in LIBRARY if h.id in HYPOTHESES]
    changed = {slot for h in chosen for slot in h.modules}
    assert changed == {"model", "loss", "optimizer", "schedule", "sampler", "train_epoch"}
    plan = Plan(task="digits", objective="o", topic="slots", hypotheses=chosen, stopping=StoppingRules(max_iterations=3))
    store.write("plan.json", plan)
    sandbox = DockerSandbox(pool_size=1)
    lines: list[str] = []
    try:
        final = build_loop(store, state, sandbox, lines.append, agent=OfflineAgent()).run()
    finally:
        sandbox.close()
    assert final.status == "finished", lines[-20:]
    records = store.attempts()
    guards = [r for r in records if r.kind == "guard"]
    assert {r.slot for r in guards} == changed and all(r.status == "ok" for r in guards), [
        (r.slot, r.reason) for r in guards if r.status != "ok"
    ]
    trains = {r.arm: r for r in records if r.kind == "train"}
    evals = {r.arm: r for r in records if r.kind == "eval"}
    agent = OfflineAgent()
    for hypothesis in chosen:
        novelty = trains[f"novelty:{hypothesis.id}"]
        assert novelty.status == "ok", (hypothesis.id, novelty.reason, novelty.result.stderr[-2000:])
        score = evals[f"novelty:{hypothesis.id}"].host_score
        assert score is not None and score > 0.5, (hypothesis.id, score)  # real training on real data
        written = {slot: agent.write_module(TASK, slot, hypothesis).code for slot in hypothesis.modules}
        code = store.attempt_dir(novelty.number) / "code"
        assert all((code / f"{slot}.py").read_text() == text for slot, text in written.items())
        for slot in hypothesis.modules:  # one ablation per changed slot: that slot reverted, the rest kept
            ablation = trains[hypothesis.ablation_arm(f"module:{slot}")]
            assert ablation.status == "ok" and evals[ablation.arm or ""].host_score is not None
            code = store.attempt_dir(ablation.number) / "code"
            assert (code / f"{slot}.py").read_text() == TASK.baseline_code(slot)
            assert all((code / f"{o}.py").read_text() == written[o] for o in written if o != slot)
    # the generated training epoch reported its own metric, renamed under gen/
    clip = trains["novelty:deep-adamw-clip"]
    assert any(getattr(e, "name", "") == "gen/grad_norm" for e in store.attempt_events(clip.number))
    journal = json.loads((store.root / "journal.json").read_text())
    assert [o["hypothesis"]["id"] for o in journal] == list(HYPOTHESES)


CRASHES_AT_EPOCH_2 = """import torch

CALLS = [0]


def train_epoch(model, batches, optimizer, scheduler, loss_fn, augment, reporter):
    CALLS[0] += 1
    model.train()
    total, count = 0.0, 0
    for x, y in batches:
        x = augment(x)
        if CALLS[0] >= 3:  # from the third epoch on: epoch 2, counting from 0
            x = x.flatten(1)
        loss = loss_fn(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        total, count = total + float(loss) * len(y), count + len(y)
    if scheduler is not None:
        scheduler.step()
    return total / max(count, 1)
"""
FIXED = CRASHES_AT_EPOCH_2.replace("        if CALLS[0] >= 3:  # from the third epoch on: epoch 2, counting from 0\n            x = x.flatten(1)\n", "")
WRONG_TEST = """from gen.train_epoch import train_epoch


def test_returns_a_loss_per_sample():
    assert train_epoch.__name__ == "epoch", "the entry point must be named epoch"
"""
RIGHT_TEST = WRONG_TEST.replace('"epoch", "the', '"train_epoch", "the')


def test_a_failing_generated_test_and_a_crash_at_epoch_2_are_each_repaired_regarded_and_trained(
    tmp_path: Path, docker_client: Any
) -> None:
    assert FIXED != CRASHES_AT_EPOCH_2 and RIGHT_TEST != WRONG_TEST
    plan = {
        "objective": "a clipped training epoch",
        "hypotheses": [
            {
                "id": "clip",
                "statement": "Clipping gradients to norm 1 stabilises training.",
                "modules": {"train_epoch": "the baseline epoch with gradients clipped to norm 1"},
                "hyper": {},
                "success_threshold": 0.005,
            }
        ],
    }
    with FakeOpenAI() as fake:
        fake.script(
            json_reply(plan),
            json_reply({"code": CRASHES_AT_EPOCH_2, "tests": WRONG_TEST}),  # its own test fails in the guard
            json_reply({"code": CRASHES_AT_EPOCH_2, "tests": RIGHT_TEST}),  # the test fixed: it passes the guard
            json_reply({"code": FIXED, "tests": ""}),  # training crashed at epoch 2: fixed, tests kept
            json_reply({"summary": "Clipping was compared with the baseline.", "next_idea": ""}),
            json_reply({"decision": "stop", "reason": "one idea was enough"}),
        )
        env = {**os.environ, "OPENAI_BASE_URL": fake.base_url, "OPENAI_API_KEY": "test-key"}
        command = [
            sys.executable, "-m", "controller", "start", "--agent", "llm", "--model", "gpt-4o-mini",
            "--budget", "240s", "--seeds", "2", "--runs-dir", str(tmp_path), "--run-id", "crash",
        ]  # fmt: skip
        proc = subprocess.run(command, capture_output=True, text=True, timeout=500, env=env, check=False)
        requests = [r for r in fake.requests if not for_the_paper(r)]
        assert fake.pending == 0
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(requests) == 6
    tests_repair = "\n".join(m["content"] for m in requests[2]["messages"])
    assert "stage: tests" in tests_repair and "GeneratedTestsFailedError" in tests_repair
    assert "the entry point must be named epoch" in tests_repair and "test_returns_a_loss_per_sample" in tests_repair
    crash_repair = "\n".join(m["content"] for m in requests[3]["messages"])
    assert "stage: train" in crash_repair and "RuntimeError" in crash_repair
    assert re.search(r"> \S*gen/train_epoch\.py:\d+ in train_epoch: loss = loss_fn\(model\(x\), y\)", crash_repair)
    assert re.search(r"  \S*train\.py:\d+ in run", crash_repair)  # the trusted caller's frame, unmarked
    root = tmp_path / "crash"
    records = [json.loads(p.read_text()) for p in sorted(root.glob("attempts/*/attempt.json"))]
    guards = [r for r in records if r["kind"] == "guard" and r["slot"] == "train_epoch"]
    assert [(r["status"], r.get("failed_stage")) for r in guards] == [("error", "tests"), ("ok", None), ("ok", None)]
    crashed = [r for r in records if r["kind"] == "train" and r["status"] == "error"]
    assert crashed and guards[2]["number"] > crashed[0]["number"]  # the repaired module was guarded again
    assert (root / "attempts" / f"{guards[2]['number']:04d}" / "code" / "train_epoch.py").read_text() == FIXED
    assert (root / "attempts" / f"{guards[2]['number']:04d}" / "code" / "test_train_epoch.py").read_text() == RIGHT_TEST
    novelty = [r for r in records if r["kind"] == "train" and r["arm"] == "novelty:clip" and r["status"] == "ok"]
    assert len(novelty) == 2  # both seeds trained with the repaired module
    state = json.loads((root / "run.json").read_text())
    assert state["totals"]["repairs"] == 2 and state["totals"]["rollbacks"] == 0
    journal = json.loads((root / "journal.json").read_text())
    assert any(n.startswith("train_epoch crashed training") for n in journal[0]["notes"])
