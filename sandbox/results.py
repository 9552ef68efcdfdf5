"""AttemptResult: what every backend returns for one job, ok or not; and the capped buffers
that hold a job's stdout and stderr while it runs.

Backends build results in one place, `sandbox.backends.capture`.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from sandbox.events import Event, EventStats
from sandbox.limits import output_head_fraction
from sandbox.policy import Policy


class Status(StrEnum):
    """Outcome of one attempt. Only `infra_error` blames the machinery, not the code."""

    ok = "ok"
    error = "error"
    timeout = "timeout"
    oom = "oom"
    killed = "killed"
    infra_error = "infra_error"


class Usage(BaseModel):
    """Resources the attempt consumed, as measured from the outside (cgroups, NVML)."""

    model_config = ConfigDict(extra="forbid")

    peak_memory_bytes: int | None = None
    cpu_s: float | None = None
    gpu_peak_memory_bytes: int | None = None
    gpu_utilization_pct: float | None = None


class AttemptResult(BaseModel):
    """The structured log of one attempt, as `controller sandbox exec --json` prints it.

    The README's "The sandbox" section describes it, and "Changes to the design contracts"
    lists the fields added to the original contract.
    """

    model_config = ConfigDict(extra="forbid")

    status: Status
    exit_code: int | None
    duration_s: float
    started_at: datetime
    stdout: str = ""
    stderr: str = ""
    truncated: bool = False
    """True when either stream was cut at capture (head and tail kept)."""
    stdout_bytes: int = 0
    """Bytes the job wrote to stdout in total, kept or not."""
    stderr_bytes: int = 0
    events: list[Event] = Field(default_factory=list)
    event_stats: EventStats = Field(default_factory=EventStats)
    usage: Usage = Field(default_factory=Usage)
    limits: Policy
    image: str | None = None
    image_id: str | None = None
    """Content digest of the image the job ran in (what a rerun must match)."""
    host: str | None = None
    """Host name of the machine that ran the job."""
    container_id: str | None = None
    backend: str = "docker"
    node: str | None = None
    """The cluster node that ran the job (`--executor ray`: its address); None when run locally."""
    reason: str | None = None
    """Why the status is what it is, in words (e.g. 'exceeded 60s timeout')."""
    outputs_dir: Path | None = None
    """Where the workspace was copied back to on the host, if it was."""
    outputs_skipped: list[str] = Field(default_factory=list)
    """Workspace entries not copied back (symlinks, devices, over the size cap)."""

    @property
    def ok(self) -> bool:
        """Whether the job succeeded."""
        return self.status is Status.ok


class CappedBuffer:
    """Keeps the head and the tail of a stream within a fixed number of bytes.

    Memory stays bounded whatever the job prints: the middle is dropped as it streams.
    """

    def __init__(self, cap: int) -> None:
        self.cap = max(cap, 0)
        self.head_cap = int(self.cap * output_head_fraction)
        self.tail_cap = self.cap - self.head_cap
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def write(self, chunk: bytes) -> None:
        """Append a chunk, dropping whatever falls between head and tail."""
        self.total += len(chunk)
        room = self.head_cap - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk and self.tail_cap:
            self.tail += chunk
            if len(self.tail) > self.tail_cap:
                del self.tail[: len(self.tail) - self.tail_cap]

    @property
    def truncated(self) -> bool:
        """Whether bytes were dropped."""
        return self.total > len(self.head) + len(self.tail)

    def getvalue(self) -> bytes:
        """Head, a marker saying how much was cut, and tail."""
        if not self.truncated:
            return bytes(self.head + self.tail)
        dropped = self.total - len(self.head) - len(self.tail)
        marker = f"\n[... sandlab: {dropped} bytes truncated ...]\n".encode()
        return bytes(self.head) + marker + bytes(self.tail)

    def text(self) -> str:
        """The kept bytes as text (invalid UTF-8 replaced)."""
        return self.getvalue().decode("utf-8", errors="replace")

    def save(self, path: Path) -> None:
        """Write what was kept to a file."""
        path.write_bytes(self.getvalue())
