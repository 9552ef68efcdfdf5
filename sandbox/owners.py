"""Who owns a run or a container: a process named by host, pid and start time.

A pid alone is not an identity: after a crash the kernel may hand the same pid to an
unrelated process, which would then look like a live owner forever. The start time (clock
ticks since boot, from /proc) tells a recycled pid apart. This is the one liveness check;
the container reaper and the run registry both use it.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass


@dataclass(frozen=True)
class Owner:
    """A process on a host."""

    host: str
    pid: int
    start_ticks: str | None


def process_start_ticks(pid: int) -> str | None:
    """The process's start time from /proc, or None if it is gone, or dead and not yet reaped
    (a zombie: a killed owner whose parent died too may stay one for good), or not Linux."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return None
    # The command name may contain spaces and parentheses: split after the last ')'.
    fields = stat.rsplit(")", 1)[-1].split()
    if fields and fields[0] in {"Z", "X"}:
        return None
    return fields[19] if len(fields) > 19 else None


def current_owner() -> Owner:
    """This process."""
    pid = os.getpid()
    return Owner(host=socket.gethostname(), pid=pid, start_ticks=process_start_ticks(pid))


def owner_is_alive(host: str | None, pid: int | None, start_ticks: str | None) -> bool:
    """Whether that process still runs on this host (False for other hosts: we cannot know).

    Without a recorded start time (older records) a live pid counts as the owner.
    """
    if pid is None or host != socket.gethostname():
        return False
    ticks = process_start_ticks(pid)
    if ticks is None:
        return False
    return not start_ticks or start_ticks == ticks
