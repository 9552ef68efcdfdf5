"""Building a loop for `start`, `resume` and `rerun`: the only place that wires things together.

The controller never imports docker: the sandbox comes from sandbox.backends by config.
"""

from __future__ import annotations

from collections.abc import Callable

from controller.agents.base import Agent
from controller.budget import Budget, IterationLimits
from controller.errors import BadInputError
from controller.loop import LoopContext, ResearchLoop, StagePolicies
from controller.registry import RunConfig, RunState, RunStore
from controller.scheduler import ResourcePool
from controller.tasks import load_task
from sandbox.backends import DockerBackendConfig, LocalBackendConfig
from sandbox.base import Sandbox
from sandbox.policy import load_policy


def make_sandbox(config: RunConfig) -> Sandbox:
    """The configured backend; the docker one connects (and fails with a clear line)."""
    if config.backend == "local":
        return LocalBackendConfig(allow_weaker=config.allow_weaker).build()
    return DockerBackendConfig(image=config.image, pool_size=config.pool_size).build()


def make_agent(config: RunConfig, store: RunStore) -> Agent:
    """The configured agent."""
    if config.agent == "offline":
        from controller.agents.offline import OfflineAgent

        return OfflineAgent()
    from controller.agents.llm_agent import LLMAgent

    if not config.model:
        msg = "--agent llm needs --model NAME (and OPENAI_BASE_URL / OPENAI_API_KEY)"
        raise BadInputError(msg)
    return LLMAgent(config.model, cache_dir=store.root / "llm-cache")


def stage_policies(config: RunConfig) -> StagePolicies:
    """guard: default; train: train (gpu when GPUs are asked for); evaluation: strict."""
    train = load_policy("gpu").with_overrides(gpus=config.gpus) if config.gpus else load_policy("train")
    return StagePolicies(guard=load_policy("default"), train=train, evaluate=load_policy("strict"))


def build_loop(
    store: RunStore,
    state: RunState,
    sandbox: Sandbox,
    progress: Callable[[str], None],
    agent: Agent | None = None,
) -> ResearchLoop:
    """Wire a loop for a new or resumed run."""
    config = state.config
    from sandbox.gpus import detect_gpus

    resources = ResourcePool.for_host([g.index for g in detect_gpus()])
    budget = Budget(
        config.budget_s,
        reserve_s=config.report_reserve_s,
        used_s=state.totals.wall_s,
        max_cost_usd=config.max_cost_usd,
        spent_usd=state.totals.cost_usd,
    )
    ctx = LoopContext(
        store=store,
        state=state,
        sandbox=sandbox,
        agent=agent or make_agent(config, store),
        task=load_task(config.task),
        policies=stage_policies(config),
        budget=budget,
        limits=IterationLimits(**config.iteration_limits),
        progress=progress,
        resources=resources,
        parallel=config.parallel,
    )
    return ResearchLoop(ctx)
