"""Building a loop for `start`, `resume` and `rerun`: the only place that wires things together.

The controller never imports docker: the sandbox comes from sandbox.backends by config.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import structlog

from controller.agents.base import Agent
from controller.errors import BadInputError
from controller.ledger import IterationLimits, Ledger
from controller.loop import LoopContext, ResearchLoop, StagePolicies
from controller.registry import RunConfig, RunState
from controller.scheduler import ResourcePool
from controller.store import RunStore
from controller.tasks import load_task
from sandbox.backends import backend_config, build_sandbox
from sandbox.base import Sandbox
from sandbox.gpus import detect_gpus
from sandbox.policy import load_policy

log = structlog.get_logger("sandlab.wiring")


def make_sandbox(config: RunConfig) -> Sandbox:
    """The configured backend, here or (`--executor ray`) on every node of a cluster.

    The docker backend connects, and Ray joins the cluster, failing with a clear line.
    """
    settings = config.model_dump(include={"image", "pool_size", "allow_weaker", "fork_server"})
    backend = backend_config(config.backend, **settings)
    if config.executor == "ray":
        from sandbox.cluster import RaySandbox

        return RaySandbox(backend, address=config.ray_address)
    return build_sandbox(backend)


def resource_pool(sandbox: Sandbox) -> ResourcePool:
    """What jobs share: this host's CPUs, memory and GPU ids, or a cluster's totals (Ray names GPU ids)."""
    capacity = getattr(sandbox, "capacity", None)
    if capacity is None:
        return ResourcePool.for_host([g.index for g in detect_gpus()])
    cluster = capacity()
    return ResourcePool.for_cluster(cluster.cpus, cluster.memory, cluster.gpus, cluster.why_not)


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


def charge_agent_to(ledger: Ledger, agent: Agent) -> None:
    """Every LLM call the agent makes is checked against the ledger first and charged right after.

    Only what the agent spends from now on is charged: a resumed run's client starts at zero
    and run.json's totals already hold what came before.
    """
    usage = getattr(agent, "usage", None)
    if usage is None:
        return
    ledger.watch_llm(usage)
    client = getattr(agent, "client", None)
    if client is not None:
        client.before_call = ledger.before_llm_call
        client.on_usage = lambda _delta: ledger.charge_llm(usage)


def stage_policies(config: RunConfig) -> StagePolicies:
    """guard: default; train: train (gpu when GPUs are asked for); evaluation: strict."""
    train = load_policy("gpu").with_overrides(gpus=config.gpus) if config.gpus else load_policy("train")
    return StagePolicies(guard=load_policy("default"), train=train, evaluate=load_policy("strict"))


def make_ledger(state: RunState) -> Ledger:
    """The run's ledger over run.json's totals (a resumed run continues its clock and spending)."""
    config = state.config
    return Ledger(
        state.totals,
        wall_s=config.budget_s,
        reserve_s=config.report_reserve_s,
        max_cost_usd=config.max_cost_usd,
        gpu_usd_per_hour=config.gpu_usd_per_hour,
        limits=IterationLimits(**config.iteration_limits),
    )


def integrity_of(sandbox: Sandbox, config: RunConfig) -> Literal["sealed", "weaker"]:
    """Whether the backend keeps jobs away from the run's private labels; refuse it if not,
    unless the user accepted weaker numbers with --allow-weaker."""
    concurrent = config.parallel > 1 and not sandbox.isolates_concurrent_jobs
    if sandbox.seals_host_files and not concurrent:
        return "sealed"
    if not config.allow_weaker:
        if concurrent:
            why = f"cannot keep jobs that run at once (--parallel {config.parallel}) away from each other"
            fix = "use the docker backend, run with --parallel 1"
        else:
            why = f"cannot keep jobs away from the run's private labels here ({sandbox.why_not_sealed})"
            fix = "or use the docker backend"
        msg = f"the {sandbox.name} backend {why}; {fix}, or pass --allow-weaker to accept numbers that are not sealed"
        raise BadInputError(msg)
    log.warning("integrity.weaker", backend=sandbox.name)
    return "weaker"


def build_loop(
    store: RunStore,
    state: RunState,
    sandbox: Sandbox,
    progress: Callable[[str], None],
    agent: Agent | None = None,
) -> ResearchLoop:
    """Wire a loop for a new or resumed run."""
    state.integrity = integrity_of(sandbox, state.config)
    config = state.config
    ledger = make_ledger(state)
    ctx = LoopContext(
        store=store,
        state=state,
        sandbox=sandbox,
        agent=agent or make_agent(config, store),
        task=load_task(config.task),
        policies=stage_policies(config),
        ledger=ledger,
        progress=progress,
        resources=resource_pool(sandbox),
        parallel=config.parallel,
    )
    charge_agent_to(ledger, ctx.agent)
    return ResearchLoop(ctx)
