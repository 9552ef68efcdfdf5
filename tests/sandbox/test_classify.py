import pytest

from sandbox.backends.capture import Capture
from sandbox.classify import classify, gpu_oom_reason
from sandbox.events import ExceptionEvent
from sandbox.policy import Policy
from sandbox.results import Status

POLICY = Policy(timeout=10, kill_grace=2)


@pytest.mark.parametrize(
    ("code", "elapsed", "oom", "host", "expected"),
    [
        (0, 1, False, False, Status.ok),
        (1, 1, False, False, Status.error),
        (124, 10.1, False, False, Status.timeout),
        (137, 12.0, False, False, Status.timeout),  # ignored SIGTERM, timeout -k killed it
        (137, 2.0, False, False, Status.killed),  # SIGKILL well before the timeout
        (137, 2.0, True, False, Status.oom),  # the cgroup saw an OOM kill
        (143, 3.0, False, False, Status.killed),
        (None, 30.0, False, True, Status.timeout),  # host deadline
        (None, 1.0, False, False, Status.infra_error),
        (139, 1.0, False, False, Status.killed),  # SIGSEGV
        (124, 1.0, False, False, Status.error),  # a job that itself exits 124 early
    ],
)
def test_exit_codes_are_told_apart(code: int | None, elapsed: float, oom: bool, host: bool, expected: Status) -> None:
    status, reason = classify(code, elapsed, POLICY, oom_killed=oom, host_deadline_hit=host)
    assert status is expected
    assert reason


# -- GPU out of memory: an exception, not a kill ----------------------------------------------

CUDA_OOM = (
    "CUDA out of memory. Tried to allocate 1024.00 GiB. GPU 0 has a total capacity of 139.72 GiB "
    "of which 138.9 GiB is free."
)


def _exception(type_: str, message: str) -> ExceptionEvent:
    return ExceptionEvent(stage="run", type=type_, message=message)


def test_a_harness_job_that_raised_torch_oom_is_oom_with_the_gpu_reason() -> None:
    reason = gpu_oom_reason([_exception("OutOfMemoryError", CUDA_OOM)], stderr="")
    assert reason is not None and reason.startswith("out of GPU memory: CUDA out of memory. Tried to allocate")


def test_a_plain_job_whose_traceback_ends_in_torch_oom_is_oom() -> None:
    for spelled in ("torch.OutOfMemoryError", "torch.cuda.OutOfMemoryError"):
        stderr = f'Traceback (most recent call last):\n  File "train.py", line 9, in <module>\n{spelled}: {CUDA_OOM}\n'
        reason = gpu_oom_reason([], stderr)
        assert reason == f"out of GPU memory: {CUDA_OOM}"


@pytest.mark.parametrize(
    ("events", "stderr"),
    [
        ([_exception("RuntimeError", CUDA_OOM)], ""),  # another type with the same words
        ([_exception("OutOfMemoryError", "host allocator says no")], ""),  # not torch's message
        ([_exception("ValueError", "x")], f"torch.OutOfMemoryError: {CUDA_OOM}\n"),  # the harness's event wins
        ([], f"torch.OutOfMemoryError: {CUDA_OOM}\nbut the job went on and failed later\n"),  # not the last word
        ([], f"mytorch.OutOfMemoryError: {CUDA_OOM}\n"),
        ([], ""),
    ],
)
def test_other_failures_are_not_gpu_oom(events: list[ExceptionEvent], stderr: str) -> None:
    assert gpu_oom_reason(events, stderr) is None


def _finished(status: Status, exit_code: int, events: str, stderr: bytes) -> tuple[Status, str]:
    capture = Capture(POLICY, backend="local")
    capture.err.write(stderr)
    result = capture.result(status=status, reason="exited 1", exit_code=exit_code, events_blob=events.encode())
    return result.status, result.reason or ""


def test_both_backends_report_a_gpu_oom_that_failed_the_job_as_oom() -> None:
    event = _exception("OutOfMemoryError", CUDA_OOM).model_dump_json() + "\n"
    status, reason = _finished(Status.error, 1, event, b"")
    assert status is Status.oom and "CUDA out of memory" in reason
    status, reason = _finished(Status.error, 1, "", f"torch.OutOfMemoryError: {CUDA_OOM}\n".encode())
    assert status is Status.oom and "CUDA out of memory" in reason


@pytest.mark.parametrize("status", [Status.ok, Status.timeout, Status.killed])
def test_oom_words_never_change_a_success_or_a_timeout(status: Status) -> None:
    event = _exception("OutOfMemoryError", CUDA_OOM).model_dump_json() + "\n"
    assert _finished(status, 0, event, f"torch.OutOfMemoryError: {CUDA_OOM}\n".encode())[0] is status
