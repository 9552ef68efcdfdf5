"""PoliteClient against a real local HTTP server: retries, Retry-After, pacing, the disk cache."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from controller.research.http import PoliteClient, RetryPolicy, parse_retry_after, shared_cache_dir
from controller.research.sources.base import SourceUnavailableError
from tests.controller.research.fakeapi import Answer, FakeAPI, refused_url

FAST_RETRY = RetryPolicy(attempts=4, backoff_base_s=0.01, backoff_max_s=0.05, retry_after_max_s=5.0)
PAYLOAD = {"data": [{"title": "Deep Residual Learning"}]}


@pytest.fixture
def api() -> Iterator[FakeAPI]:
    with FakeAPI() as fake:
        fake.route("/search", Answer(body=PAYLOAD))
        yield fake


def make_client(
    tmp_path: Path,
    *,
    cache: list[Path] | None = None,
    interval: float = 0.0,
    retry: RetryPolicy = FAST_RETRY,
    headers: dict[str, str] | None = None,
    secret_params: tuple[str, ...] = (),
) -> PoliteClient:
    return PoliteClient(
        "testsource",
        min_interval_s=interval,
        cache_dirs=cache if cache is not None else [tmp_path / "run-cache"],
        retry=retry,
        headers=headers,
        secret_params=secret_params,
    )


def test_a_429_with_retry_after_is_waited_out(api: FakeAPI, tmp_path: Path) -> None:
    api.fail("/search", 429, times=1, headers={"Retry-After": "1"})
    client = make_client(tmp_path)
    with capture_logs() as logs:
        started = time.monotonic()
        data = client.get_json(api.url("/search"), {"query": "resnet"})
        elapsed = time.monotonic() - started
    assert data == PAYLOAD
    assert elapsed >= 0.95
    assert api.count("/search") == 2
    assert client.requests_sent == 2
    retries = [e for e in logs if e["event"] == "literature.retry"]
    assert len(retries) == 1
    assert retries[0]["source"] == "testsource"
    assert retries[0]["status"] == "HTTP 429"
    assert retries[0]["wait_s"] >= 1.0


def test_retry_after_is_capped_by_the_policy(api: FakeAPI, tmp_path: Path) -> None:
    api.fail("/search", 503, times=1, headers={"Retry-After": "3600"})
    policy = FAST_RETRY.model_copy(update={"retry_after_max_s": 0.2})
    started = time.monotonic()
    assert make_client(tmp_path, retry=policy).get_json(api.url("/search")) == PAYLOAD
    assert 0.2 <= time.monotonic() - started < 2.0


def test_a_burst_of_503s_is_survived(api: FakeAPI, tmp_path: Path) -> None:
    api.fail("/search", 503, times=3)
    client = make_client(tmp_path)
    assert client.get_json(api.url("/search")) == PAYLOAD
    assert api.count("/search") == 4
    assert client.requests_sent == 4


@pytest.mark.parametrize("status", [500, 502, 504])
def test_server_errors_are_retried(api: FakeAPI, tmp_path: Path, status: int) -> None:
    api.fail("/search", status, times=1)
    assert make_client(tmp_path).get_json(api.url("/search")) == PAYLOAD
    assert api.count("/search") == 2


def test_a_source_down_for_good_raises_after_the_configured_attempts(api: FakeAPI, tmp_path: Path) -> None:
    api.fail("/search", 503)
    client = make_client(tmp_path, retry=FAST_RETRY.model_copy(update={"attempts": 3}))
    with pytest.raises(SourceUnavailableError) as raised:
        client.get_json(api.url("/search"), {"query": "x"})
    message = str(raised.value)
    assert "testsource" in message and "HTTP 503" in message and "3 tries" in message
    assert "\n" not in message
    assert api.count("/search") == 3
    assert client.requests_sent == 3
    assert not list((tmp_path / "run-cache").glob("*.json")), "a failure must not be cached"


def test_connection_refused_raises_after_the_configured_attempts(tmp_path: Path) -> None:
    client = make_client(tmp_path, retry=FAST_RETRY.model_copy(update={"attempts": 2}))
    with pytest.raises(SourceUnavailableError, match=r"testsource: ConnectError .* after 2 tries"):
        client.get_json(refused_url() + "/search")
    assert client.requests_sent == 2


def test_other_4xx_are_not_retried(api: FakeAPI, tmp_path: Path) -> None:
    api.fail("/search", 404, times=1)
    client = make_client(tmp_path)
    with pytest.raises(SourceUnavailableError, match="testsource: HTTP 404"):
        client.get_json(api.url("/search"))
    assert api.count("/search") == 1


def test_a_second_client_over_the_same_cache_sends_nothing(api: FakeAPI, tmp_path: Path) -> None:
    first = make_client(tmp_path)
    assert first.get_json(api.url("/search"), {"b": "2", "a": "1"}) == PAYLOAD
    second = make_client(tmp_path)
    assert second.get_json(api.url("/search"), {"a": "1", "b": "2"}) == PAYLOAD  # parameter order is irrelevant
    assert second.requests_sent == 0
    assert second.cache_hits == 1
    assert api.count() == 1
    second.get_json(api.url("/search"), {"a": "1", "b": "3"})
    assert api.count() == 2, "other parameters are another request"


def test_a_shared_cache_hit_is_copied_into_the_run_cache(api: FakeAPI, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    make_client(tmp_path, cache=[tmp_path / "run-a", shared]).get_json(api.url("/search"))
    assert len(list(shared.glob("*.json"))) == 1
    run_b = tmp_path / "run-b"
    client = make_client(tmp_path, cache=[run_b, shared])
    assert client.get_json(api.url("/search")) == PAYLOAD
    assert client.requests_sent == 0
    assert client.cache_hits == 1
    assert api.count() == 1
    assert {p.name for p in run_b.iterdir()} == {p.name for p in shared.iterdir()}
    entry = json.loads(next(run_b.glob("*.json")).read_text())
    assert entry["url"] == api.url("/search")


def test_secrets_stay_out_of_the_cache_key_and_files(api: FakeAPI, tmp_path: Path) -> None:
    client = make_client(tmp_path, headers={"x-api-key": "sekrit-key-123"}, secret_params=("mailto",))
    client.get_json(api.url("/search"), {"query": "q", "mailto": "me@example.org"})
    assert api.requests[0].headers["x-api-key"] == "sekrit-key-123"
    assert api.requests[0].query["mailto"] == "me@example.org"
    for path in (tmp_path / "run-cache").iterdir():
        text = path.read_bytes()
        assert b"sekrit" not in text and b"example.org" not in text
    other = make_client(tmp_path, headers={"x-api-key": "another-key"}, secret_params=("mailto",))
    other.get_json(api.url("/search"), {"query": "q", "mailto": "you@example.org"})
    assert other.cache_hits == 1 and api.count() == 1


def test_requests_are_spaced_by_the_minimum_interval_retries_included(api: FakeAPI, tmp_path: Path) -> None:
    api.route("/other", Answer(body={"ok": True}))
    api.fail("/other", 503, times=1)
    client = make_client(tmp_path, interval=0.3)
    client.get_json(api.url("/search"))
    client.get_json(api.url("/other"))  # a 503, then the answer: three requests in all
    arrivals = [r.at for r in api.requests]
    assert len(arrivals) == 3
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    assert all(gap >= 0.29 for gap in gaps), gaps


def test_a_body_that_is_not_json_is_refused_and_not_cached(api: FakeAPI, tmp_path: Path) -> None:
    api.route("/html", Answer(body="<html>maintenance</html>", content_type="text/html"))
    client = make_client(tmp_path)
    for _ in range(2):
        with pytest.raises(SourceUnavailableError, match="not JSON"):
            client.get_json(api.url("/html"))
    assert api.count("/html") == 2


def test_a_torn_cache_entry_is_a_miss(api: FakeAPI, tmp_path: Path) -> None:
    make_client(tmp_path).get_json(api.url("/search"))
    body = next((tmp_path / "run-cache").glob("*.body"))
    body.write_bytes(b'{"data": []}')
    client = make_client(tmp_path)
    assert client.get_json(api.url("/search")) == PAYLOAD
    assert client.requests_sent == 1


def test_get_bytes_refuses_a_body_over_the_cap(api: FakeAPI, tmp_path: Path) -> None:
    api.route("/big", Answer(body=b"x" * 5000))
    client = make_client(tmp_path)
    with pytest.raises(SourceUnavailableError, match="more than 1000 bytes"):
        client.get_bytes(api.url("/big"), max_bytes=1000)
    assert client.get_bytes(api.url("/big"), max_bytes=5000) == b"x" * 5000


def test_get_text_decodes_by_the_declared_charset(api: FakeAPI, tmp_path: Path) -> None:
    api.route("/latin", Answer(body="Léon Bottou".encode("latin-1"), content_type="text/plain; charset=iso-8859-1"))
    assert make_client(tmp_path).get_text(api.url("/latin")) == "Léon Bottou"


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2015, 10, 21, 7, 27, 30, tzinfo=UTC)
    assert parse_retry_after("1") == 1.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=now) == 30.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now=now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_the_shared_cache_follows_sandlab_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SANDLAB_CACHE_DIR", str(tmp_path))
    assert shared_cache_dir() == tmp_path / "literature"
    monkeypatch.delenv("SANDLAB_CACHE_DIR")
    assert shared_cache_dir() == Path.home() / ".cache" / "sandlab" / "literature"
