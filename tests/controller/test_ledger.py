"""The one ledger: admission, the dollar cap, and every per-iteration limit, each hit for real."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.agents.base import IterationOutcome
from controller.agents.offline import OfflineAgent
from controller.errors import BudgetExceededError
from controller.ledger import AdmissionRefusedError, IterationLimitError, IterationLimits, Ledger
from controller.llm import LLMUsage
from controller.loop import StagePolicies
from controller.plan import Hypothesis, ModuleCode, Review
from controller.registry import RunConfig, Totals
from controller.tasks import Task
from controller.wiring import stage_policies
from tests.controller.fakes import FakeClock, FakeSandbox, make_loop


def _ledger(**kwargs: object) -> tuple[Ledger, FakeClock]:
    clock = FakeClock()
    return Ledger(Totals(), wall_s=600, reserve_s=60, clock=clock, **kwargs), clock  # type: ignore[arg-type]


def test_admission_keeps_the_reserve_and_the_follow_up_job() -> None:
    ledger, clock = _ledger()
    assert ledger.admit(180, 30) == 180
    clock.now += 480  # 120 s left, 60 of them reserved
    assert ledger.admit(180, 30) == pytest.approx(60)
    with pytest.raises(AdmissionRefusedError, match="for its evaluation"):
        ledger.admit(180, 30, follow_up_s=40)  # 20 s would be left for training: not a unit
    assert ledger.admit(180, 30, final=True) == pytest.approx(120)  # the report may use the reserve


def test_the_dollar_cap_refuses_a_call_it_cannot_afford() -> None:
    ledger, _ = _ledger(max_cost_usd=1.0)
    ledger.before_llm_call(0.5)
    ledger.totals.cost_usd = 0.8
    with pytest.raises(BudgetExceededError, match="next LLM call"):
        ledger.before_llm_call(0.3)
    ledger.before_llm_call(0.1)
    ledger.totals.cost_usd = 1.0
    with pytest.raises(BudgetExceededError, match="cost cap"):
        ledger.check_cost()


def test_llm_spending_is_charged_as_deltas_so_totals_only_grow() -> None:
    ledger, _ = _ledger()
    ledger.totals.tokens, ledger.totals.llm_cost_usd, ledger.totals.cost_usd = 5000, 0.5, 0.5  # an earlier session
    client = LLMUsage()
    ledger.watch_llm(client)
    client.prompt_tokens, client.completion_tokens, client.cost_usd, client.calls = 100, 50, 0.01, 1
    ledger.charge_llm(client)
    ledger.charge_llm(client)  # charging twice adds nothing
    assert ledger.totals.tokens == 5150 and ledger.totals.llm_cost_usd == pytest.approx(0.51)
    fresh = LLMUsage()  # a resumed process: its client starts at zero
    ledger.watch_llm(fresh)
    ledger.charge_llm(fresh)
    assert ledger.totals.tokens == 5150 and ledger.totals.cost_usd == pytest.approx(0.51)


def test_iteration_limits_are_checked_in_order_and_reset_per_iteration() -> None:
    ledger, clock = _ledger(limits=IterationLimits(wall_s=100, attempts=2))
    ledger.check_iteration()  # outside an iteration nothing is limited
    ledger.start_iteration()
    ledger.reserve_attempt()
    ledger.reserve_attempt()
    with pytest.raises(IterationLimitError, match=r"iteration\.attempts"):
        ledger.check_iteration()
    ledger.start_iteration()
    ledger.check_iteration()
    clock.now += 100
    with pytest.raises(IterationLimitError, match=r"iteration\.wall_s"):
        ledger.check_iteration()


class PricedAgent(OfflineAgent):
    """Offline decisions that cost tokens and dollars, as an LLM's would."""

    def __init__(self, usd: float = 0.6, tokens: int = 1000) -> None:
        super().__init__()
        self.usage = LLMUsage()
        self.usd, self.tokens = usd, tokens

    def write_module(self, task: Task, slot: str, hypothesis: Hypothesis) -> ModuleCode:
        self.usage.cost_usd += self.usd
        self.usage.prompt_tokens += self.tokens
        self.usage.calls += 1
        return super().write_module(task, slot, hypothesis)


def _hits(tmp_path: Path, **kwargs: object) -> list[str]:
    loop = make_loop(tmp_path, FakeSandbox(), **kwargs)  # type: ignore[arg-type]
    state = loop.run()
    assert state.status == "finished" and (loop.store.root / "report" / "summary.md").is_file()
    return [hit.limit for hit in state.limits_hit]


def test_the_iteration_wall_limit_cuts_the_iteration(tmp_path: Path) -> None:
    assert "iteration.wall_s" in _hits(tmp_path, limits=IterationLimits(wall_s=30))


def test_the_iteration_attempts_limit_cuts_the_iteration(tmp_path: Path) -> None:
    assert "iteration.attempts" in _hits(tmp_path, limits=IterationLimits(attempts=4))


def test_the_iteration_gpu_seconds_limit_cuts_the_iteration(tmp_path: Path) -> None:
    base = stage_policies(RunConfig(budget_s=3600))
    gpu = StagePolicies(guard=base.guard, train=base.train.with_overrides(gpus=1), evaluate=base.evaluate)
    assert "iteration.gpu_s" in _hits(tmp_path, policies=gpu, limits=IterationLimits(gpu_s=12))


def test_the_iteration_cost_limit_counts_gpu_dollars(tmp_path: Path) -> None:
    base = stage_policies(RunConfig(budget_s=3600))
    gpu = StagePolicies(guard=base.guard, train=base.train.with_overrides(gpus=1), evaluate=base.evaluate)
    hits = _hits(tmp_path, policies=gpu, gpu_usd_per_hour=360.0, limits=IterationLimits(cost_usd=1.0))
    assert "iteration.cost_usd" in hits  # 5 s of one GPU at $360/h is $0.50 a job


def test_the_iteration_token_limit_counts_llm_tokens(tmp_path: Path) -> None:
    hits = _hits(tmp_path, agent=PricedAgent(usd=0.0, tokens=1500), limits=IterationLimits(tokens=2000))
    assert "iteration.tokens" in hits


def test_the_iteration_cost_limit_counts_llm_dollars(tmp_path: Path) -> None:
    hits = _hits(tmp_path, agent=PricedAgent(usd=0.4, tokens=10), limits=IterationLimits(cost_usd=0.7))
    assert "iteration.cost_usd" in hits


def test_the_run_cost_cap_stops_the_run_and_still_reports(tmp_path: Path) -> None:
    loop = make_loop(tmp_path, FakeSandbox(), agent=PricedAgent(), max_cost=1.0)
    state = loop.run()
    assert state.totals.llm_cost_usd == pytest.approx(1.2)
    assert any(h.limit == "budget" and "cost cap" in h.detail for h in state.limits_hit)
    assert (loop.store.root / "report" / "summary.md").is_file()


class ReviewCostsTokens(OfflineAgent):
    """Its reviews are priced LLM calls, checked against the iteration's limits first."""

    def __init__(self, ledger_box: list[Ledger]) -> None:
        super().__init__()
        self.usage = LLMUsage()
        self.ledger_box = ledger_box

    def write_module(self, task: Task, slot: str, hypothesis: Hypothesis) -> ModuleCode:
        self.usage.prompt_tokens += 600
        return super().write_module(task, slot, hypothesis)

    def review(self, task: Task, outcome: IterationOutcome) -> Review:
        self.ledger_box[0].before_llm_call(0.0)  # what the LLM client does before every call
        return super().review(task, outcome)


def test_an_iteration_limit_hit_at_review_cuts_the_review_not_the_run(tmp_path: Path) -> None:
    box: list[Ledger] = []
    agent = ReviewCostsTokens(box)
    loop = make_loop(tmp_path, FakeSandbox(), seeds=2, agent=agent, limits=IterationLimits(tokens=1000))
    box.append(loop.ledger)
    state = loop.run()
    assert state.status == "finished" and len(loop.history) >= 2  # the run went on after the cut
    assert any("review skipped" in note for note in loop.history[0].notes)
    assert "iteration.tokens" in [hit.limit for hit in state.limits_hit]
