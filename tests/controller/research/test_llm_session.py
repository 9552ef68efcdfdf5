"""The front-end's LLM path: the real openai SDK against a real local HTTP endpoint (the fake).

Every role speaks through the model, malformed replies are asked again, every turn's tokens
and dollars are what the endpoint reported, and the rules no model can talk around still
hold: invented citations vanish, the power numbers are arithmetic, a too-close idea goes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from controller.llm import LLMClient, RetryPolicy
from controller.plan import Plan
from controller.power import estimate
from controller.registry import ResearchConfig, RunConfig
from controller.research.frontend import FrontEnd
from controller.store import RunStore
from controller.tasks import load_task
from tests.controller.fake_openai import FakeOpenAI, Reply

MODEL = "gpt-4o-mini"
TOPIC = "data augmentation for small digit datasets"
FAST = RetryPolicy(attempts=2, backoff_base_s=0.01, backoff_max_s=0.02, retry_after_max_s=0.1)
SUMMARY = {
    "task": "small-data image classification",
    "method": "an augmentation",
    "result": "a gain",
    "limitations": "one dataset",
    "relevance": 0.7,
    "critique": "relevant to the topic",
}


def _reply(payload: Any, prompt: int, completion: int) -> Reply:
    text = payload if isinstance(payload, str) else json.dumps(payload)
    return Reply(text, prompt_tokens=prompt, completion_tokens=completion)


def _hypothesis(hid: str, statement: str, modules: dict[str, str], cites: list[str]) -> dict[str, Any]:
    return {
        "id": hid,
        "statement": statement,
        "modules": modules,
        "expected_effect": 0.02,
        "citations": cites,
        "rationale": "from the papers",
    }


def _front_end(tmp_path: Path, fake: FakeOpenAI) -> FrontEnd:
    config = RunConfig(budget_s=1800, report_reserve_s=60, agent="llm", model=MODEL,
                       research=ResearchConfig(topic=TOPIC, sources=[]))  # fmt: skip
    runs = tmp_path / "runs"
    store = RunStore.open(runs, "r1") if (runs / "r1").is_dir() else RunStore.create(runs, config, "r1")[0]
    client = LLMClient(MODEL, base_url=fake.base_url, api_key="k", retry=FAST, cache_dir=store.root / "llm-cache")
    return FrontEnd(store, config, load_task("digits"), client, lambda line: None)


def test_every_role_speaks_through_the_model_and_the_costs_add_up(tmp_path: Path) -> None:
    with FakeOpenAI() as fake:
        front = _front_end(tmp_path, fake)
        papers = front.search()
        keys = [p.key for p in papers]
        copied = next(p for p in papers if p.key == "devries2017improved")
        proposal = {
            "objective": "find what helps a tiny digit set",
            "hypotheses": [
                _hypothesis(
                    "shifts",
                    "Random shifts help a tiny digit set.",
                    {"augment": "random 1-pixel shifts"},
                    [keys[0], "made2024up"],
                ),
                _hypothesis("copy", f"{copied.title}. {copied.summary}", {"augment": "cutout of a square patch"}, []),
            ],
            "baseline_rationale": "the task's CNN",
            "baseline_citations": [keys[1]],
        }
        engineer = {"note": "every claim is adequately powered at n = 2 (not true: the code decides)"}
        keep_all = {"summary": "fine", "verdicts": [{"hypothesis": "shifts", "decision": "keep"},
                                                    {"hypothesis": "copy", "decision": "keep"}]}  # fmt: skip
        revised = {**proposal, "hypotheses": [proposal["hypotheses"][0]]}
        approve = {"summary": "approved", "verdicts": [{"hypothesis": "shifts", "decision": "keep"}]}
        usage = [(100 + i, 20 + i) for i in range(len(papers))]
        fake.script(*[_reply(SUMMARY, p, c) for p, c in usage])
        fake.script(
            _reply("not json at all", 300, 10),  # malformed: asked again
            _reply(proposal, 400, 200),
            _reply(engineer, 500, 60),
            _reply(keep_all, 600, 70),
            _reply(revised, 700, 210),
            _reply(engineer, 510, 61),
            _reply(approve, 610, 71),
        )
        plan = front.run()
        client = front.client
        assert client is not None and fake.pending == 0 and not fake.unscripted
        root = front.store.root
        turns = [json.loads(line) for line in (root / "planning/session.jsonl").read_text().splitlines()]
        assert [t["role"] for t in turns] == ["pi", "engineer", "reviewer", "pi", "engineer", "reviewer"]
        assert all(t["origin"] == "llm" for t in turns)
        cost = client.prices.cost_usd
        expected = [(300 + 400, 10 + 200), (500, 60), (600, 70), (700, 210), (510, 61), (610, 71)]
        assert [t["tokens"] for t in turns] == [p + c for p, c in expected]
        # the malformed reply and its error went back to the model with the second request
        retry = fake.requests[len(papers) + 1]["messages"]
        assert any(m["content"] == "not json at all" for m in retry) and "invalid" in retry[-1]["content"]
        summaries = [json.loads(line) for line in (root / "literature/summaries.jsonl").read_text().splitlines()]
        assert all(s["origin"] == "llm" for s in summaries) and len(summaries) == len(papers)
        assert [s["tokens"] for s in summaries] == [p + c for p, c in usage]
        spent = sum(s["cost_usd"] for s in summaries) + sum(t["cost_usd"] for t in turns)
        exact = (
            sum(cost(MODEL, p, c) for p, c in usage)
            + cost(MODEL, 300, 10)
            + sum(cost(MODEL, p, c) for p, c in expected[1:])
            + cost(MODEL, 400, 200)
        )
        assert abs(spent - client.usage.cost_usd) < 1e-12 and abs(spent - exact) < 1e-12
        # the rules no model talks around
        assert Plan.model_validate(plan.model_dump()) == plan
        assert [h.id for h in plan.hypotheses] == ["shifts"]  # "copy" restates DeVries and Taylor: dropped
        first_review = turns[2]["data"]["verdicts"]
        assert next(v for v in first_review if v["hypothesis"] == "copy")["decision"] == "drop"
        assert plan.hypotheses[0].citations == [keys[0]]  # the invented key is gone
        assert plan.rationale is not None and plan.rationale.baseline_citations == [keys[1]]
        family = len(plan.hypotheses[0].components()) + 1
        truth = estimate(front.task.prior.baseline_sd, 0.02, 3, family=family)  # type: ignore[union-attr]
        assert plan.hypotheses[0].seeds_needed == truth.seeds_needed
        assert plan.hypotheses[0].power.startswith(truth.describe())


def test_a_resumed_session_replays_from_the_cache_at_no_cost(tmp_path: Path) -> None:
    with FakeOpenAI() as fake:
        front = _front_end(tmp_path, fake)
        papers = front.search()
        proposal = {
            "objective": "o",
            "hypotheses": [_hypothesis("shifts", "Random shifts help.", {"augment": "shifts"}, [papers[0].key])],
        }
        fake.script(*[_reply(SUMMARY, 100, 20) for _ in papers])
        fake.script(
            _reply(proposal, 400, 200),
            _reply({"note": "ok"}, 500, 60),
            _reply({"summary": "ok", "verdicts": [{"hypothesis": "shifts", "decision": "keep"}]}, 600, 70),
        )
        front.run()
        asked = fake.request_count
        session = (front.store.root / "planning/session.jsonl").read_text()
        (front.store.root / "plan.json").unlink(missing_ok=True)
        again = _front_end(tmp_path, fake)
        again.run()
        assert fake.request_count == asked  # nothing asked twice
        replayed = [json.loads(line) for line in (front.store.root / "planning/session.jsonl").read_text().splitlines()]
        assert [t["content"] for t in replayed] == [json.loads(line)["content"] for line in session.splitlines()]
        assert again.client is not None and again.client.usage.cost_usd == 0 and again.client.usage.cache_hits >= 3
