"""structlog set-up: JSON lines into the run's events.jsonl, with bound context."""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

import structlog

_open_files: list[TextIO] = []


def configure_run_logging(events_path: Path) -> None:
    """Send every structlog event to `events_path`, one JSON object a line."""
    for fh in _open_files:
        fh.close()
    _open_files.clear()
    events_path.parent.mkdir(parents=True, exist_ok=True)
    fh = events_path.open("a", buffering=1)
    _open_files.append(fh)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.WriteLoggerFactory(file=fh),
        cache_logger_on_first_use=False,
    )
