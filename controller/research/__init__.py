"""From a question to a plan: literature search, summaries, novelty, and a planning session.

`plan_from_literature` is the front door the loop and `controller plan` use; the stages
live in controller.research.frontend.
"""

from __future__ import annotations

from collections.abc import Callable

from controller.llm import LLMClient
from controller.plan import Plan
from controller.registry import RunConfig
from controller.store import RunStore
from controller.tasks import Task

__all__ = ["plan_from_literature"]


def plan_from_literature(
    store: RunStore,
    config: RunConfig,
    task: Task,
    client: LLMClient | None,
    progress: Callable[[str], None],
    checkpoint: Callable[[], None] = lambda: None,
) -> Plan:
    """Run (or resume) the front-end for `config.research` and return the plan it wrote."""
    from controller.research.frontend import FrontEnd

    return FrontEnd(store, config, task, client, progress, checkpoint).run()
