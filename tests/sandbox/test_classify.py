import pytest

from sandbox.classify import classify
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
