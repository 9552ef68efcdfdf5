"""The LLM agent through the real openai SDK and LLMClient, against the fake OpenAI server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.agents.base import GuardFailure, IterationOutcome
from controller.agents.llm_agent import LLMAgent, sanitize_id, strip_fences, unique_id
from controller.llm import LLMClient, LLMOutputError, RetryPolicy
from controller.plan import Hypothesis, ModuleCode, Plan
from controller.tasks import Task, load_task
from tests.controller.fake_openai import FakeOpenAI, Reply

FAST_RETRY = RetryPolicy(attempts=2, backoff_base_s=0.01, backoff_max_s=0.02, retry_after_max_s=0.1)
MODEL = "gpt-4o-mini"  # priced at $0.15 / $0.60 per million tokens

AUGMENT_CODE = "import torch\n\n\ndef augment(x: torch.Tensor) -> torch.Tensor:\n    return x.flip(-1)\n"
SHIFT = Hypothesis(id="shift", statement="Shifts help.", modules={"augment": "random 1-pixel shifts"})


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server
        assert not server.unscripted, "a request arrived that the test did not script"


@pytest.fixture(scope="module")
def task() -> Task:
    return load_task("digits")


def make_agent(fake: FakeOpenAI, *, max_repairs: int = 2, cache_dir: Path | None = None) -> LLMAgent:
    client = LLMClient(
        MODEL, base_url=fake.base_url, api_key="test-key", retry=FAST_RETRY, timeout_s=5.0, cache_dir=cache_dir
    )
    return LLMAgent(MODEL, client=client, max_repairs=max_repairs)


def reply(payload: dict[str, Any], **tokens: int) -> Reply:
    return Reply(json.dumps(payload), **tokens)


def user_prompt(request: dict[str, Any]) -> str:
    return "\n".join(m["content"] for m in request["messages"] if m["role"] == "user")


def all_text(request: dict[str, Any]) -> str:
    return "\n".join(m["content"] for m in request["messages"])


# -- plan --------------------------------------------------------------------------------


def test_plan_sanitizes_ids_and_drops_unknown_slots_and_hyper(fake: FakeOpenAI, task: Task) -> None:
    fake.script(
        reply(
            {
                "objective": "Beat the baseline.",
                "hypotheses": [
                    {
                        "id": "Shift + MLP Head!",
                        "statement": "Shifts and an MLP head help.",
                        "modules": {"augment": "random shifts", "head": "mlp 128", "tokenizer": "bpe"},
                        "hyper": {"lr": 0.01, "width": 64.0, "momentum": 0.9, "epochs": 12},
                        "success_threshold": 0.01,
                    },
                    {"id": "shift + mlp head", "statement": "Same id again.", "hyper": {"width": 48}},
                    {
                        "id": "!!!",
                        "statement": "Only unknown things.",
                        "modules": {"vocoder": "hifi-gan"},
                        "hyper": {"dropout": 0.5},
                    },
                    {"id": "___", "statement": "Bad id, real change.", "hyper": {"epochs": 20}},
                ],
            }
        )
    )
    plan = make_agent(fake).plan(task, [3, 4])

    assert isinstance(plan, Plan)
    assert plan.task == "digits"
    assert plan.seeds == [3, 4]
    assert plan.objective == "Beat the baseline."
    assert [h.id for h in plan.hypotheses] == ["shift-mlp-head", "shift-mlp-head-2", "h4"]
    first = plan.hypotheses[0]
    assert first.modules == {"augment": "random shifts", "head": "mlp 128"}
    assert first.hyper == {"lr": 0.01, "width": 64}  # unknown key and the no-op epochs dropped
    assert isinstance(first.hyper["width"], int)
    assert first.success_threshold == 0.01
    assert "metric" not in first.model_dump()  # the task's metric; nothing per hypothesis
    # The prompt names the exact contracts and the security context.
    sent = all_text(fake.requests[0])
    assert task.slots["augment"].contract in sent
    assert task.slots["head"].contract in sent
    assert "without network access" in sent
    assert "not trusted" in sent


def test_plan_with_nothing_testable_raises(fake: FakeOpenAI, task: Task) -> None:
    fake.script(
        reply(
            {
                "objective": "o",
                "hypotheses": [
                    {"id": "x", "statement": "Only unknown slots.", "modules": {"vocoder": "focal"}},
                ],
            }
        )
    )
    with pytest.raises(LLMOutputError, match="planned no hypothesis"):
        make_agent(fake).plan(task, [0])


def test_invalid_json_is_sent_back_then_valid_reply_is_used(fake: FakeOpenAI, task: Task) -> None:
    fake.script(
        Reply("Sure! Here is the plan: {objective: 'oops'"),
        reply({"objective": "o", "hypotheses": [{"id": "a", "statement": "s", "hyper": {"lr": 0.001}}]}),
    )
    plan = make_agent(fake).plan(task, [0])
    assert [h.id for h in plan.hypotheses] == ["a"]
    assert fake.request_count == 2
    retry_messages = fake.requests[1]["messages"]
    assert retry_messages[-2] == {"role": "assistant", "content": "Sure! Here is the plan: {objective: 'oops'"}
    assert "That reply was invalid" in retry_messages[-1]["content"]


# -- write_module ------------------------------------------------------------------------


def test_write_module_returns_code_and_sends_the_contract(fake: FakeOpenAI, task: Task) -> None:
    fake.script(reply({"code": AUGMENT_CODE}))
    module = make_agent(fake).write_module(task, "augment", SHIFT)
    assert module == ModuleCode(slot="augment", code=AUGMENT_CODE, origin="agent")
    prompt = user_prompt(fake.requests[0])
    assert task.slots["augment"].contract in prompt
    assert "`augment`" in prompt
    assert "random 1-pixel shifts" in prompt
    assert SHIFT.statement in prompt
    assert task.baseline_code("augment").strip() in prompt


def test_write_module_strips_an_opening_fence(fake: FakeOpenAI, task: Task) -> None:
    # A lone (unclosed) fence inside the code string: extract_json leaves it to the agent.
    fake.script(reply({"code": f"```python\n{AUGMENT_CODE}"}))
    module = make_agent(fake).write_module(task, "augment", SHIFT)
    assert module.code == AUGMENT_CODE


def test_write_module_strips_a_closed_fence_inside_the_json(fake: FakeOpenAI, task: Task) -> None:
    fenced = reply({"code": f"Here you go:\n```python\n{AUGMENT_CODE}```\nEnjoy."})
    fake.script(fenced, fenced)
    module = make_agent(fake, max_repairs=1).write_module(task, "augment", SHIFT)
    assert module.code == AUGMENT_CODE


def test_write_module_rejects_empty_code_then_accepts(fake: FakeOpenAI, task: Task) -> None:
    fake.script(reply({"code": "  \n"}), reply({"code": AUGMENT_CODE}))
    module = make_agent(fake).write_module(task, "augment", SHIFT)
    assert module.code == AUGMENT_CODE
    assert "code is empty" in fake.requests[1]["messages"][-1]["content"]


# -- repair ------------------------------------------------------------------------------

FAILURE = GuardFailure(
    stage="smoke",
    exception_type="AttributeError",
    message="'Tensor' object has no attribute 'flipp'",
    traceback="  smoke.py:20 in check_augment: y = augment(x.clone())\n"
    "> gen/augment.py:5 in augment: return x.flipp(-1)",
    stderr_tail="Traceback (most recent call last): ... AttributeError",
)
BROKEN = ModuleCode(slot="augment", code=AUGMENT_CODE.replace("flip", "flipp"), origin="agent")
LAST_GOOD = ModuleCode(slot="augment", code="def augment(x):\n    return x\n", origin="baseline")


def test_repair_sends_the_failure_and_returns_fixed_code(fake: FakeOpenAI, task: Task) -> None:
    fake.script(reply({"code": AUGMENT_CODE}))
    fixed = make_agent(fake).repair(task, "augment", SHIFT, BROKEN, FAILURE, LAST_GOOD)
    assert fixed == ModuleCode(slot="augment", code=AUGMENT_CODE, origin="repair")
    prompt = user_prompt(fake.requests[0])
    assert FAILURE.traceback in prompt
    assert FAILURE.message in prompt
    assert FAILURE.exception_type in prompt
    assert FAILURE.stderr_tail in prompt
    assert "stage: smoke" in prompt
    assert BROKEN.code.strip() in prompt
    assert task.slots["augment"].contract in prompt


TESTS = "from gen.augment import augment\n\n\ndef test_keeps_shape():\n    assert augment\n"


def test_a_module_may_come_with_its_own_tests_and_a_repair_may_fix_only_them(fake: FakeOpenAI, task: Task) -> None:
    fake.script(reply({"code": AUGMENT_CODE, "tests": f"```python\n{TESTS}```"}))
    module = make_agent(fake).write_module(task, "augment", SHIFT)
    assert module.tests == TESTS and module.digest == ModuleCode(slot="augment", code=AUGMENT_CODE).digest
    assert module.guard_digest != module.digest  # the guard's key covers the tests too
    assert "gen.augment import augment" in user_prompt(fake.requests[0])  # how to write them
    failing = FAILURE.model_copy(update={"stage": "tests", "exception_type": "GeneratedTestsFailedError"})
    fixed_tests = TESTS.replace("assert augment", "assert callable(augment)")
    fake.script(reply({"code": AUGMENT_CODE, "tests": fixed_tests}))
    repaired = make_agent(fake).repair(task, "augment", SHIFT, module, failing, LAST_GOOD)
    assert repaired.origin == "repair" and repaired.code == AUGMENT_CODE and repaired.tests == fixed_tests
    prompt = user_prompt(fake.requests[1])
    assert "stage: tests" in prompt and TESTS.strip() in prompt  # the failing tests are shown
    # a crash in training keeps the tests when the reply leaves them empty
    fake.script(reply({"code": AUGMENT_CODE + "\n# fixed\n", "tests": ""}))
    train_crash = FAILURE.model_copy(update={"stage": "train"})
    again = make_agent(fake).repair(task, "augment", SHIFT, repaired, train_crash, LAST_GOOD)
    assert again.tests == fixed_tests and again.code.endswith("# fixed\n")
    assert 'stage "train" means it passed the guard' in user_prompt(fake.requests[2])
    # the same code and the same tests again is no repair
    fake.script(reply({"code": AUGMENT_CODE + "\n# fixed\n", "tests": ""}))
    assert make_agent(fake).repair(task, "augment", SHIFT, again, train_crash, LAST_GOOD).origin == "rollback"


def test_repair_trims_a_long_stderr_tail(fake: FakeOpenAI, task: Task) -> None:
    failure = FAILURE.model_copy(update={"stderr_tail": "HEAD" + "x" * 20_000 + "TAIL"})
    fake.script(reply({"code": AUGMENT_CODE}))
    make_agent(fake).repair(task, "augment", SHIFT, BROKEN, failure, LAST_GOOD)
    prompt = user_prompt(fake.requests[0])
    assert "HEAD" in prompt
    assert "TAIL" in prompt
    assert "characters cut" in prompt
    assert len(prompt) < 12_000


def test_repair_rolls_back_when_the_model_never_gives_valid_output(fake: FakeOpenAI, task: Task) -> None:
    fake.script(Reply("no json here"), Reply('{"nope": 1}'))
    fixed = make_agent(fake, max_repairs=1).repair(task, "augment", SHIFT, BROKEN, FAILURE, LAST_GOOD)
    assert fixed == ModuleCode(slot="augment", code=LAST_GOOD.code, origin="rollback")
    assert fake.request_count == 2


# -- refine and review -------------------------------------------------------------------


def outcome(hypothesis: Hypothesis, *, supported: bool = False) -> IterationOutcome:
    return IterationOutcome(
        iteration=1,
        hypothesis=hypothesis,
        supported=supported,
        arm_means={"baseline": 0.9512, f"novelty:{hypothesis.id}": 0.9634},
        baseline_mean=0.9512,
    )


PLAN = Plan(
    task="digits",
    objective="Beat the baseline.",
    hypotheses=[SHIFT, Hypothesis(id="wide", statement="Wider.", hyper={"width": 64})],
)


def test_refine_returns_none_on_stop(fake: FakeOpenAI, task: Task) -> None:
    # A hypothesis sent along with "stop" is ignored: the decision is what counts.
    fake.script(
        reply(
            {
                "decision": "stop",
                "reason": "nothing left worth trying",
                "hypothesis": {"id": "late", "statement": "s", "hyper": {"lr": 0.01}},
            }
        )
    )
    assert make_agent(fake).refine(task, PLAN, [outcome(SHIFT)]) is None
    prompt = user_prompt(fake.requests[0])
    assert "0.9634" in prompt  # the results reach the model
    assert "wide: Wider." in prompt  # so does the untried part of the plan


def test_refine_renames_a_repeated_id_and_sanitizes(fake: FakeOpenAI, task: Task) -> None:
    fake.script(
        reply(
            {
                "decision": "continue",
                "reason": "build on it",
                "hypothesis": {
                    "id": "Shift",
                    "statement": "Shifts with a head.",
                    "modules": {"augment": "shifts", "head": "mlp", "vocoder": "focal"},
                    "hyper": {"lr": 0.006},
                },
            }
        )
    )
    hypothesis = make_agent(fake).refine(task, PLAN, [outcome(SHIFT, supported=True)])
    assert hypothesis is not None
    assert hypothesis.id == "shift-2"
    assert hypothesis.modules == {"augment": "shifts", "head": "mlp"}
    assert hypothesis.hyper == {"lr": 0.006}


def test_refine_continue_without_hypothesis_is_repaired(fake: FakeOpenAI, task: Task) -> None:
    fake.script(
        reply({"decision": "continue"}),
        reply({"decision": "continue", "hypothesis": {"id": "wide", "statement": "Wider.", "hyper": {"width": 64}}}),
    )
    hypothesis = make_agent(fake).refine(task, PLAN, [outcome(SHIFT)])
    assert hypothesis is not None
    assert (hypothesis.id, hypothesis.hyper) == ("wide", {"width": 64})
    assert "needs a" in fake.requests[1]["messages"][-1]["content"]


def test_review_returns_summary(fake: FakeOpenAI, task: Task) -> None:
    fake.script(reply({"summary": "Shifts gained 1.2 points.", "next_idea": "Try cutout."}))
    review = make_agent(fake).review(task, outcome(SHIFT, supported=True))
    assert (review.summary, review.next_idea) == ("Shifts gained 1.2 points.", "Try cutout.")
    assert "supported" in user_prompt(fake.requests[0])


# -- usage and cache ---------------------------------------------------------------------


def test_usage_accumulates_tokens_and_cost(fake: FakeOpenAI, task: Task) -> None:
    fake.script(
        reply({"code": AUGMENT_CODE}, prompt_tokens=1000, completion_tokens=500),
        reply({"summary": "fine"}, prompt_tokens=2000, completion_tokens=100),
    )
    agent = make_agent(fake)
    assert agent.usage is agent.client.usage
    agent.write_module(task, "augment", SHIFT)
    assert (agent.usage.calls, agent.usage.prompt_tokens, agent.usage.completion_tokens) == (1, 1000, 500)
    agent.review(task, outcome(SHIFT))
    assert agent.usage.calls == 2
    assert agent.usage.prompt_tokens == 3000
    assert agent.usage.completion_tokens == 600
    expected = (3000 * 0.15 + 600 * 0.60) / 1_000_000
    assert agent.usage.cost_usd == pytest.approx(expected)


def test_cached_requests_replay_without_calls(fake: FakeOpenAI, task: Task, tmp_path: Path) -> None:
    fake.script(reply({"code": AUGMENT_CODE}))
    first = make_agent(fake, cache_dir=tmp_path).write_module(task, "augment", SHIFT)
    again = make_agent(fake, cache_dir=tmp_path)
    assert again.write_module(task, "augment", SHIFT) == first
    assert fake.request_count == 1
    assert (again.usage.calls, again.usage.cache_hits, again.usage.cost_usd) == (0, 1, 0.0)


# -- helpers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Shift + MLP", "shift-mlp"),
        ("-_lead", "lead"),
        ("a" * 60, "a" * 48),
        ("!!!", "fallback"),
        ("ok_id-1", "ok_id-1"),
    ],
)
def test_sanitize_id(raw: str, expected: str) -> None:
    assert sanitize_id(raw, "fallback") == expected
    Hypothesis(id=sanitize_id(raw, "fallback"), statement="valid")


def test_unique_id_keeps_the_length_limit() -> None:
    long = "b" * 48
    assert unique_id(long, {long}) == "b" * 46 + "-2"
    assert unique_id("a", {"a", "a-2"}) == "a-3"
    assert unique_id("a", set()) == "a"


def test_strip_fences() -> None:
    assert strip_fences("x = 1") == "x = 1\n"
    assert strip_fences("```py\nx = 1\n```") == "x = 1\n"
    assert strip_fences("Here:\n```python\nx = 1\n```\nDone.") == "x = 1\n"
    assert strip_fences("```\nx = 1\n") == "x = 1\n"
