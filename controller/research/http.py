"""A polite HTTP client for literature APIs: paced, retried, cached on disk.

One `PoliteClient` serves one source. It sends at most one request per `min_interval_s`
(retries included, since a retry is a request the server counts too), retries 429, 5xx
and connection failures with exponential backoff that honours `Retry-After`, and keeps
every successful answer in one or more cache folders: the run's own (first) and a shared
one across runs (later), so a rerun or a second run on the same question costs no request.

The cache key is the method, the URL and the sorted query parameters, never the headers:
an API key sent as a header can neither leak into the cache nor split it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from email.message import Message
from email.utils import parsedate_to_datetime
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx
import structlog
from pydantic import BaseModel, ConfigDict, ValidationError
from tenacity import RetryCallState, Retrying, retry_if_exception_type
from tenacity.wait import wait_exponential_jitter

from controller.llm import RetryPolicy
from controller.research.errors import SourceUnavailableError

__all__ = ["PoliteClient", "RetryPolicy", "parse_retry_after", "shared_cache_dir", "unavailable"]

log = structlog.get_logger(__name__)

ModelT = TypeVar("ModelT", bound=BaseModel)

CONNECT_ATTEMPTS = 2
"""Tries against a host that refuses connections or does not resolve (no network, wrong URL)."""
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
RETRY_AFTER_STATUSES = frozenset({429, 503})
DEFAULT_TIMEOUT_S = 30.0
MAX_RESPONSE_BYTES = 20 * 1024**2
"""Ceiling on a JSON or XML answer; a larger one is a broken or hostile server."""
MAGIC_WINDOW_BYTES = 1024
"""How far into a body a file signature may start (PDF allows leading junk up to 1 KiB)."""
USER_AGENT = "sandlab/0.1 (autonomous ML-research loop; literature search)"
Params = Mapping[str, str | int]
_REFUSAL_HINTS = {
    401: "the API key is missing or wrong",
    403: "the API key is missing or wrong, or access is forbidden",
    404: "no such resource; check the id and the base URL",
}
BodyCheck = Callable[[bytes, str], str | None]
"""Why a body (fetched from the URL given) must be refused and not cached; None to accept it."""


class CacheEntry(BaseModel):
    """The sidecar `<key>.json` beside a cached body `<key>.body`."""

    model_config = ConfigDict(extra="ignore")
    method: str
    url: str
    """The URL without query, then the parameters that made the key (no secret ones)."""
    params: list[tuple[str, str]]
    content_type: str
    body_sha256: str
    """Checked on every read, so a body torn by a crash (or edited by hand) is a miss."""
    fetched_at: str


def shared_cache_dir() -> Path:
    """`$SANDLAB_CACHE_DIR/literature`, else `~/.cache/sandlab/literature`."""
    root = os.environ.get("SANDLAB_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "sandlab") / "literature"


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP-date (RFC 9110)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; a naive one means the same
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class _RetryableStatus(Exception):
    """A transient HTTP status, raised inside the retry loop so tenacity sees it."""

    def __init__(self, status: int, retry_after_s: float | None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.retry_after_s = retry_after_s


_TRANSIENT_ERRORS = (_RetryableStatus, httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


def _describe(error: BaseException | None) -> str:
    if isinstance(error, _RetryableStatus):
        return f"HTTP {error.status}"
    return type(error).__name__ if error else "unknown"


def unavailable(message: str) -> SourceUnavailableError:
    """The error every source raises when it cannot answer."""
    return SourceUnavailableError(message)


def _not_json(body: bytes, url: str) -> str | None:
    try:
        json.loads(body)
    except ValueError as error:
        return f"{url} returned a body that is not JSON ({error}); is the base URL right?"
    return None


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


class PoliteClient:
    """GET requests for one source: paced, retried on transient failures, cached on disk."""

    def __init__(
        self,
        source: str,
        *,
        min_interval_s: float,
        cache_dirs: Sequence[Path] = (),
        headers: Mapping[str, str] | None = None,
        secret_params: Sequence[str] = (),
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.source = source
        self.min_interval_s = min_interval_s
        self.cache_dirs = list(cache_dirs)
        """The run's cache first, then shared ones; answers are written to all of them."""
        self.secret_params = frozenset(secret_params)
        """Query parameters (an e-mail, a token) kept out of the cache key and files."""
        self.retry = retry or RetryPolicy()
        self.requests_sent = 0
        """HTTP requests actually sent, retries and followed redirects included."""
        self.cache_hits = 0
        self._lock = threading.Lock()
        self._pace_lock = threading.Lock()
        self._last_sent: float | None = None
        self._http = httpx.Client(
            headers={"User-Agent": USER_AGENT, **(headers or {})},
            timeout=timeout_s,
            follow_redirects=True,
            transport=transport,
        )

    def get_json(self, url: str, params: Params | None = None) -> Any:
        """The decoded JSON answer; a body that is not JSON is a SourceUnavailableError."""
        body, _ = self._get(url, params, max_bytes=MAX_RESPONSE_BYTES, check=_not_json)
        return json.loads(body)

    def get_model(self, url: str, params: Params | None, model: type[ModelT]) -> ModelT:
        """The JSON answer validated as `model`; one of another shape is refused, not cached."""
        parsed: list[ModelT] = []

        def check(body: bytes, url: str) -> str | None:
            if (problem := _not_json(body, url)) is not None:
                return problem
            try:
                parsed.append(model.model_validate_json(body))
            except ValidationError as error:
                first = error.errors()[0]
                where = ".".join(str(part) for part in first["loc"]) or "top level"
                return f"{url} answered in an unexpected shape ({where}: {first['msg']}); has the API changed?"
            return None

        body, _ = self._get(url, params, max_bytes=MAX_RESPONSE_BYTES, check=check)
        return parsed[0] if parsed else model.model_validate_json(body)

    def get_text(self, url: str, params: Params | None = None, *, check: BodyCheck | None = None) -> str:
        """The answer as text, decoded by its declared charset (UTF-8 if none); `check` may
        refuse a body (an error page served with 200, say) before it is cached."""
        body, content_type = self._get(url, params, max_bytes=MAX_RESPONSE_BYTES, check=check)
        header = Message()
        header["content-type"] = content_type
        charset = header.get_content_charset() or "utf-8"
        try:
            return body.decode(charset, errors="replace")
        except LookupError:  # a charset Python does not know
            return body.decode("utf-8", errors="replace")

    def get_bytes(self, url: str, params: Params | None = None, *, max_bytes: int, magic: bytes | None = None) -> bytes:
        """The raw body, at most `max_bytes` long; with `magic`, a body whose first KiB lacks
        that signature (e.g. b"%PDF-") is refused and not cached."""

        def check(body: bytes, url: str) -> str | None:
            if magic is not None and magic not in body[:MAGIC_WINDOW_BYTES]:
                return f"{url} did not return the expected file type (no {magic!r} signature)"
            return None

        return self._get(url, params, max_bytes=max_bytes, check=check)[0]

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PoliteClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def cache_key(self, url: str, params: Params | None = None) -> tuple[str, str, list[tuple[str, str]]]:
        """(sha256 key, URL without query, sorted non-secret parameters) of a GET request."""
        full = httpx.URL(url).copy_merge_params(dict(params or {}))
        pairs = sorted((k, v) for k, v in full.params.multi_items() if k not in self.secret_params)
        bare = str(full.copy_with(query=None))
        key = hashlib.sha256(json.dumps(["GET", bare, pairs]).encode()).hexdigest()
        return key, bare, pairs

    def _get(
        self,
        url: str,
        params: Params | None,
        *,
        max_bytes: int,
        check: BodyCheck | None = None,
    ) -> tuple[bytes, str]:
        key, bare, pairs = self.cache_key(url, params)
        cached = self._cache_read(key)
        if cached is not None:
            problem = check(cached[0], bare) if check is not None else None
            if problem is None:
                with self._lock:
                    self.cache_hits += 1
                return cached
            # Cached under an older model, say: fetch it afresh.
            log.info("literature.cache_entry_refused", source=self.source, key=key, problem=problem)
        body, content_type = self._download(url, params, max_bytes)
        problem = check(body, bare) if check is not None else None
        if problem is not None:
            msg = f"{self.source}: {problem}"
            raise unavailable(msg)
        entry = CacheEntry(
            method="GET",
            url=bare,
            params=pairs,
            content_type=content_type,
            body_sha256=hashlib.sha256(body).hexdigest(),
            fetched_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        for folder in self.cache_dirs:
            self._cache_write(folder, key, entry, body)
        return body, content_type

    def _pace(self) -> None:
        """Block until `min_interval_s` has passed since this client's previous request."""
        with self._pace_lock:  # held while sleeping, so concurrent callers queue in turn
            now = time.monotonic()
            if self._last_sent is not None:
                wait = self._last_sent + self.min_interval_s - now
                if wait > 0:
                    time.sleep(wait)
            self._last_sent = time.monotonic()

    def _send_once(self, url: str, params: Params | None, max_bytes: int) -> tuple[bytes, str]:
        self._pace()
        with self._lock:
            self.requests_sent += 1
        with self._http.stream("GET", url, params=dict(params or {})) as response:
            if response.history:
                with self._lock:
                    self.requests_sent += len(response.history)
            status = response.status_code
            if status in RETRY_STATUSES:
                after = response.headers.get("retry-after") if status in RETRY_AFTER_STATUSES else None
                raise _RetryableStatus(status, parse_retry_after(after))
            if not response.is_success:
                raise unavailable(self._refusal(status, response.url))
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                raise unavailable(self._too_large(response.url, max_bytes))
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > max_bytes:
                    raise unavailable(self._too_large(response.url, max_bytes))
            return bytes(body), response.headers.get("content-type", "")

    def _download(self, url: str, params: Params | None, max_bytes: int) -> tuple[bytes, str]:
        policy = self.retry
        backoff = wait_exponential_jitter(
            multiplier=policy.backoff_base_s, max=policy.backoff_max_s, jitter=policy.backoff_base_s
        )

        def wait_s(state: RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            after = error.retry_after_s if isinstance(error, _RetryableStatus) else None
            floor = min(after, policy.retry_after_max_s) if after is not None else 0.0
            return max(backoff(state), floor)

        def log_retry(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            wait = state.next_action.sleep if state.next_action else 0.0
            log.warning(
                "literature.retry",
                source=self.source,
                status=_describe(error),
                wait_s=round(wait, 3),
                attempt=state.attempt_number,
            )

        def stop(state: RetryCallState) -> bool:
            """After `attempts` tries; a host that refuses or does not resolve is down after two."""
            error = state.outcome.exception() if state.outcome else None
            unreachable = isinstance(error, httpx.ConnectError) and state.attempt_number >= CONNECT_ATTEMPTS
            return unreachable or state.attempt_number >= policy.attempts

        retrying = Retrying(
            retry=retry_if_exception_type(_TRANSIENT_ERRORS),
            stop=stop,
            wait=wait_s,
            before_sleep=log_retry,
            reraise=True,
        )
        try:
            return retrying(self._send_once, url, params, max_bytes)
        except _TRANSIENT_ERRORS as error:
            tries = retrying.statistics.get("attempt_number", policy.attempts)
            bare = self.cache_key(url, params)[1]
            msg = (
                f"{self.source}: {_describe(error)} from {bare} after {tries} tries; "
                "the service is down or rate-limiting, try again later"
            )
            raise unavailable(msg) from error

    def _refusal(self, status: int, url: httpx.URL) -> str:
        hint = _REFUSAL_HINTS.get(status, "the server refused the request; retrying cannot help")
        return f"{self.source}: HTTP {status} from {url.copy_with(query=None)} ({hint})"

    def _too_large(self, url: httpx.URL, max_bytes: int) -> str:
        return f"{self.source}: {url.copy_with(query=None)} sent more than {max_bytes} bytes; refused"

    def _cache_read(self, key: str) -> tuple[bytes, str] | None:
        for index, folder in enumerate(self.cache_dirs):
            try:
                entry = CacheEntry.model_validate_json((folder / f"{key}.json").read_bytes())
                body = (folder / f"{key}.body").read_bytes()
            except (OSError, ValueError):
                continue  # a miss: absent, unreadable, or not ours
            if hashlib.sha256(body).hexdigest() != entry.body_sha256:
                continue
            for earlier in self.cache_dirs[:index]:  # a shared hit: keep a copy in the run's cache
                self._cache_write(earlier, key, entry, body)
            return body, entry.content_type
        return None

    def _cache_write(self, folder: Path, key: str, entry: CacheEntry, body: bytes) -> None:
        # The body goes first: the sidecar's presence (and its checksum) marks a complete entry.
        try:
            _write_atomic(folder / f"{key}.body", body)
            _write_atomic(folder / f"{key}.json", entry.model_dump_json(indent=1).encode())
        except OSError as error:  # a full or read-only cache must not lose the answer itself
            log.warning("literature.cache_write_failed", source=self.source, folder=str(folder), error=str(error))
