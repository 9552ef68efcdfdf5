"""The event protocol between the harness (inside) and the host (outside).

The harness writes one JSON object a line with the standard library only; the host
validates every line against these models. Anything that does not validate is counted and
dropped: a job's output can never crash the host.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from sandbox.limits import max_event_line_bytes, max_events

EVENTS_FILE = ".sandlab/events.jsonl"
"""Where the harness writes events, relative to the workspace."""


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    ts: float = 0.0
    """Unix time at which the harness emitted the event."""


class StageEvent(_Event):
    """A harness stage (compile, import, smoke, run, ...) started, passed or failed."""

    kind: Literal["stage"] = "stage"
    stage: Annotated[str, Field(max_length=64)]
    state: Literal["started", "passed", "failed"]
    duration_s: float | None = None


class MetricEvent(_Event):
    """A scalar the job reported. Telemetry only: never the score (see metric integrity)."""

    kind: Literal["metric"] = "metric"
    name: Annotated[str, Field(max_length=128)]
    value: float
    step: int | None = None

    @field_validator("value")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            msg = "metric values must be finite"
            raise ValueError(msg)
        return value


class ArtifactEvent(_Event):
    """A file the job wrote into the workspace."""

    kind: Literal["artifact"] = "artifact"
    path: Annotated[str, Field(max_length=1024)]
    bytes: int | None = None


class Frame(BaseModel):
    """One traceback frame."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    file: Annotated[str, Field(max_length=1024)]
    line: int
    function: Annotated[str, Field(max_length=256)]
    source: Annotated[str, Field(max_length=1024)] = ""
    generated: bool = False
    """True when the frame is in a generated module (the code the repair loop may change)."""


class ExceptionEvent(_Event):
    """An exception with its traceback, as the repair loop needs it."""

    kind: Literal["exception"] = "exception"
    stage: Annotated[str, Field(max_length=64)] = ""
    type: Annotated[str, Field(max_length=256)]
    message: Annotated[str, Field(max_length=8192)]
    frames: Annotated[list[Frame], Field(max_length=200)] = []


class FinishedEvent(_Event):
    """The harness finished; `status` is its own view, the host classifies independently."""

    kind: Literal["finished"] = "finished"
    status: Literal["ok", "error"]
    duration_s: float | None = None


Event = Annotated[
    StageEvent | MetricEvent | ArtifactEvent | ExceptionEvent | FinishedEvent,
    Field(discriminator="kind"),
]
_event_adapter: TypeAdapter[Event] = TypeAdapter(Event)


class EventStats(BaseModel):
    """How many lines were dropped, and why."""

    model_config = ConfigDict(extra="forbid")

    accepted: int = 0
    malformed: int = 0
    oversized: int = 0
    excess: int = 0


def parse_events(
    data: bytes, *, limit: int = max_events, max_line: int = max_event_line_bytes
) -> tuple[list[Event], EventStats]:
    """Validate JSON lines; count and drop malformed, oversized and excess ones."""
    events: list[Event] = []
    stats = EventStats()
    for raw in data.splitlines():
        if not raw.strip():
            continue
        if len(raw) > max_line:
            stats.oversized += 1
            continue
        if len(events) >= limit:
            stats.excess += 1
            continue
        try:
            events.append(_event_adapter.validate_python(json.loads(raw)))
        except (ValueError, ValidationError, RecursionError):
            stats.malformed += 1
    stats.accepted = len(events)
    return events, stats


def read_events_file(workspace: Path) -> bytes:
    """The harness's event lines from a workspace copy: bounded, and never through a symlink."""
    path = workspace / EVENTS_FILE
    if not path.is_file() or path.is_symlink():
        return b""
    with path.open("rb") as fh:
        return fh.read(max_events * max_event_line_bytes)


def last_exception(events: list[Event]) -> ExceptionEvent | None:
    """The most recent exception event, which the repair loop shows the agent."""
    for event in reversed(events):
        if isinstance(event, ExceptionEvent):
            return event
    return None
