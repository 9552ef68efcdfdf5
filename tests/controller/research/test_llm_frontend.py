"""The research front-end through a model: the real openai SDK against the fake endpoint.

The literature stage is offline (built-in corpus, no network source); every summary and
every planning turn is a scripted reply, so each file the front-end writes can be checked
against what the model said and what the endpoint charged, and the session's hard rules
(citations, novelty, the findings memory, the Engineer's arithmetic) against a model that
tries to talk its way around them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from controller.llm import LLMClient, RetryPolicy
from controller.plan import Plan
from controller.power import estimate
from controller.registry import ResearchConfig, RunConfig
from controller.research import plan_from_literature
from controller.research.frontend import LLM_SUMMARIES
from controller.research.memory import Finding, record_findings
from controller.research.novelty import TOO_CLOSE
from controller.research.papers import Paper, dedupe
from controller.research.sources import builtin_corpus
from controller.store import RunStore
from controller.tasks import load_task
from tests.controller.fake_openai import FakeOpenAI, Reply

MODEL = "gpt-4o-mini"
TOPIC = "data augmentation for small digit classifiers"
FAST_RETRY = RetryPolicy(attempts=2, backoff_base_s=0.01, backoff_max_s=0.02, retry_after_max_s=0.1)
TASK = load_task("digits")
ROTATE = {
    "id": "rot-aug",
    "statement": "Small random rotations of each digit add pose variety the eight by eight grid lacks.",
    "modules": {"augment": "rotate each image by a random angle within 10 degrees"},
    "expected_effect": 0.02,
    "citations": ["simard2003best", "nosuch2099paper"],
}
WIDE = {"id": "wide", "statement": "Doubling the channels lets the trunk fit strokes better.", "hyper": {"width": 64}}
LONGER = {
    "id": "longer",
    "statement": "Twice the passes over the data let the small network converge further.",
    "hyper": {"epochs": 24},
    "expected_effect": 0.015,
    "citations": ["lecun1998gradient"],
}
GAIN = {
    "id": "gain-head",
    "statement": "A learned per-pixel gain mask in the head reweights stroke endpoints.",
    "modules": {"head": "multiply the features by a learned gain vector, then a linear layer"},
}


def _reply(payload: dict[str, Any], prompt: int = 300, completion: int = 60) -> Reply:
    return Reply(json.dumps(payload), prompt_tokens=prompt, completion_tokens=completion)


def _summaries(count: int) -> list[Reply]:
    """Summary replies, each with its own token counts (so a mix-up shows)."""
    text = {k: f"the paper's {k}" for k in ("task", "method", "result", "limitations", "critique")}
    return [_reply({**text, "relevance": 0.5}, prompt=200 + i, completion=40 + i) for i in range(count)]


def _proposal(*hypotheses: dict[str, Any]) -> dict[str, Any]:
    return {
        "objective": "Raise validation accuracy on digits with better augmentation.",
        "hypotheses": list(hypotheses),
        "baseline_rationale": "The task's small CNN is the reference [lecun1998gradient].",
        "baseline_citations": ["lecun1998gradient", "made2024up"],
    }


def _review(**decisions: str) -> dict[str, Any]:
    verdicts = [{"hypothesis": h, "decision": d, "reasons": [f"reviewer says {d}"]} for h, d in decisions.items()]
    return {"summary": "Reviewed.", "verdicts": verdicts}


def _engineer(note: str = "Every hypothesis is adequately powered at n = 2 seeds.") -> dict[str, Any]:
    return {"note": note, "seeds_needed": 2, "power": "adequately powered"}  # the last two must be ignored


def _setup(tmp_path: Path, per_source: int, rounds: int) -> tuple[RunStore, RunConfig, list[Paper]]:
    research = ResearchConfig(topic=TOPIC, sources=[], per_source=per_source, rounds=rounds)
    config = RunConfig(budget_s=3600, research=research)
    store, _ = RunStore.create(tmp_path / "runs", config, "r1")
    return store, config, dedupe(builtin_corpus().search(TOPIC, per_source))  # what the front-end will find


def _client(fake: FakeOpenAI, store: RunStore) -> LLMClient:
    cache = store.root / "llm-cache"
    return LLMClient(MODEL, base_url=fake.base_url, api_key="test-key", retry=FAST_RETRY, cache_dir=cache)


def _plan(store: RunStore, config: RunConfig, client: LLMClient) -> Plan:
    plan = plan_from_literature(store, config, TASK, client, lambda _line: None)
    store.write("plan.json", plan)  # as the loop and `controller plan` do
    return plan


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _spent(client: LLMClient, *replies: Reply) -> tuple[int, float]:
    tokens = sum(r.prompt_tokens + r.completion_tokens for r in replies)
    return tokens, sum(client.prices.cost_usd(MODEL, r.prompt_tokens, r.completion_tokens) for r in replies)


def test_every_role_speaks_through_the_model_and_every_call_is_accounted(tmp_path: Path) -> None:
    store, config, papers = _setup(tmp_path, per_source=14, rounds=2)
    keys = {p.key for p in papers}
    assert len(papers) > LLM_SUMMARIES and {"simard2003best", "lecun1998gradient"} <= keys
    summaries = _summaries(LLM_SUMMARIES)
    turns = [
        _reply(_proposal(ROTATE, WIDE), prompt=1500, completion=400),
        _reply(_engineer(), prompt=1200, completion=90),
        _reply(_review(**{"rot-aug": "keep", "wide": "drop"}), prompt=1400, completion=120),
        _reply(_proposal(ROTATE, LONGER), prompt=1700, completion=410),
        _reply(_engineer(), prompt=1250, completion=95),
        _reply(_review(**{"rot-aug": "keep", "longer": "keep"}), prompt=1450, completion=130),
    ]
    with FakeOpenAI() as fake:
        fake.script(*summaries, *turns)
        client = _client(fake, store)
        plan = _plan(store, config, client)
        assert fake.unscripted == [] and fake.pending == 0
        requests = list(fake.requests)

    # the most relevant papers were summarised by the model, each line with its own call's cost
    written = {s["key"]: s for s in _lines(store.root / "literature" / "summaries.jsonl")}
    assert {p["key"] for p in _lines(store.root / "literature" / "papers.jsonl")} == keys == set(written)
    assert sum(s["origin"] == "llm" for s in written.values()) == LLM_SUMMARIES
    for request, reply in zip(requests, summaries, strict=False):
        match = re.search(r"Paper \[([^\]]+)\]", request["messages"][-1]["content"])
        assert match is not None
        line = written[match.group(1)]
        assert line["origin"] == "llm" and line["method"] == "the paper's method"
        assert (line["tokens"], line["cost_usd"]) == pytest.approx(_spent(client, reply), abs=1e-12)
    assert all(s["tokens"] == 0 for s in written.values() if s["origin"] == "offline")

    session = _lines(store.root / "planning" / "session.jsonl")
    assert [(t["round"], t["role"]) for t in session] == [
        (1, "pi"),
        (1, "engineer"),
        (1, "reviewer"),
        (2, "pi"),
        (2, "engineer"),
        (2, "reviewer"),
    ]
    for turn, reply in zip(session, turns, strict=True):
        assert turn["origin"] == "llm"
        assert (turn["tokens"], turn["cost_usd"]) == pytest.approx(_spent(client, reply), abs=1e-12)
    assert "wide" in session[2]["hypotheses"] and session[2]["data"]["verdicts"][1]["decision"] == "drop"
    total = sum(s["cost_usd"] for s in written.values()) + sum(t["cost_usd"] for t in session)
    assert total == pytest.approx(client.usage.cost_usd, abs=1e-12)
    tokens = sum(s["tokens"] for s in written.values()) + sum(t["tokens"] for t in session)
    assert tokens == client.usage.prompt_tokens + client.usage.completion_tokens

    # the plan: the model's words, citations cut to retrieved papers, the Engineer's numbers
    saved = Plan.model_validate_json((store.root / "plan.json").read_text())
    assert saved == plan and [h.id for h in plan.hypotheses] == ["rot-aug", "longer"]
    assert plan.rationale is not None and plan.rationale.baseline_citations == ["lecun1998gradient"]
    rotate, longer = plan.hypotheses
    assert rotate.citations == ["simard2003best"] and longer.citations == ["lecun1998gradient"]
    assert TASK.prior is not None
    for hypothesis, claimed in ((rotate, 0.02), (longer, 0.015)):
        arms = 2 + len(hypothesis.components())
        power = estimate(TASK.prior.baseline_sd, claimed, len(config.seeds), family=arms - 1)
        assert hypothesis.expected_effect == claimed and hypothesis.seeds_needed == power.seeds_needed
        assert hypothesis.power.startswith(power.describe()) and "n = 2 " not in hypothesis.power
        assert f"over the run's {len(config.seeds)} seeds" in hypothesis.stopping
    assert not estimate(TASK.prior.baseline_sd, 0.02, 3, family=2).adequate  # so the model's claim was false
    assert "adequately powered at n = 2" in session[4]["content"] and rotate.power in session[4]["content"]


def test_a_malformed_reply_is_asked_again_and_both_calls_are_charged_to_the_turn(tmp_path: Path) -> None:
    store, config, papers = _setup(tmp_path, per_source=3, rounds=1)
    bad_pi = Reply("I would try rotations first.", prompt_tokens=900, completion_tokens=12)
    good_pi = _reply(_proposal(ROTATE), prompt=1000, completion=300)
    bad_engineer = _reply({"ablate": []}, prompt=800, completion=5)  # no "note": fails the schema
    good_engineer = _reply(_engineer(), prompt=850, completion=70)
    review = _reply(_review(**{"rot-aug": "keep"}))
    with FakeOpenAI() as fake:
        fake.script(*_summaries(len(papers)), bad_pi, good_pi, bad_engineer, good_engineer, review)
        client = _client(fake, store)
        plan = _plan(store, config, client)
        assert fake.unscripted == [] and fake.pending == 0
        requests = list(fake.requests)[len(papers) :]

    first, again = requests[0]["messages"], requests[1]["messages"]
    assert again[: len(first)] == first
    assert again[len(first)] == {"role": "assistant", "content": bad_pi.text}
    assert "That reply was invalid" in again[-1]["content"] and "no JSON object found" in again[-1]["content"]
    repair = requests[3]["messages"][-1]["content"]
    assert requests[3]["messages"][-2]["content"] == bad_engineer.text and "note" in repair and "required" in repair
    pi, engineer, _ = _lines(store.root / "planning" / "session.jsonl")
    assert (pi["tokens"], pi["cost_usd"]) == pytest.approx(_spent(client, bad_pi, good_pi), abs=1e-12)
    spent_engineer = _spent(client, bad_engineer, good_engineer)
    assert (engineer["tokens"], engineer["cost_usd"]) == pytest.approx(spent_engineer, abs=1e-12)
    assert [h.id for h in plan.hypotheses] == ["rot-aug"]


def test_the_hard_rules_overrule_a_reviewer_model_that_keeps_everything(tmp_path: Path) -> None:
    store, config, papers = _setup(tmp_path, per_source=3, rounds=1)
    copied = papers[0]
    assert copied.summary
    copycat = {"id": "copycat", "statement": copied.summary, "modules": {"augment": "as the paper describes"}}
    retest = {**LONGER, "retest_reason": "the earlier test trained with a tenth of the learning rate"}
    refuted = [
        Finding(
            run_id="r0", task=TASK.name, dataset="digits", hypothesis=h, statement="", verdict="refuted", effect=-0.002
        )
        for h in ("wide", "longer")
    ]
    record_findings(tmp_path / "runs" / "memory.jsonl", refuted)
    with FakeOpenAI() as fake:
        fake.script(
            *_summaries(len(papers)),
            _reply(_proposal(copycat, WIDE, retest, GAIN)),
            _reply(_engineer()),
            _reply(_review(copycat="keep", wide="keep", longer="keep", **{"gain-head": "keep"})),
        )
        plan = _plan(store, config, _client(fake, store))
        assert fake.unscripted == [] and fake.pending == 0
        pi_prompt = fake.requests[len(papers)]["messages"][-1]["content"]
    assert "- wide (r0): refuted" in pi_prompt  # the model was told, and still proposed it

    assert [h.id for h in plan.hypotheses] == ["longer", "gain-head"]
    assert plan.hypotheses[0].retest_reason == retest["retest_reason"]
    reviewer = _lines(store.root / "planning" / "session.jsonl")[-1]
    verdicts = {v["hypothesis"]: v for v in reviewer["data"]["verdicts"]}
    assert {h: v["decision"] for h, v in verdicts.items()} == {
        "copycat": "drop",
        "wide": "drop",
        "longer": "keep",
        "gain-head": "keep",
    }
    assert f"too close to [{copied.key}]" in verdicts["copycat"]["reasons"][0]
    assert verdicts["copycat"]["cited"] == [copied.key] and copied.key in reviewer["cited"]
    assert verdicts["wide"]["reasons"][0].startswith("refuted in run r0")
    assert verdicts["wide"]["reasons"][-1] == "reviewer says keep"  # the model's word, overruled
    novelty = json.loads((store.root / "literature" / "novelty.json").read_text())
    close = next(v for v in novelty["ideas"] if v["idea"] == "copycat")
    assert close["verdict"] == "too_close" and close["nearest"][0]["score"] >= TOO_CLOSE


def _plan_once(tmp_path: Path, fake: FakeOpenAI) -> tuple[RunStore, RunConfig]:
    """A whole LLM front-end, then plan.json deleted: what a resume after a crash finds."""
    store, config, papers = _setup(tmp_path, per_source=3, rounds=1)
    fake.script(
        *_summaries(len(papers)),
        _reply(_proposal(ROTATE, GAIN)),
        _reply(_engineer()),
        _reply(_review(**{"rot-aug": "keep", "gain-head": "keep"})),
    )
    _plan(store, config, _client(fake, store))
    assert fake.unscripted == [] and fake.pending == 0
    return store, config


def test_a_resumed_front_end_asks_the_model_nothing_again(tmp_path: Path) -> None:
    with FakeOpenAI() as fake:
        store, config = _plan_once(tmp_path, fake)
        plan = Plan.model_validate_json((store.root / "plan.json").read_text())
        session = _lines(store.root / "planning" / "session.jsonl")
        (store.root / "plan.json").unlink()
        asked = fake.request_count
        resumed = _plan(store, config, _client(fake, store))  # a new process: fresh client, same cache
        assert fake.request_count == asked and fake.unscripted == []
    assert resumed == plan
    again = _lines(store.root / "planning" / "session.jsonl")
    unpriced = [{k: v for k, v in t.items() if k not in {"tokens", "cost_usd"}} for t in session]
    assert [{k: v for k, v in t.items() if k not in {"tokens", "cost_usd"}} for t in again] == unpriced


def test_a_resumed_session_keeps_what_each_turn_cost(tmp_path: Path) -> None:
    with FakeOpenAI() as fake:
        store, config = _plan_once(tmp_path, fake)
        before = (store.root / "planning" / "session.jsonl").read_text()
        (store.root / "plan.json").unlink()
        _plan(store, config, _client(fake, store))
    assert (store.root / "planning" / "session.jsonl").read_text() == before
