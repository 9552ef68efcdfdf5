"""What the repair step is shown when a guard fails."""

from __future__ import annotations

from datetime import UTC, datetime

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
