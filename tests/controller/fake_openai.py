"""A small, honest fake of an OpenAI-compatible endpoint, served over real HTTP.

Tests script a queue of responses (replies or faults) and read back every request body.
An unscripted request gets HTTP 500 and is recorded in `unscripted`: the fake never
invents a reply.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

LOCALHOST = "127.0.0.1"
DEFAULT_PROMPT_TOKENS = 10
DEFAULT_COMPLETION_TOKENS = 5
SHUTDOWN_POLL_S = 0.02
"""How often serve_forever checks for shutdown; the stdlib's 0.5 s would slow every test."""


@dataclass(frozen=True)
class Reply:
    """An assistant message with the usage the server reports for it."""

    text: str
    prompt_tokens: int = DEFAULT_PROMPT_TOKENS
    completion_tokens: int = DEFAULT_COMPLETION_TOKENS


def json_reply(payload: Any, prompt_tokens: int = 1000, completion_tokens: int = 200) -> Reply:
    """A reply whose content is `payload` as JSON."""
    return Reply(json.dumps(payload), prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)


def for_the_paper(request: dict[str, Any]) -> bool:
    """Whether a request is the end-of-run paper prose or review (which tests rarely script)."""
    text = "\n".join(m["content"] for m in request["messages"])
    return "research paper about an automated ML study" in text or "You are a reviewer for NeurIPS" in text


@dataclass(frozen=True)
class Fault:
    """An HTTP error status, e.g. `Fault(429, {"Retry-After": "1"})` or `Fault(500)`."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    message: str = "scripted fault"


@dataclass(frozen=True)
class Stall:
    """Hold the request for `seconds` (longer than the client's timeout), then answer."""

    seconds: float
    then: Reply = field(default_factory=lambda: Reply("late reply"))


Scripted = Reply | Fault | Stall


class FakeOpenAI:
    """`with FakeOpenAI() as fake: fake.script(Reply("hi")); ... fake.requests[0]["messages"]`."""

    def __init__(self) -> None:
        self._queue: deque[Scripted] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.requests: list[dict[str, Any]] = []
        """Every chat-completions body received, in order (faulted ones too)."""
        self.unscripted: list[dict[str, Any]] = []
        """Requests that arrived after the script ran out; a test should expect none."""
        self._server = ThreadingHTTPServer((LOCALHOST, 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(SHUTDOWN_POLL_S,), daemon=True)

    @property
    def base_url(self) -> str:
        """The `/v1` root to hand to the OpenAI SDK."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    @property
    def request_count(self) -> int:
        """How many chat-completions requests arrived."""
        with self._lock:
            return len(self.requests)

    def script(self, *responses: Scripted) -> None:
        """Append responses to the queue; each request consumes one."""
        with self._lock:
            self._queue.extend(responses)

    @property
    def pending(self) -> int:
        """Scripted responses not yet consumed."""
        with self._lock:
            return len(self._queue)

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def _next(self, body: dict[str, Any]) -> Scripted | None:
        with self._lock:
            self.requests.append(body)
            if self._queue:
                return self._queue.popleft()
            self.unscripted.append(body)
            return None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                """Keep pytest output clean."""

            def do_GET(self) -> None:
                if self.path.rstrip("/") == "/v1/models":
                    models = [{"id": "fake-model", "object": "model"}]
                    self._send_json(200, {"object": "list", "data": models})
                else:
                    self._send_json(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send_json(404, {"error": {"message": f"no route {self.path}"}})
                    return
                body: dict[str, Any] = json.loads(raw)
                item = fake._next(body)
                if item is None:
                    message = "fake OpenAI script exhausted: unscripted request"
                    self._send_json(500, {"error": {"message": message, "type": "fake_exhausted"}})
                elif isinstance(item, Fault):
                    self._send_json(item.status, {"error": {"message": item.message}}, item.headers)
                elif isinstance(item, Stall):
                    fake._stopping.wait(item.seconds)
                    self._send_reply(body, item.then)
                else:
                    self._send_reply(body, item)

            def _send_reply(self, body: dict[str, Any], reply: Reply) -> None:
                self._send_json(
                    200,
                    {
                        "id": f"chatcmpl-fake-{len(fake.requests)}",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": body.get("model", "fake-model"),
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": reply.text},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {
                            "prompt_tokens": reply.prompt_tokens,
                            "completion_tokens": reply.completion_tokens,
                            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
                        },
                    },
                )

            def _send_json(self, status: int, payload: object, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in (headers or {}).items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timed out) before a stalled reply was sent

        return Handler
