"""A small, honest fake web API served over real HTTP on 127.0.0.1, for literature tests.

    with FakeAPI() as api:
        api.route("/paper/search", Answer(body={"data": []}))      # the standing answer
        api.fail("/paper/search", 503, times=2)                    # ...after two 503s
        api.fail("/works", 503)                                    # always 503
        source = SemanticScholar(base_url=api.url(), ...)
        assert api.count("/paper/search") == 3
        api.requests[0].query["query"]

Every GET is logged (path, query, headers, arrival time) before it is answered. A path
with no route gets 404 and is also listed in `unrouted`: the fake never invents data.
`refused_url()` gives a URL where nothing listens (connection refused).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

LOCALHOST = "127.0.0.1"
SHUTDOWN_POLL_S = 0.02
"""How often serve_forever checks for shutdown; the stdlib's 0.5 s would slow every test."""


@dataclass(frozen=True)
class Answer:
    """One scripted response. `body` may be bytes, str (text/plain) or JSON-able (application/json)."""

    status: int = 200
    body: Any = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str | None = None
    """Overrides the type guessed from `body`."""

    def encoded(self) -> tuple[bytes, str]:
        if isinstance(self.body, bytes):
            return self.body, self.content_type or "application/octet-stream"
        if isinstance(self.body, str):
            return self.body.encode(), self.content_type or "text/plain; charset=utf-8"
        return json.dumps(self.body).encode(), self.content_type or "application/json"

    @classmethod
    def file(cls, path: Path, content_type: str) -> Answer:
        """A fixture file's bytes, served with `content_type`."""
        return cls(body=path.read_bytes(), content_type=content_type)


@dataclass(frozen=True)
class Request:
    """One request as the server saw it."""

    method: str
    path: str
    query: dict[str, str]
    """Decoded query parameters (the last value where a name repeats)."""
    headers: dict[str, str]
    """Header names in lower case."""
    at: float
    """time.monotonic() on arrival (same clock as the client under test)."""


class FakeAPI:
    """Scripted answers per path, over real HTTP on loopback; see the module docstring."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._standing: dict[str, Answer] = {}
        self._faults: dict[str, deque[Answer]] = {}
        self._forever: dict[str, Answer] = {}
        self.requests: list[Request] = []
        """Every request, in arrival order (answered or not)."""
        self.unrouted: list[Request] = []
        """Requests to a path with no route and no fault; a test should usually expect none."""
        self._server = ThreadingHTTPServer((LOCALHOST, 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(SHUTDOWN_POLL_S,), daemon=True)

    def url(self, path: str = "") -> str:
        """`http://127.0.0.1:<port>` + path."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}{path}"

    def route(self, path: str, answer: Answer) -> None:
        """Answer every GET of `path` (query ignored) with `answer`, once faults are spent."""
        with self._lock:
            self._standing[path] = answer

    def fail(
        self, path: str, status: int = 503, *, times: int | None = None, headers: dict[str, str] | None = None
    ) -> None:
        """The next `times` GETs of `path` get `status` (every one, forever, when None)."""
        fault = Answer(status=status, body={"error": f"scripted {status}"}, headers=headers or {})
        with self._lock:
            if times is None:
                self._forever[path] = fault
            else:
                self._faults.setdefault(path, deque()).extend([fault] * times)

    def count(self, path: str | None = None) -> int:
        """Requests received for `path` (all paths when None)."""
        with self._lock:
            return sum(1 for r in self.requests if path is None or r.path == path)

    def for_path(self, path: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def __enter__(self) -> FakeAPI:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def _answer(self, request: Request) -> Answer:
        with self._lock:
            self.requests.append(request)
            if request.path in self._forever:
                return self._forever[request.path]
            queued = self._faults.get(request.path)
            if queued:
                return queued.popleft()
            if request.path in self._standing:
                return self._standing[request.path]
            self.unrouted.append(request)
        return Answer(status=404, body={"error": f"no route for {request.path}"})

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real APIs do

            def log_message(self, format: str, *args: Any) -> None:
                """Keep pytest output clean."""

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                request = Request(
                    method="GET",
                    path=parts.path,
                    query=dict(parse_qsl(parts.query, keep_blank_values=True)),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    at=time.monotonic(),
                )
                answer = fake._answer(request)
                body, content_type = answer.encoded()
                try:
                    self.send_response(answer.status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(body)))
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up first

        return Handler


def refused_url() -> str:
    """A loopback URL where nothing listens, so a connection is refused at once."""
    with socket.socket() as probe:
        probe.bind((LOCALHOST, 0))
        port = probe.getsockname()[1]
    return f"http://{LOCALHOST}:{port}"
