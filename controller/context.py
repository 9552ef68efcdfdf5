"""What one research loop works with: its store, sandbox, agent, task, policies and ledger,
injected so that tests can hand it fakes."""

from __future__ import annotations

from dataclasses import dataclass

from controller.agents.base import Agent
from controller.attempts import Progress
from controller.ledger import Ledger
from controller.registry import RunState
from controller.scheduler import ResourcePool
from controller.store import RunStore
from controller.tasks import Task
from sandbox.base import Sandbox
from sandbox.policy import Policy


@dataclass(frozen=True)
class StagePolicies:
    """Which policy each kind of job runs under."""

    guard: Policy
    train: Policy
    evaluate: Policy


@dataclass
class LoopContext:
    """Everything one loop run works with (injected, so tests can use fakes)."""

    store: RunStore
    state: RunState
    sandbox: Sandbox
    agent: Agent
    task: Task
    policies: StagePolicies
    ledger: Ledger
    progress: Progress = print
    resources: ResourcePool | None = None
    """Shared CPUs, memory and GPU ids; None runs jobs without accounting (tests)."""
    parallel: int = 1
    """Training jobs of one iteration run at most this many at once."""
