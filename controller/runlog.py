"""structlog set-up: JSON lines into the run's events.jsonl, with bound context."""

from __future__ import annotations

import logging
import sys
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
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        logger_factory=structlog.WriteLoggerFactory(file=fh),
        cache_logger_on_first_use=False,
    )


def configure_cli_logging(level: int = logging.WARNING) -> None:
    """Outside a run, send warnings and errors to stderr: stdout belongs to the command
    (`sandbox exec --json` prints exactly one JSON object there)."""
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
