"""Budgets: a wall-clock deadline, a dollar cap, and per-iteration limits.

Admission control: a job starts only if its timeout fits in what remains after the
reserve kept for the final report. Its timeout is clipped to fit; if the clipped timeout
would be shorter than the task's minimum, the job is refused instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict

from controller.errors import BudgetExceededError


class AdmissionRefusedError(BudgetExceededError):
    """The job's timeout does not fit in the budget left."""


class IterationLimitError(BudgetExceededError):
    """A per-iteration limit was hit: the iteration is cut."""

    def __init__(self, limit: str, detail: str) -> None:
        super().__init__(f"{limit}: {detail}")
        self.limit = limit
        self.detail = detail


class Budget:
    """Wall-clock deadline and dollar cap for the whole run (resume continues the clock)."""

    def __init__(
        self,
        wall_s: float,
        *,
        reserve_s: float,
        used_s: float = 0.0,
        max_cost_usd: float | None = None,
        spent_usd: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.wall_s = wall_s
        self.reserve_s = reserve_s
        self.max_cost_usd = max_cost_usd
        self.spent_usd = spent_usd
        self._clock = clock
        self._started = clock() - used_s

    def used_s(self) -> float:
        """Wall seconds spent so far, earlier sessions included."""
        return self._clock() - self._started

    def remaining_s(self) -> float:
        """Seconds left before the deadline."""
        return self.wall_s - self.used_s()

    def expired(self) -> bool:
        return self.remaining_s() <= 0

    def admit(self, timeout_s: float, min_timeout_s: float) -> float:
        """The timeout to run a job with, clipped to the budget; raise if it does not fit."""
        available = self.remaining_s() - self.reserve_s
        clipped = min(timeout_s, available)
        if clipped < min_timeout_s:
            msg = (
                f"a job needs at least {min_timeout_s:.0f}s but only {max(available, 0):.0f}s "
                f"remain before the {self.reserve_s:.0f}s report reserve"
            )
            raise AdmissionRefusedError(msg)
        return clipped

    def admit_final(self, timeout_s: float, min_timeout_s: float) -> float:
        """Admission for the final report's own jobs: they may use the reserve."""
        clipped = min(timeout_s, self.remaining_s())
        if clipped < min_timeout_s:
            msg = f"no time left for the final evaluation ({max(self.remaining_s(), 0):.0f}s)"
            raise AdmissionRefusedError(msg)
        return clipped

    def charge(self, usd: float) -> None:
        """Add spending (LLM tokens, GPU hours)."""
        self.spent_usd += usd

    def check_cost(self) -> None:
        """Raise when the dollar cap is reached."""
        if self.max_cost_usd is not None and self.spent_usd >= self.max_cost_usd:
            msg = f"the ${self.max_cost_usd:.2f} cost cap is reached (${self.spent_usd:.4f} spent)"
            raise BudgetExceededError(msg)


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
    attempts: int = 40
    """Sandbox attempts one iteration may make."""


class IterationMeter:
    """Usage within one iteration, checked against IterationLimits."""

    def __init__(self, limits: IterationLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self._start = clock()
        self.gpu_s = 0.0
        self.cost_usd = 0.0
        self.tokens = 0
        self.attempts = 0

    def check(self) -> None:
        """Raise IterationLimitError for the first limit that is reached."""
        limits = self.limits
        elapsed = self._clock() - self._start
        if elapsed >= limits.wall_s:
            msg = "iteration.wall_s"
            raise IterationLimitError(msg, f"{elapsed:.0f}s >= {limits.wall_s:.0f}s")
        if self.attempts >= limits.attempts:
            msg = "iteration.attempts"
            raise IterationLimitError(msg, f"{self.attempts} >= {limits.attempts}")
        if self.gpu_s >= limits.gpu_s:
            msg = "iteration.gpu_s"
            raise IterationLimitError(msg, f"{self.gpu_s:.0f} >= {limits.gpu_s:.0f}")
        if self.cost_usd >= limits.cost_usd:
            msg = "iteration.cost_usd"
            raise IterationLimitError(msg, f"${self.cost_usd:.4f} >= ${limits.cost_usd:.2f}")
        if self.tokens >= limits.tokens:
            msg = "iteration.tokens"
            raise IterationLimitError(msg, f"{self.tokens} >= {limits.tokens}")
