"""Labels every sandlab container carries, so ownership survives a controller crash.

The reaper reads them back; the owner identity itself (host, pid, start time) is
`sandbox.owners`, shared with the run registry.
"""

from __future__ import annotations

from sandbox.owners import current_owner

RUN = "sandlab.run"
ATTEMPT = "sandlab.attempt"
OWNER_PID = "sandlab.owner_pid"
OWNER_HOST = "sandlab.owner_host"
OWNER_START = "sandlab.owner_start"
"""Start time of the owner process (clock ticks since boot): a recycled pid is not the owner."""
POOL = "sandlab.pool"


def owner_labels(run_id: str, attempt: str) -> dict[str, str]:
    """Labels tying a container to this process."""
    owner = current_owner()
    return {
        RUN: run_id,
        ATTEMPT: attempt,
        OWNER_PID: str(owner.pid),
        OWNER_HOST: owner.host,
        OWNER_START: owner.start_ticks or "",
    }
