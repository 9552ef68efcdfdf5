"""Turning an exit code, elapsed time and engine flags into an attempt status.

Exit code 137 is ambiguous: it is 128 + SIGKILL, and SIGKILL comes from the kernel's OOM
killer, from `timeout -k` when the job ignored SIGTERM past the grace period, from the host
killing the container at its own deadline, or from the job killing itself. 143 (SIGTERM)
is similar. So the code alone decides nothing: the OOM evidence from the cgroup wins, then
elapsed time against the policy's timeout, and only then the code itself.

Running out of GPU memory kills nothing: torch raises torch.OutOfMemoryError (also spelled
torch.cuda.OutOfMemoryError) and the job exits 1 like any crash. `gpu_oom_reason` tells it
apart afterwards, from the harness's exception event or from the traceback python printed
last on stderr, so the repair loop is told "out of GPU memory" rather than "exited 1".
Both are written by the job's own process, so generated code could forge them; it gains
nothing by it (oom is still a failure, and it is the code's to fix), and the evidence is
only believed for a job that exited with an error, never to turn a success or a timeout
into something else.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from sandbox.events import Event, ExceptionEvent
from sandbox.limits import killed_exit_codes, max_reason_chars, timeout_exit_codes
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


GPU_OOM_TYPE = "OutOfMemoryError"
"""torch.OutOfMemoryError's name, as the harness reports an exception's type (its qualname)."""
_GPU_OOM_TRACEBACK_LINE = re.compile(r"^torch\.(?:cuda\.)?OutOfMemoryError: (?P<message>.*out of memory.*)$")
"""The last line python prints for an uncaught GPU OOM (the module-qualified type first)."""


def gpu_oom_reason(events: Sequence[Event], stderr: str) -> str | None:
    """Why a failed job ran out of GPU memory, from its last exception; None if it did not.

    The harness's last exception event is asked first (a harness job exits 1 without a
    traceback), then the last line of stderr, where python reports an uncaught exception.
    """
    last = next((e for e in reversed(events) if isinstance(e, ExceptionEvent)), None)
    message: str | None = None
    if last is not None:
        if last.type == GPU_OOM_TYPE and "out of memory" in last.message:
            message = last.message
    else:
        tail = stderr.rstrip().rpartition("\n")[2]
        match = _GPU_OOM_TRACEBACK_LINE.match(tail)
        message = match.group("message") if match else None
    if message is None:
        return None
    first_line = message.strip().splitlines()[0] if message.strip() else message
    return f"out of GPU memory: {first_line}"[:max_reason_chars]
