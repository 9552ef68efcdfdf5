"""Labels every sandlab container carries, so ownership survives a controller crash."""

from __future__ import annotations

import os
import socket

RUN = "sandlab.run"
ATTEMPT = "sandlab.attempt"
OWNER_PID = "sandlab.owner_pid"
OWNER_HOST = "sandlab.owner_host"
OWNER_START = "sandlab.owner_start"
"""Start time of the owner process (clock ticks since boot): a recycled pid is not the owner."""
POOL = "sandlab.pool"


def process_start_ticks(pid: int) -> str | None:
    """The process's start time from /proc, or None if it is gone (or not Linux)."""
    try:
        stat = open(f"/proc/{pid}/stat").read()  # noqa: SIM115 - tiny read
    except OSError:
        return None
    # The command name may contain spaces and parentheses: split after the last ')'.
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def owner_labels(run_id: str, attempt: str) -> dict[str, str]:
    """Labels tying a container to this process."""
    pid = os.getpid()
    return {
        RUN: run_id,
        ATTEMPT: attempt,
        OWNER_PID: str(pid),
        OWNER_HOST: socket.gethostname(),
        OWNER_START: process_start_ticks(pid) or "",
    }
