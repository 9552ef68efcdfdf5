"""What makes an attempt ok, and what a hostile or broken job can never do to the run."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from controller.loop import StagePolicies
from controller.registry import RunConfig
from controller.wiring import stage_policies
from sandbox.events import MetricEvent
from sandbox.results import Status
from tests.controller.fakes import Canned, FakeSandbox, make_loop

MODEL = struct.pack("d", 0.9)


def test_an_early_exit_with_status_0_is_an_error_not_a_success(tmp_path: Path) -> None:
    # os._exit(0) at import: exit 0, no `finished` event from the harness, no weights
    sandbox = FakeSandbox()
    sandbox.script("train", Canned(files={}, finished=False), then_honest=True)
    loop = make_loop(tmp_path, sandbox, seeds=2)
    state = loop.run()
    assert state.status == "finished"  # no attempt can end the run
    first = next(r for r in loop.store.attempts() if r.kind == "train")
    assert first.status == "error" and (first.reason or "").startswith("harness_not_finished")
    assert first.outputs is None
    assert (loop.store.root / "report" / "summary.md").is_file()
    # resume replays the recorded failure instead of wedging on it
    resumed = make_loop(tmp_path, FakeSandbox(), seeds=2)
    assert resumed.run().status == "finished"


def test_weights_that_are_a_folder_fail_as_missing_weights(tmp_path: Path) -> None:
    sandbox = FakeSandbox()
    sandbox.script("train", Canned(files={"out/model.pt/inside": b"x"}), then_honest=True)
    loop = make_loop(tmp_path, sandbox, seeds=2)
    assert loop.run().status == "finished"
    first = next(r for r in loop.store.attempts() if r.kind == "train")
    assert first.status == "error" and (first.reason or "").startswith("missing_weights")


def test_a_forged_finished_event_does_not_make_missing_weights_ok(tmp_path: Path) -> None:
    sandbox = FakeSandbox()
    sandbox.script("train", Canned(files={}), then_honest=True)  # finished=True, but no model.pt
    loop = make_loop(tmp_path, sandbox, seeds=2)
    loop.run()
    first = next(r for r in loop.store.attempts() if r.kind == "train")
    assert first.status == "error" and (first.reason or "").startswith("missing_weights")


def test_weights_too_large_for_the_evaluation_fail_the_training_attempt(tmp_path: Path) -> None:
    base = stage_policies(RunConfig(budget_s=3600))
    small = StagePolicies(
        guard=base.guard, train=base.train, evaluate=base.evaluate.with_overrides(workspace_size=8 * 1024**2)
    )
    sandbox = FakeSandbox()
    padded = MODEL + b"\0" * (8 * 1024**2)  # over 8 MiB less the inputs and the staging slack
    sandbox.script("train", Canned(files={"out/model.pt": padded}), then_honest=True)
    loop = make_loop(tmp_path, sandbox, seeds=2, policies=small)
    assert loop.run().status == "finished"
    first = next(r for r in loop.store.attempts() if r.kind == "train")
    assert first.status == "error" and (first.reason or "").startswith("outputs_too_large")
    assert not (loop.store.attempt_dir(first.number) / "outputs").exists()  # not kept, never staged
    evals = [r for r in loop.store.attempts() if r.kind == "eval" and r.arm_key == first.arm_key]
    assert all(r.seed != first.seed for r in evals)  # no evaluation was attempted for it


def test_events_are_kept_once_in_events_jsonl_and_read_lazily(tmp_path: Path) -> None:
    sandbox = FakeSandbox()
    loop = make_loop(tmp_path, sandbox, seeds=2)
    loop.run()
    train = next(r for r in loop.store.attempts() if r.kind == "train")
    raw = json.loads((loop.store.attempt_dir(train.number) / "attempt.json").read_text())
    assert raw["result"]["events"] == []  # not a second copy inside attempt.json
    events = loop.store.attempt_events(train.number)
    assert any(isinstance(e, MetricEvent) and e.name == "holdout_accuracy" for e in events)
    assert train.telemetry_score is not None  # what the loop needs from them is on the record


def test_a_guard_whose_smoke_observation_is_wrong_or_missing_fails(tmp_path: Path) -> None:
    wrong = {"shape": [4, 3], "dtype": "float32", "finite": True}
    sandbox = FakeSandbox()
    sandbox.script(
        "guard",
        Canned(files={"out/smoke.json": json.dumps(wrong).encode()}),  # augment: wrong shape
        Canned(files={}),  # head: the module's process exited before the check wrote anything
        then_honest=True,
    )
    loop = make_loop(tmp_path, sandbox, seeds=2)
    loop.run()
    guards = [r for r in loop.store.attempts() if r.kind == "guard"]
    assert guards[0].status == "error" and (guards[0].reason or "").startswith("smoke_mismatch")
    assert guards[1].status == "error" and (guards[1].reason or "").startswith("smoke_unverified")
    assert loop.state.totals.rollbacks == 2  # the offline agent rolled both slots back


def test_infra_errors_are_retried_but_code_errors_are_not(tmp_path: Path) -> None:
    sandbox = FakeSandbox()
    engine_down = Canned(status=Status.infra_error, exit_code=None)
    sandbox.script("train", engine_down, Canned(files={"out/model.pt": MODEL}), then_honest=True)
    sandbox.script("guard", Canned(status=Status.error, exit_code=1), then_honest=True)
    loop = make_loop(tmp_path, sandbox, seeds=2)
    loop.run()
    records = loop.store.attempts()
    first_train = next(r for r in records if r.kind == "train")
    assert first_train.status == "ok"
    train_calls = [c for c in sandbox.calls if c[0] == "train"]
    assert len(train_calls) == len([r for r in records if r.kind == "train"]) + 1  # one retry
    guard_records = [r for r in records if r.kind == "guard"]
    assert guard_records[0].status == "error"  # a failing module is data, not retried as infra
