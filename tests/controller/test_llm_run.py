"""The LLM path through the whole loop: a real HTTP endpoint (the fake server), the real SDK.

What a researcher leaves overnight must survive the endpoint: a dead endpoint ends the run
`failed` with a report and resumable; the dollar cap is checked before every call; totals
only grow across a resume.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from controller.agents.llm_agent import LLMAgent
from controller.llm import LLMClient, RetryPolicy
from controller.store import RunStore
from tests.controller.fake_openai import FakeOpenAI, Reply
from tests.controller.fakes import FakeSandbox, make_loop

FAST_RETRY = RetryPolicy(attempts=2, backoff_base_s=0.01, backoff_max_s=0.02, retry_after_max_s=0.1)
PLAN = {
    "objective": "improve the head",
    "hypotheses": [
        {"id": "wide", "statement": "A wider trunk beats the baseline.", "hyper": {"width": 64}},
    ],
}


def _reply(payload: dict[str, Any], prompt: int = 100, completion: int = 50) -> Reply:
    return Reply(json.dumps(payload), prompt_tokens=prompt, completion_tokens=completion)


def _agent(fake: FakeOpenAI, store_root: Path) -> LLMAgent:
    client = LLMClient(
        "gpt-4o-mini",
        base_url=fake.base_url,
        api_key="test-key",
        retry=FAST_RETRY,
        cache_dir=store_root / "llm-cache",
    )
    return LLMAgent("gpt-4o-mini", client=client)


def test_a_dead_endpoint_fails_the_run_with_a_report_and_resume_continues(tmp_path: Path) -> None:
    root = tmp_path / "runs" / "r1"
    with FakeOpenAI() as fake:
        fake.script(_reply(PLAN))  # the plan; then the endpoint is gone (HTTP 500 for good)
        loop = make_loop(tmp_path, FakeSandbox(), seeds=2, agent=_agent(fake, root))
        state = loop.run()
        assert state.status == "failed"
        assert "LLMUnavailableError" in state.message and "resume" in state.message
        saved = RunStore(root).load_state()
        assert saved.status == "failed"
        assert (root / "report" / "summary.md").is_file() and (root / "best.json").is_file()
        before = saved.totals.model_copy()
        assert before.tokens == 150 and before.llm_calls == 1 and before.llm_retries >= 1
        events = [json.loads(line) for line in (root / "events.jsonl").read_text().splitlines()]
        retries = [e for e in events if e["event"] == "llm_retry"]
        assert retries and all(e["run_id"] == "r1" and "retry" in e and "attempt" not in e for e in retries)

        # the endpoint is back: resume replays what finished (the plan from plan.json) and goes on
        fake.script(
            _reply({"summary": "wider helped", "next_idea": ""}),
            _reply({"decision": "stop", "reason": "enough"}),
        )
        resumed = make_loop(tmp_path, FakeSandbox(), seeds=2, agent=_agent(fake, root))
        final = resumed.run()
        assert fake.pending == 0  # the loop's review and refine got the replies scripted for them
        # (the paper's prose and review also ask the model; unanswered, they fall back and say so)
    assert final.status == "finished"
    after = final.totals
    assert after.tokens == before.tokens + 300 and after.llm_calls == before.llm_calls + 2
    assert after.llm_cost_usd > before.llm_cost_usd and after.cost_usd >= before.cost_usd
    best = json.loads((root / "best.json").read_text())
    assert best["value"] is not None


def test_totals_never_decrease_when_a_resumed_run_gets_a_fresh_client(tmp_path: Path) -> None:
    root = tmp_path / "runs" / "r1"
    with FakeOpenAI() as fake:
        fake.script(_reply(PLAN))
        make_loop(tmp_path, FakeSandbox(), seeds=2, agent=_agent(fake, root)).run()
        spent = RunStore(root).load_state().totals
        # a new process: new client at zero usage; everything it replays comes from the cache
        fake.script(_reply({"summary": "ok", "next_idea": ""}), _reply({"decision": "stop", "reason": "done"}))
        loop = make_loop(tmp_path, FakeSandbox(), seeds=2, agent=_agent(fake, root))
        assert loop.state.totals.tokens == spent.tokens  # nothing refunded at wiring time
        final = loop.run()
    assert final.totals.tokens >= spent.tokens and final.totals.llm_cost_usd >= spent.llm_cost_usd


def test_the_dollar_cap_is_checked_before_every_llm_call(tmp_path: Path) -> None:
    root = tmp_path / "runs" / "r1"
    with FakeOpenAI() as fake:
        # each call really costs $0.0009 (2,000 + 1,000 tokens of gpt-4o-mini)
        fake.script(_reply(PLAN, prompt=2000, completion=1000), _reply({"summary": "never asked"}))
        loop = make_loop(tmp_path, FakeSandbox(), seeds=2, agent=_agent(fake, root), max_cost=0.0015)
        state = loop.run()
        requests = len(fake.requests)
    assert requests == 1  # the second call's estimate did not fit in what remained
    assert state.status == "finished"
    hits = [h for h in state.limits_hit if h.limit == "budget"]
    assert hits and "next LLM call" in hits[0].detail
    assert state.totals.cost_usd <= 0.0015
    assert (root / "report" / "summary.md").is_file()
