"""One ledger for the run: wall time, GPU-seconds, tokens and dollars.

It feeds both kinds of limit from the same numbers:
- the run budget: a wall-clock deadline (less a reserve kept for the final report) and a
  dollar cap on LLM tokens plus GPU-hours;
- the per-iteration limits: wall, GPU-seconds, dollars, tokens and attempts (repairs per
  module are counted by the loop, which owns the repair rounds).

It is checked before every job (admission: a job starts only if its timeout, plus the
follow-up job it needs, fits in what remains) and before every LLM call (the call's
estimated price against what remains). Totals live in run.json and only ever grow: the
LLM client of a resumed run starts from zero, so spending is charged as the difference
from what this session's client had already reported, never from run.json's totals.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from pydantic import BaseModel, ConfigDict

from controller.errors import BudgetExceededError
from controller.registry import Totals


class AdmissionRefusedError(BudgetExceededError):
    """The job's timeout does not fit in the budget left."""


class IterationLimitError(BudgetExceededError):
    """A per-iteration limit was hit: the iteration is cut."""

    def __init__(self, limit: str, detail: str) -> None:
        super().__init__(f"{limit}: {detail}")
        self.limit = limit
        self.detail = detail


class IterationLimits(BaseModel):
    """Limits on one iteration; hitting one cuts the iteration, logs it, and moves on."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    wall_s: float = 900.0
    """Wall seconds one iteration may take."""
    gpu_s: float = 3600.0
    """GPU-seconds (seconds x GPUs) one iteration's jobs may use."""
    cost_usd: float = 1.0
    """LLM and GPU dollars one iteration may spend."""
    tokens: int = 200_000
    """LLM tokens one iteration may use."""
    repairs_per_module: int = 2
    """Repair rounds for one generated module before rolling back."""
    attempts: int = 80
    """Sandbox attempts one iteration may make (room for the seeds power asks for: 4 arms x
    10 seeds x train and evaluate)."""


class Usage(Protocol):
    """What the ledger reads of an LLM client's running usage (controller.llm.LLMUsage)."""

    calls: int
    retries: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float


class _IterationUse:
    def __init__(self, started: float) -> None:
        self.started = started
        self.gpu_s = 0.0
        self.cost_usd = 0.0
        self.tokens = 0
        self.attempts = 0


class Ledger:
    """Run budget and iteration limits over one set of totals (run.json's)."""

    def __init__(
        self,
        totals: Totals,
        *,
        wall_s: float,
        reserve_s: float,
        max_cost_usd: float | None = None,
        gpu_usd_per_hour: float = 0.0,
        limits: IterationLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.totals = totals
        self.wall_s = wall_s
        self.reserve_s = reserve_s
        self.max_cost_usd = max_cost_usd
        self.gpu_usd_per_hour = gpu_usd_per_hour
        self.limits = limits or IterationLimits()
        self._clock = clock
        self._started = clock() - totals.wall_s  # a resumed run continues its clock
        self._iteration: _IterationUse | None = None
        self._llm_seen: dict[int, tuple[int, int, int, float]] = {}

    # -- wall clock ------------------------------------------------------------------------

    def used_s(self) -> float:
        """Wall seconds spent so far, earlier sessions included."""
        return self._clock() - self._started

    def remaining_s(self) -> float:
        """Seconds left before the deadline."""
        return self.wall_s - self.used_s()

    def available_s(self) -> float:
        """Seconds left for jobs: the remainder less the final report's reserve."""
        return self.remaining_s() - self.reserve_s

    def expired(self) -> bool:
        return self.remaining_s() <= 0

    def sync(self) -> None:
        """Copy the wall clock into the totals (before run.json is saved)."""
        self.totals.wall_s = self.used_s()

    def admit(self, timeout_s: float, min_timeout_s: float, *, follow_up_s: float = 0.0, final: bool = False) -> float:
        """The timeout to run a job with, clipped to the budget; raise if it does not fit.

        `follow_up_s` is kept free for the job that must come after this one (a training
        job's evaluation), so a job whose result could not be used is never started.
        The final report's own jobs (`final`) may use the reserve.
        """
        available = (self.remaining_s() if final else self.available_s()) - follow_up_s
        clipped = min(timeout_s, available)
        if clipped < min_timeout_s:
            after = f" plus {follow_up_s:.0f}s for its evaluation" if follow_up_s else ""
            where = "before the deadline" if final else f"before the {self.reserve_s:.0f}s report reserve"
            left = max(available + follow_up_s, 0)
            msg = f"a job needs at least {min_timeout_s:.0f}s{after} but only {left:.0f}s remain {where}"
            raise AdmissionRefusedError(msg)
        return clipped

    # -- dollars ------------------------------------------------------------------------------

    def check_cost(self, upcoming_usd: float = 0.0) -> None:
        """Raise when the dollar cap is reached, or would be by spending `upcoming_usd`."""
        cap = self.max_cost_usd
        if cap is None:
            return
        spent = self.totals.cost_usd
        if spent >= cap or (upcoming_usd > 0 and spent + upcoming_usd > cap):
            more = f" and the next LLM call would cost about ${upcoming_usd:.4f}" if upcoming_usd else ""
            msg = f"the ${cap:.2f} cost cap is reached (${spent:.4f} spent{more})"
            raise BudgetExceededError(msg)

    # -- iterations -------------------------------------------------------------------------

    def start_iteration(self) -> None:
        self._iteration = _IterationUse(self._clock())

    def end_iteration(self) -> None:
        self._iteration = None

    def check_iteration(self) -> None:
        """Raise IterationLimitError for the first per-iteration limit that is reached."""
        use, limits = self._iteration, self.limits
        if use is None:
            return
        elapsed = self._clock() - use.started
        checks = (
            ("iteration.wall_s", elapsed >= limits.wall_s, f"{elapsed:.0f}s >= {limits.wall_s:.0f}s"),
            ("iteration.attempts", use.attempts >= limits.attempts, f"{use.attempts} >= {limits.attempts}"),
            ("iteration.gpu_s", use.gpu_s >= limits.gpu_s, f"{use.gpu_s:.0f} >= {limits.gpu_s:.0f}"),
            ("iteration.cost_usd", use.cost_usd >= limits.cost_usd, f"${use.cost_usd:.4f} >= ${limits.cost_usd:.2f}"),
            ("iteration.tokens", use.tokens >= limits.tokens, f"{use.tokens} >= {limits.tokens}"),
        )
        for name, hit, detail in checks:
            if hit:
                raise IterationLimitError(name, detail)

    def iteration_room(self) -> tuple[float, float]:
        """(attempts, wall seconds) the current iteration may still use (inf outside one)."""
        use = self._iteration
        if use is None:
            return float("inf"), float("inf")
        return self.limits.attempts - use.attempts, self.limits.wall_s - (self._clock() - use.started)

    def reserve_attempt(self) -> None:
        """Count an attempt against the iteration now, so parallel jobs respect the limit."""
        if self._iteration is not None:
            self._iteration.attempts += 1

    # -- charging -------------------------------------------------------------------------------

    def charge_attempt(self, status: str, duration_s: float, gpu_count: int) -> None:
        """A finished attempt: counts, GPU-seconds and their dollars."""
        totals = self.totals
        totals.attempts += 1
        totals.by_status[status] = totals.by_status.get(status, 0) + 1
        gpu_s = duration_s * gpu_count
        gpu_usd = gpu_s / 3600 * self.gpu_usd_per_hour
        totals.gpu_s += gpu_s
        totals.gpu_cost_usd += gpu_usd
        totals.cost_usd += gpu_usd
        if self._iteration is not None:
            self._iteration.gpu_s += gpu_s
            self._iteration.cost_usd += gpu_usd

    def before_llm_call(self, estimated_usd: float) -> None:
        """Refuse an LLM call that the run's cap or the iteration's limits cannot afford."""
        self.check_cost(estimated_usd)
        self.check_iteration()

    def watch_llm(self, usage: Usage) -> None:
        """Start charging an LLM client from what it has already reported (not charged again)."""
        self._llm_seen[id(usage)] = _snapshot(usage)

    def charge_llm(self, usage: Usage) -> None:
        """Fold what an LLM client spent since this ledger last saw it into the totals.

        Keyed by the usage object: a new client (a resumed run's) starts from zero, and its
        spending adds to run.json's totals instead of replacing them.
        """
        seen = self._llm_seen.get(id(usage), (0, 0, 0, 0.0))
        now = _snapshot(usage)
        calls, retries, tokens = (max(now[i] - seen[i], 0) for i in range(3))
        usd = max(now[3] - seen[3], 0.0)
        self._llm_seen[id(usage)] = now
        totals = self.totals
        totals.llm_calls += int(calls)
        totals.llm_retries += int(retries)
        totals.tokens += int(tokens)
        totals.llm_cost_usd += usd
        totals.cost_usd += usd
        if self._iteration is not None:
            self._iteration.tokens += int(tokens)
            self._iteration.cost_usd += usd


def _snapshot(usage: Usage) -> tuple[int, int, int, float]:
    return usage.calls, usage.retries, usage.prompt_tokens + usage.completion_tokens, usage.cost_usd
