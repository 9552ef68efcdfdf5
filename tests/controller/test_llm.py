"""The LLM client against a local fake OpenAI server, through the real SDK over HTTP."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from controller.errors import BudgetExceededError
from controller.llm import (
    ChatMessage,
    LLMClient,
    LLMOutputError,
    LLMRequestError,
    LLMUnavailableError,
    LLMUsage,
    PriceTable,
    RetryPolicy,
    extract_json,
)
from tests.controller.fake_openai import FakeOpenAI, Fault, Reply, Stall

FAST_RETRY = RetryPolicy(attempts=3, backoff_base_s=0.01, backoff_max_s=0.05, retry_after_max_s=3)
HELLO: list[ChatMessage] = [{"role": "user", "content": "hello"}]


class Verdict(BaseModel):
    name: str
    score: int


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server
        assert not server.unscripted, "a request arrived that the test did not script"


def make_client(fake: FakeOpenAI, **overrides: object) -> LLMClient:
    options: dict[str, object] = {"retry": FAST_RETRY, "timeout_s": 5.0, **overrides}
    return LLMClient("gpt-4o-mini", base_url=fake.base_url, api_key="test-key", **options)  # type: ignore[arg-type]


def test_client_is_built_without_sdk_retries(fake: FakeOpenAI) -> None:
    assert make_client(fake).client.max_retries == 0


def test_rate_limit_waits_for_retry_after_then_succeeds(fake: FakeOpenAI) -> None:
    fake.script(Fault(429, {"Retry-After": "1"}), Reply("ok"))
    client = make_client(fake)
    started = time.monotonic()
    assert client.complete(HELLO) == "ok"
    assert time.monotonic() - started >= 1.0
    assert client.usage.retries == 1
    assert fake.request_count == 2


def test_retry_after_is_capped(fake: FakeOpenAI) -> None:
    fake.script(Fault(503, {"Retry-After": "600"}), Reply("ok"))
    client = make_client(fake, retry=FAST_RETRY.model_copy(update={"retry_after_max_s": 0.2}))
    started = time.monotonic()
    assert client.complete(HELLO) == "ok"
    assert 0.2 <= time.monotonic() - started < 5


def test_server_errors_are_retried_then_succeed(fake: FakeOpenAI) -> None:
    fake.script(Fault(500), Fault(502), Reply("recovered"))
    client = make_client(fake)
    assert client.complete(HELLO) == "recovered"
    assert client.usage.retries == 2
    assert client.usage.calls == 1


def test_timeout_is_retried(fake: FakeOpenAI) -> None:
    fake.script(Stall(seconds=3.0), Reply("second try"))
    client = make_client(fake, timeout_s=0.3)
    assert client.complete(HELLO) == "second try"
    assert client.usage.retries == 1
    assert fake.request_count == 2


def test_bad_request_is_not_retried(fake: FakeOpenAI) -> None:
    fake.script(Fault(400, message="unknown model"), Reply("never sent"))
    client = make_client(fake)
    with pytest.raises(LLMRequestError, match="HTTP 400"):
        client.complete(HELLO)
    assert fake.request_count == 1
    assert fake.pending == 1
    assert client.usage.retries == 0


def test_exhausted_retries_raise_unavailable_with_one_line_fix(fake: FakeOpenAI) -> None:
    fake.script(Fault(500), Fault(500), Fault(500))
    client = make_client(fake)
    with pytest.raises(LLMUnavailableError) as caught:
        client.complete(HELLO)
    message = str(caught.value)
    assert isinstance(caught.value, ConnectionError)
    assert "\n" not in message
    assert fake.base_url in message
    assert "after 3 tries" in message
    assert "OPENAI_BASE_URL" in message
    assert fake.request_count == 3
    assert client.usage.retries == 2
    assert client.usage.calls == 0


def test_unreachable_endpoint_raises_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = LLMClient(
        "gpt-4o-mini", base_url=f"http://127.0.0.1:{port}/v1", api_key="k", retry=FAST_RETRY, timeout_s=2.0
    )
    with pytest.raises(LLMUnavailableError, match="unreachable after 3 tries"):
        client.complete(HELLO)
    assert client.usage.retries == 2


def test_fake_fails_loudly_when_its_script_runs_out() -> None:
    with FakeOpenAI() as server:
        client = make_client(server, retry=RetryPolicy(attempts=1))
        with pytest.raises(LLMUnavailableError, match="HTTP 500"):
            client.complete(HELLO)
        assert server.unscripted == server.requests
        assert len(server.unscripted) == 1


def test_cost_is_tokens_times_price(fake: FakeOpenAI) -> None:
    fake.script(
        Reply("a", prompt_tokens=1200, completion_tokens=300), Reply("b", prompt_tokens=1200, completion_tokens=300)
    )
    deltas: list[LLMUsage] = []
    client = make_client(fake, on_usage=deltas.append)
    client.complete(HELLO)
    client.complete([{"role": "user", "content": "again"}])
    # gpt-4o-mini: $0.15 and $0.60 per million; 1200 * 0.15 + 300 * 0.60 = $360 per million.
    assert client.usage.cost_usd == pytest.approx(0.00072, rel=1e-12)
    assert (client.usage.prompt_tokens, client.usage.completion_tokens) == (2400, 600)
    assert client.usage.calls == 2
    assert [d.cost_usd for d in deltas] == pytest.approx([0.00036, 0.00036], rel=1e-12)


def test_price_table_matches_dated_names_and_falls_back_to_default() -> None:
    table = PriceTable()
    assert table.price_for("gpt-4o-mini-2024-07-18") == table.prices["gpt-4o-mini"]
    assert table.price_for("gpt-4o-2024-08-06") == table.prices["gpt-4o"]
    assert table.price_for("llama3:8b") == table.default


def test_cache_hit_makes_no_request_and_costs_nothing(fake: FakeOpenAI, tmp_path: Path) -> None:
    fake.script(Reply("first", prompt_tokens=100, completion_tokens=50), Reply("other"))
    make_client(fake, cache_dir=tmp_path).complete(HELLO)
    assert fake.request_count == 1

    fresh = make_client(fake, cache_dir=tmp_path)  # a new process would see the same disk
    assert fresh.complete(HELLO) == "first"
    assert fake.request_count == 1
    assert fresh.usage.cache_hits == 1
    assert fresh.usage.cost_usd == 0
    assert fresh.usage.calls == 0

    assert fresh.complete([{"role": "user", "content": "goodbye"}]) == "other"
    assert fake.request_count == 2
    assert fresh.usage.cache_hits == 1
    assert len(list(tmp_path.glob("*.json"))) == 2
    assert not list(tmp_path.glob(".*.tmp"))


def test_budget_callback_refuses_before_any_request(fake: FakeOpenAI) -> None:
    estimates: list[float] = []

    def refuse(estimated_usd: float) -> None:
        estimates.append(estimated_usd)
        msg = "budget spent"
        raise BudgetExceededError(msg)

    client = make_client(fake, before_call=refuse)
    with pytest.raises(BudgetExceededError):
        client.complete(HELLO)
    assert fake.request_count == 0
    assert len(estimates) == 1 and estimates[0] > 0  # priced before the call, from the prompt and a typical reply


def test_invalid_json_is_repaired_with_the_error_in_the_prompt(fake: FakeOpenAI) -> None:
    fake.script(
        Reply('{"name": "x", "score": '), Reply('Sure:\n```json\n{"name": "x", "score": 7}\n```\nHope that helps.')
    )
    verdict = make_client(fake).complete_structured(HELLO, Verdict)
    assert verdict == Verdict(name="x", score=7)
    assert fake.request_count == 2
    first, second = fake.requests
    assert '"score"' in first["messages"][0]["content"]  # the schema went in the system message
    repair = second["messages"][-1]["content"]
    assert "Expecting value" in repair
    assert second["messages"][-2] == {"role": "assistant", "content": '{"name": "x", "score": '}


def test_schema_violation_is_repaired_with_the_validation_error(fake: FakeOpenAI) -> None:
    fake.script(Reply('{"name": "x", "score": "high"}'), Reply('{"name": "x", "score": 3}'))
    assert make_client(fake).complete_structured(HELLO, Verdict).score == 3
    repair = fake.requests[1]["messages"][-1]["content"]
    assert "score" in repair
    assert "valid integer" in repair


def test_always_invalid_output_raises_after_max_repairs(fake: FakeOpenAI) -> None:
    fake.script(*[Reply("I cannot comply.")] * 3)
    with pytest.raises(LLMOutputError, match="after 3 tries") as caught:
        make_client(fake).complete_structured(HELLO, Verdict, max_repairs=2)
    assert "\n" not in str(caught.value)
    assert fake.request_count == 3


def test_extract_json_tolerates_fences_and_prose() -> None:
    assert extract_json('Here you go {"a": {"b": 1}} done') == {"a": {"b": 1}}
    assert extract_json('```\n{"a": 2}\n```') == {"a": 2}
    with pytest.raises(ValueError, match="no JSON object"):
        extract_json("no braces here")
