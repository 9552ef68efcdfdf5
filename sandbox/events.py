"""The event protocol between the harness (inside) and the host (outside).

The harness writes one JSON object a line with the standard library only; the host
validates every line against these models. Anything that does not validate is counted and
dropped: a job's output can never crash the host.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from sandbox.limits import max_event_line_bytes, max_events, stream_chunk_bytes

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
    """How many lines were accepted, how many were dropped and why."""

    model_config = ConfigDict(extra="forbid")

    accepted: int = 0
    accepted_bytes: int = 0
    """Bytes of the accepted lines, newlines included: what the event budget was charged."""
    malformed: int = 0
    oversized: int = 0
    excess: int = 0
    """Valid lines dropped past the count limit (`max_events`)."""
    over_budget: int = 0
    """Valid lines dropped because they did not fit in the byte budget (the policy's
    `output_cap`). The reader stops at the budget too, so lines written past it are never
    read; at least the one that straddles it is counted here."""


def parse_events(
    data: bytes,
    *,
    limit: int = max_events,
    max_line: int = max_event_line_bytes,
    max_total_bytes: int | None = None,
) -> tuple[list[Event], EventStats]:
    """Validate JSON lines; count and drop malformed, oversized, excess and over-budget ones.

    Memory stays bounded by the budget, not by `data`: lines are sliced one at a time, and
    a line is parsed only once it is known to fit.
    """
    events: list[Event] = []
    stats = EventStats()
    budget = max_total_bytes if max_total_bytes is not None else len(data) + 1
    for raw in _lines(data):
        if not raw.strip():
            continue
        if len(raw) > max_line:
            stats.oversized += 1
            continue
        if len(events) >= limit:
            stats.excess += 1
            continue
        cost = len(raw) + 1  # with its newline, as the bytes were counted when read
        if stats.accepted_bytes + cost > budget:
            stats.over_budget += 1
            continue
        try:
            events.append(_event_adapter.validate_python(json.loads(raw)))
        except (ValueError, ValidationError, RecursionError):
            stats.malformed += 1
            continue
        stats.accepted_bytes += cost
    stats.accepted = len(events)
    return events, stats


def _lines(data: bytes) -> Iterator[bytes]:
    """The lines of `data`, one slice at a time (`splitlines` would copy it all at once)."""
    start = 0
    while start < len(data):
        end = data.find(b"\n", start)
        if end < 0:
            end = len(data)
        yield data[start:end].rstrip(b"\r")
        start = end + 1


def read_events_file(workspace: Path, max_bytes: int) -> tuple[bytes, int]:
    """The harness's event lines from a workspace copy within a byte budget, and how many
    lines lay beyond it (counted while streaming past them, never held).

    At most `max_bytes` are kept, plus the rest of the line that straddles the budget
    (itself at most one line's cap), so that line is counted as over budget rather than as
    malformed. Never read through a symlink.
    """
    path = workspace / EVENTS_FILE
    if not path.is_file() or path.is_symlink():
        return b"", 0
    unread = 0
    with path.open("rb") as fh:
        data = fh.read(max_bytes)
        if len(data) == max_bytes and not data.endswith(b"\n"):
            rest = fh.read(max_event_line_bytes + 1)
            cut = rest.find(b"\n")
            data += rest if cut < 0 else rest[: cut + 1]
            if cut >= 0:
                unread += rest[cut + 1 :].count(b"\n")
        last = b"\n"
        while chunk := fh.read(stream_chunk_bytes):
            unread += chunk.count(b"\n")
            last = chunk[-1:]
        if last != b"\n":
            unread += 1  # a final line without its newline
    return data, unread


def last_exception(events: list[Event]) -> ExceptionEvent | None:
    """The most recent exception event, which the repair loop shows the agent."""
    for event in reversed(events):
        if isinstance(event, ExceptionEvent):
            return event
    return None
