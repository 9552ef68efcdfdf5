"""Turning an exit code, elapsed time and engine flags into an attempt status.

Exit code 137 is ambiguous: it is 128 + SIGKILL, and SIGKILL comes from the kernel's OOM
killer, from `timeout -k` when the job ignored SIGTERM past the grace period, from the host
killing the container at its own deadline, or from the job killing itself. 143 (SIGTERM)
is similar. So the code alone decides nothing: the OOM evidence from the cgroup wins, then
elapsed time against the policy's timeout, and only then the code itself.
"""

from __future__ import annotations

from sandbox.limits import killed_exit_codes, timeout_exit_codes
from sandbox.policy import Policy
from sandbox.results import Status

# A job killed by `timeout` can be observed a hair before the nominal limit because the
# host's clock starts before the in-container one; allow for that.
_TIMEOUT_CLOCK_SKEW_S = 0.5


def classify(
    exit_code: int | None,
    elapsed_s: float,
    policy: Policy,
    *,
    oom_killed: bool = False,
    host_deadline_hit: bool = False,
) -> tuple[Status, str]:
    """Return the status and a one-line reason for it."""
    if oom_killed:
        return Status.oom, f"out of memory: exceeded the {policy.memory.human_readable()} limit"
    if host_deadline_hit:
        return Status.timeout, (
            f"killed by the host after {elapsed_s:.1f}s (timeout {policy.timeout:g}s "
            f"+ grace {policy.kill_grace:g}s did not stop it)"
        )
    if exit_code is None:
        return Status.infra_error, "the engine reported no exit code"
    if exit_code == 0:
        return Status.ok, "exited 0"
    past_timeout = elapsed_s >= policy.timeout - _TIMEOUT_CLOCK_SKEW_S
    if exit_code in timeout_exit_codes and past_timeout:
        return Status.timeout, f"exceeded the {policy.timeout:g}s timeout"
    if exit_code in killed_exit_codes:
        if past_timeout:
            return Status.timeout, (
                f"exceeded the {policy.timeout:g}s timeout and ignored SIGTERM"
                if exit_code == 137
                else f"exceeded the {policy.timeout:g}s timeout"
            )
        signal = "SIGKILL" if exit_code == 137 else "SIGTERM"
        return Status.killed, f"killed by {signal} after {elapsed_s:.1f}s, before the timeout"
    if exit_code > 128:
        return Status.killed, f"killed by signal {exit_code - 128}"
    return Status.error, f"exited {exit_code}"
