"""What every backend does the same way: wrap the job in `timeout -k`, capture, report.

Both backends run the job under the same in-container (or in-process-group) layer of the
timeout, stream its stdout and stderr into head-and-tail buffers capped by the policy, and
turn what they captured into an AttemptResult here, in one place: a finished attempt and an
attempt the machinery failed (`infra_error`) have the same fields, filled the same way.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sandbox.classify import gpu_oom_reason
from sandbox.events import parse_events
from sandbox.policy import Policy
from sandbox.results import AttemptResult, CappedBuffer, Status, Usage

PYTHON_NAMES = frozenset({"python3", "python"})
"""Program names that `timeout_argv(..., interpreter=...)` replaces with that interpreter."""


def timeout_argv(command: Sequence[str], policy: Policy, *, interpreter: str | None = None) -> list[str]:
    """`timeout -k GRACE LIMIT command...`: the inner layer of the timeout, for every backend.

    `interpreter` stands in for a bare `python3`/`python` as the job's program: the local
    backend runs jobs with the host's own interpreter (the one that has the training stack),
    while in the runner image `python3` is already the right one and nothing is replaced.
    """
    argv = list(command)
    if interpreter is not None and argv and argv[0] in PYTHON_NAMES:
        argv[0] = interpreter
    return ["timeout", "-k", f"{policy.kill_grace:g}s", f"{policy.timeout:g}s", *argv]


@dataclass
class Capture:
    """What a backend collects during one attempt, until it becomes an AttemptResult."""

    policy: Policy
    backend: str
    """`docker` or `local`: recorded in the result."""
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    t0: float = field(default_factory=time.monotonic)
    out: CappedBuffer = field(init=False)
    """The job's stdout, head and tail within the policy's output cap."""
    err: CappedBuffer = field(init=False)
    """The job's stderr, capped the same way."""

    def __post_init__(self) -> None:
        self.out = CappedBuffer(int(self.policy.output_cap))
        self.err = CappedBuffer(int(self.policy.output_cap))

    def result(
        self,
        *,
        status: Status,
        reason: str,
        exit_code: int | None,
        events_blob: bytes = b"",
        events_unread: int = 0,
        usage: Usage | None = None,
        outputs_dir: Path | None = None,
        outputs_skipped: Sequence[str] = (),
        image: str | None = None,
        image_id: str | None = None,
        container_id: str | None = None,
    ) -> AttemptResult:
        """The attempt's result from what was captured: streams, event lines, usage.

        Events are held to the same byte budget as each output stream (the policy's
        `output_cap`), so a job cannot make the host keep more of them than of its stdout.
        """
        events, stats = parse_events(events_blob, max_total_bytes=int(self.policy.output_cap))
        stats.over_budget += events_unread  # lines past the budget, counted but never read in
        if status is Status.error and (gpu_oom := gpu_oom_reason(events, self.err.text())) is not None:
            status, reason = Status.oom, gpu_oom  # torch's OOM is an exception, not a kill
        return AttemptResult(
            status=status,
            reason=reason,
            exit_code=exit_code,
            duration_s=time.monotonic() - self.t0,
            started_at=self.started_at,
            stdout=self.out.text(),
            stderr=self.err.text(),
            truncated=self.out.truncated or self.err.truncated,
            stdout_bytes=self.out.total,
            stderr_bytes=self.err.total,
            events=events,
            event_stats=stats,
            usage=usage if usage is not None else Usage(),
            limits=self.policy,
            outputs_dir=outputs_dir,
            outputs_skipped=list(outputs_skipped),
            backend=self.backend,
            host=socket.gethostname(),
            image=image,
            image_id=image_id,
            container_id=container_id,
        )

    def infra_error(self, reason: str, *, image: str | None = None, container_id: str | None = None) -> AttemptResult:
        """The machinery failed, not the job: whatever was captured so far, no exit code."""
        return self.result(
            status=Status.infra_error,
            reason=reason,
            exit_code=None,
            image=image,
            container_id=container_id,
        )
