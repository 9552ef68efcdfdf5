"""What the repair step is shown when a guard fails."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from controller.coding import Coder
from controller.registry import AttemptRecord
from sandbox.events import ExceptionEvent, Frame
from sandbox.policy import Policy
from sandbox.results import AttemptResult, Status


def _guard(events: list[ExceptionEvent], *, reason: str, status: str = "error", stderr: str = "") -> AttemptRecord:
    result = AttemptResult(
        status=Status.error if status == "error" else Status.ok,
        exit_code=1,
        duration_s=1.0,
        started_at=datetime.now(UTC),
        limits=Policy(),
        stderr=stderr,
        events=list(events),
    )
    return AttemptRecord(
        number=1, key="guard/head/x", kind="guard", iteration=1, slot="head", status=status, reason=reason,
        failed_stage="smoke", result=result,
    )  # fmt: skip


def test_a_traceback_reaches_the_agent_with_generated_frames_marked() -> None:
    exc = ExceptionEvent(
        stage="smoke",
        type="RuntimeError",
        message="mat1 and mat2 shapes cannot be multiplied",
        frames=[
            Frame(file="/workspace/smoke.py", line=40, function="check_head", source="out = head(x)"),
            Frame(file="/workspace/gen/head.py", line=7, function="forward", source="return self.fc(x)", generated=True),
        ],
    )
    failure = Coder.guard_failure(_guard([exc], reason="exit 1", stderr="x" * 10_000))
    assert failure.stage == "smoke" and failure.exception_type == "RuntimeError"
    assert "  /workspace/smoke.py:40 in check_head" in failure.traceback
    assert "> /workspace/gen/head.py:7 in forward: return self.fc(x)" in failure.traceback
    assert len(failure.stderr_tail) < 5000 and "characters cut" in failure.stderr_tail


def test_a_host_side_verdict_reaches_the_agent_as_the_message() -> None:
    # the module passed in its own process, but the host's reading of the smoke check disagreed
    failure = Coder.guard_failure(_guard([], reason="smoke_mismatch: observed {'shape': [4, 3]}"))
    assert failure.stage == "smoke" and "smoke_mismatch" in failure.message


def test_a_module_with_tests_is_guarded_with_them_after_the_smoke_check(tmp_path: Path) -> None:
    from controller.coding import generated_tests_path
    from controller.plan import ModuleCode
    from tests.controller.fakes import FakeSandbox, make_loop

    assert generated_tests_path("gen/head.py") == "gen/test_head.py"
    sandbox = FakeSandbox()
    loop = make_loop(tmp_path, sandbox)
    loop.data.prepare()
    plain = ModuleCode(slot="head", code="def make_head(i, n):\n    return None\n")
    tested = plain.model_copy(update={"tests": "def test_x():\n    assert True\n"})
    first, second = loop.coder.guard("head", plain), loop.coder.guard("head", tested)
    assert first.key != second.key  # the same code with tests is another guard
    (_, plain_job, _), (_, tested_job, _) = [call for call in sandbox.calls if call[0] == "guard"]
    assert "--tests" not in plain_job.command and "gen/test_head.py" not in plain_job.files
    command = tested_job.command
    assert command[command.index("--tests") + 1] == "gen/test_head.py"
    assert tested_job.files["gen/test_head.py"] == tested.tests.encode()
    expected = json.loads(command[command.index("--expect") + 1])
    assert expected == {"shape": [4, 10], "dtype": "float32", "finite": True}  # checked in the container first
    saved = loop.store.attempt_dir(second.number) / "code" / "test_head.py"
    assert saved.read_text() == tested.tests  # kept with the attempt, for inspection
