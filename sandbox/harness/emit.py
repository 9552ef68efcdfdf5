"""Event writer: one JSON object a line, appended to the workspace's events file."""

from __future__ import annotations

import json
import linecache
import os
import sys
import time
import traceback
from pathlib import Path
from types import TracebackType
from typing import Any

EVENTS_FILE = ".sandlab/events.jsonl"
MAX_MESSAGE_CHARS = 4000
MAX_FRAMES = 100
_HARNESS_DIR = str(Path(__file__).resolve().parent) + os.sep


class Emitter:
    """Appends events to a file; each write is flushed so a crash loses nothing."""

    def __init__(self, workspace: Path, generated_dirs: tuple[str, ...] = ("gen",)) -> None:
        path = workspace / EVENTS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        # Opened before any generated code runs; the job could still close or reopen it,
        # which is fine: the host treats every line as untrusted anyway.
        self._fh = path.open("a", encoding="utf-8")
        self._generated = tuple(str((workspace / d).resolve()) + os.sep for d in generated_dirs)

    def emit(self, kind: str, **fields: Any) -> None:
        """Write one event."""
        record = {"kind": kind, "ts": time.time(), **fields}
        self._fh.write(json.dumps(record, default=str) + "\n")
        self._fh.flush()

    def stage(self, stage: str, state: str, duration_s: float | None = None) -> None:
        """A stage started, passed or failed."""
        self.emit("stage", stage=stage, state=state, duration_s=duration_s)

    def metric(self, name: str, value: float, step: int | None = None) -> None:
        """A scalar for progress and curves."""
        self.emit("metric", name=name, value=float(value), step=step)

    def artifact(self, path: str, size: int | None = None) -> None:
        """A file written into the workspace."""
        self.emit("artifact", path=path, bytes=size)

    def exception(self, exc: BaseException, stage: str) -> None:
        """An exception with its frames; frames in generated modules are marked."""
        self.emit(
            "exception",
            stage=stage,
            type=type(exc).__qualname__,
            message=str(exc)[:MAX_MESSAGE_CHARS],
            frames=self._frames(exc.__traceback__, exc),
        )

    def finished(self, status: str, duration_s: float) -> None:
        """The harness is done."""
        self.emit("finished", status=status, duration_s=duration_s)

    def _frames(self, tb: TracebackType | None, exc: BaseException) -> list[dict[str, Any]]:
        frames = []
        for summary in traceback.extract_tb(tb)[-MAX_FRAMES:]:
            if summary.filename.startswith(_HARNESS_DIR):
                continue  # the harness's own frames tell the repair loop nothing
            frames.append(self._frame(summary.filename, summary.lineno or 0, summary.name))
        # A SyntaxError's location is not a frame; it is the most useful line of all.
        if isinstance(exc, SyntaxError) and exc.filename:
            frames.append(self._frame(exc.filename, exc.lineno or 0, "<module>"))
        return frames

    def _frame(self, filename: str, line: int, function: str) -> dict[str, Any]:
        resolved = str(Path(filename).resolve()) if not filename.startswith("<") else filename
        return {
            "file": filename,
            "line": line,
            "function": function,
            "source": linecache.getline(filename, line).strip()[:1000],
            "generated": resolved.startswith(self._generated),
        }

    def close(self) -> None:
        """Flush and close the file."""
        try:
            self._fh.close()
        except OSError:
            print("sandlab harness: could not close the events file", file=sys.stderr)
