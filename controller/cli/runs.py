"""Commands that drive a run: start, resume, stop and rerun.

controller.wiring (the loop, agents and backends) is imported inside the commands that
run a loop, so the read-only commands start quickly and never depend on it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from controller.cli.options import (
    DEFAULT_RUNS_DIR,
    MAX_SEEDS,
    MIN_SEEDS,
    Executor,
    RayAddress,
    RunsDir,
    check_agent,
    check_backend,
    check_executor,
    check_pretrained,
    check_seeds,
    parse_duration_arg,
    parse_grid,
    parse_iteration_limits,
    parse_usd,
    report_reserve,
)
from controller.cli.render import console, out
from controller.cli.research import (
    DEFAULT_SOURCES,
    Corpus,
    Idea,
    Offline,
    Sources,
    Topic,
    adopt_plan,
    load_plan_file,
    research_config,
    research_of_plan,
    run_front_end,
)
from controller.cli.sandbox import reap_for_run
from controller.errors import BadInputError
from controller.ledger import IterationLimits
from controller.ownership import claim, owner_alive, signals_interrupt
from controller.registry import RunConfig
from controller.store import RunStore
from controller.tasks import load_task
from sandbox.durations import format_duration

INTERRUPTED_EXIT = 130
DEFAULT_LIMITS = IterationLimits()
"""The defaults a `--iteration-*` flag left out keeps (shown in `start --help`)."""
LIMITS_PANEL = "Per-iteration limits: hitting one cuts the iteration"


def _progress_printer(start: float) -> Callable[[str], None]:
    def progress(line: str) -> None:
        console.print(f"{time.monotonic() - start:7.1f}s {line}", highlight=False, markup=False)

    return progress


def _run_loop(store: RunStore, *, resume: bool = False) -> int:
    from controller.loop import InterruptedRunError
    from controller.wiring import build_loop, make_sandbox

    state = store.load_state()
    claim(state)
    if resume:
        state.resumes += 1
        state.message = ""
        store.clear_stop()
        removed = store.clean_partial_attempts()
        if removed:
            console.print(f"removed {removed} unfinished attempt folder(s); they will run again")
    store.save_state(state)
    sandbox = make_sandbox(state.config)
    start = time.monotonic()
    loop = build_loop(store, state, sandbox, _progress_printer(start))
    console.print(
        f"run [bold]{state.run_id}[/] in {store.root}  (budget {state.config.budget_s:.0f}s, "
        f"agent {state.config.agent}, task {state.config.task})"
    )
    try:
        with signals_interrupt(loop):
            final = loop.run()
    except InterruptedRunError:
        console.print(f"[yellow]interrupted[/]: containers killed; continue with `controller resume {state.run_id}`")
        return INTERRUPTED_EXIT
    finally:
        sandbox.close()
    best = store.read("best.json") or {}
    value = best.get("value")
    line = (
        f"best {best.get('metric')}: {value:.4f} on the test split ({best.get('arm')})"
        if value is not None
        else f"no test result ({best.get('reason', 'see the report')})"
    )
    colour = "red" if final.status == "failed" else "green"
    console.print(f"[{colour}]{final.status}[/] after {final.totals.attempts} attempts; {line}", highlight=False)
    if final.status == "failed":
        console.print(f"{final.message}", highlight=False, markup=False)
    out.print(f"report: {store.root / 'report' / 'summary.md'}")
    return 1 if final.status == "failed" else 0


def _check_choices(
    *,
    agent: str,
    backend: str,
    model: str | None,
    arch: str,
    executor: str = "local",
    ray_address: str | None = None,
    allow_weaker: bool = False,
) -> None:
    check_agent(agent, model)
    check_backend(backend, allow_weaker=allow_weaker)
    check_executor(executor, ray_address)
    if arch not in {"cnn", "resnet18"}:
        msg = f"--arch: unknown architecture {arch!r}; use cnn or resnet18"
        raise BadInputError(msg)


def _matrix(task: str, matrix: str | None, ablate: str | None, sweep: str | None) -> dict[str, object]:
    """The --matrix/--ablate/--sweep overrides of the plan's matrix ({} when none is given)."""
    if not (matrix or ablate or sweep):
        return {}
    from controller.plan import DIMENSION_VALUES, Matrix

    dimensions = [d.strip() for d in ablate.split(",") if d.strip()] if ablate else []
    known = [*DIMENSION_VALUES, *(slot for slot, spec in load_task(task).slots.items() if spec.suite)]
    unknown = [d for d in dimensions if d not in known]
    if unknown:
        msg = f"--ablate: unknown dimension(s) {', '.join(unknown)}; use {', '.join(known)}"
        raise BadInputError(msg)
    declared = Matrix(
        variants=parse_grid(matrix, "--matrix") if matrix else {},
        ablate=dimensions,
        sweep=parse_grid(sweep, "--sweep") if sweep else {},
    )
    return declared.model_dump()


def start(
    budget: Annotated[str, typer.Option(help="Wall-clock budget for the whole run: 90s, 15m, 2h, 1h30m.")] = "2h",
    max_cost: Annotated[str | None, typer.Option(help="Dollar cap on LLM tokens plus GPU-hours, e.g. 5usd.")] = None,
    task: Annotated[str, typer.Option(help="Built-in task name or a task folder.")] = "digits",
    dataset: Annotated[str, typer.Option(help="digits, mnist, cifar10, imagefolder:PATH or fakedata.")] = "digits",
    data_root: Annotated[
        Path | None, typer.Option(help="Host folder holding mnist/cifar10 (torchvision layout).")
    ] = None,
    allow_download: Annotated[bool, typer.Option(help="Fetch mnist/cifar10 on the host if missing.")] = False,
    fallback_fakedata: Annotated[bool, typer.Option(help="Use FakeData when the dataset is unavailable.")] = False,
    train_fraction: Annotated[
        float,
        typer.Option(min=0.001, max=1.0, help="Train on this stratified share of the train split (low-data regime)."),
    ] = 1.0,
    arch: Annotated[str, typer.Option(help="Model trunk: cnn or resnet18.")] = "cnn",
    matrix: Annotated[str | None, typer.Option(help="Cross every arm: 'arch=cnn,resnet18;lr=0.003,0.006'.")] = None,
    ablate: Annotated[
        str | None, typer.Option(help="Systematic ablation dimensions: optimizer, scheduler, augment, head.")
    ] = None,
    sweep: Annotated[str | None, typer.Option(help="Sweep the novelty first, keep the best: 'lr=0.001,0.003'.")] = None,
    pretrained: Annotated[
        Path | None, typer.Option(help="Local trunk weights (resnet18); never downloaded.", exists=True, dir_okay=False)
    ] = None,
    agent: Annotated[str, typer.Option(help="offline (default, no LLM) or llm.")] = "offline",
    model: Annotated[str | None, typer.Option(help="LLM model name for --agent llm.")] = None,
    seeds: Annotated[
        int, typer.Option(help=f"Seeds per arm, {MIN_SEEDS} to {MAX_SEEDS}: selection never rests on one seed.")
    ] = 3,
    first_seed: Annotated[
        int, typer.Option(help="The first seed (seeds are first .. first + N - 1): repeat a run on fresh seeds.")
    ] = 0,
    backend: Annotated[str, typer.Option(help="docker (default) or local (no engine; weaker isolation).")] = "docker",
    allow_weaker: Annotated[
        bool, typer.Option(help="Let the local backend run policies it cannot fully enforce.")
    ] = False,
    fork_server: Annotated[
        bool,
        typer.Option(help="Local backend: fork each job from a server with torch preloaded (starts in <0.5 s)."),
    ] = False,
    executor: Executor = "local",
    ray_address: RayAddress = None,
    gpus: Annotated[int, typer.Option(min=0, help="GPUs per training job.")] = 0,
    parallel: Annotated[
        int, typer.Option(min=1, max=64, help="Training jobs at once (bounded by CPUs, memory, GPUs).")
    ] = 1,
    gpu_usd_per_hour: Annotated[float, typer.Option(min=0, help="Rate charged per GPU-hour against --max-cost.")] = 0.0,
    iteration_wall: Annotated[
        str | None,
        typer.Option(
            help=f"Wall time per iteration (default {format_duration(DEFAULT_LIMITS.wall_s)}).",
            rich_help_panel=LIMITS_PANEL,
        ),
    ] = None,
    iteration_gpu_time: Annotated[
        str | None,
        typer.Option(
            help=f"GPU time per iteration, summed over GPUs (default {format_duration(DEFAULT_LIMITS.gpu_s)}).",
            rich_help_panel=LIMITS_PANEL,
        ),
    ] = None,
    iteration_cost: Annotated[
        str | None,
        typer.Option(
            help=f"LLM plus GPU dollars per iteration (default {DEFAULT_LIMITS.cost_usd}usd).",
            rich_help_panel=LIMITS_PANEL,
        ),
    ] = None,
    iteration_tokens: Annotated[
        int | None,
        typer.Option(help=f"LLM tokens per iteration (default {DEFAULT_LIMITS.tokens}).", rich_help_panel=LIMITS_PANEL),
    ] = None,
    iteration_repairs: Annotated[
        int | None,
        typer.Option(
            help=f"Repair rounds per module, 0 for none (default {DEFAULT_LIMITS.repairs_per_module}).",
            rich_help_panel=LIMITS_PANEL,
        ),
    ] = None,
    iteration_attempts: Annotated[
        int | None,
        typer.Option(
            help=f"Sandbox attempts per iteration (default {DEFAULT_LIMITS.attempts}).", rich_help_panel=LIMITS_PANEL
        ),
    ] = None,
    mlflow: Annotated[
        bool, typer.Option(help="Log the run to MLflow, when installed: pip install 'sandlab\\[mlflow]'.")
    ] = True,
    run_id: Annotated[str | None, typer.Option(help="Name the run (default: time plus a random suffix).")] = None,
    topic: Topic = None,
    idea: Idea = None,
    corpus: Corpus = None,
    sources: Sources = DEFAULT_SOURCES,
    offline: Offline = False,
    plan: Annotated[
        Path | None,
        typer.Option(
            help="Run this (edited) plan.json instead of planning.",
            exists=True,
            dir_okay=False,
            rich_help_panel="Research front-end",
        ),
    ] = None,
    memory: Annotated[
        Path | None,
        typer.Option(help="Findings memory across runs (default: memory.jsonl in the runs folder).", dir_okay=False),
    ] = None,
    runs_dir: RunsDir = DEFAULT_RUNS_DIR,
) -> None:
    """Start a research run and leave it unattended; it ends with a report."""
    budget_s = parse_duration_arg(budget, "--budget")
    cost = parse_usd(max_cost, "--max-cost") if max_cost is not None else None
    seed_list = check_seeds(seeds, first_seed)
    iteration_limits = parse_iteration_limits(
        wall=iteration_wall,
        gpu_time=iteration_gpu_time,
        cost=iteration_cost,
        tokens=iteration_tokens,
        repairs=iteration_repairs,
        attempts=iteration_attempts,
    )
    _check_choices(
        agent=agent,
        backend=backend,
        model=model,
        arch=arch,
        executor=executor,
        ray_address=ray_address,
        allow_weaker=allow_weaker,
    )
    check_pretrained(pretrained, arch, matrix)
    if fork_server and backend != "local":
        msg = "--fork-server is for --backend local; the docker backend keeps warm containers instead"
        raise BadInputError(msg)
    load_task(task)
    if plan is not None and topic is not None:
        msg = "--plan runs a plan that is already written; leave out --topic (or drop --plan to plan anew)"
        raise BadInputError(msg)
    research = research_config(topic, idea, corpus, sources, offline=offline)
    adopted = load_plan_file(plan, task) if plan is not None else None
    matrix_overrides = _matrix(task, matrix, ablate, sweep)
    from controller.datasets import resolve_dataset

    resolve_dataset(
        dataset,
        data_root,
        allow_download=allow_download,
        fallback_fakedata=fallback_fakedata,
        progress=_progress_printer(time.monotonic()),
    )
    config = RunConfig(
        task=task,
        dataset=dataset,
        data_root=str(data_root.resolve()) if data_root else None,
        allow_download=allow_download,
        fallback_fakedata=fallback_fakedata,
        train_fraction=train_fraction,
        arch=arch,
        pretrained=str(pretrained.resolve()) if pretrained else None,
        agent=agent,
        model=model,
        budget_s=budget_s,
        max_cost_usd=cost,
        gpu_usd_per_hour=gpu_usd_per_hour,
        seeds=seed_list,
        backend=backend,
        executor=executor,
        ray_address=ray_address,
        allow_weaker=allow_weaker,
        fork_server=fork_server,
        gpus=gpus,
        parallel=parallel,
        report_reserve_s=report_reserve(budget_s),
        matrix=matrix_overrides,
        iteration_limits=iteration_limits,
        mlflow=mlflow,
        research=research or (research_of_plan(plan) if plan is not None else None),
        memory=str(memory.expanduser().resolve()) if memory else None,
    )
    from controller.wiring import integrity_of, make_sandbox, resource_pool, stage_policies

    # Fail fast, with one line and exit 2, before anything is created.
    probe = make_sandbox(config.model_copy(update={"pool_size": 0}))
    try:
        resource_pool(probe).check_fits(stage_policies(config).train)
        integrity_of(probe, config)
    finally:
        probe.close()
    reap_for_run(None, config.backend)
    store, _ = RunStore.create(runs_dir, config, run_id)
    if adopted is not None and plan is not None:
        adopt_plan(store, adopted, plan)
    raise typer.Exit(_run_loop(store))


def resume(
    run_id: Annotated[str, typer.Argument(help="The run to continue.")], runs_dir: RunsDir = DEFAULT_RUNS_DIR
) -> None:
    """Continue a run after a crash, kill -9 or interrupt: finished attempts are kept, none rerun."""
    store = RunStore.open(runs_dir, run_id)
    state = store.load_state()
    if state.status == "running" and owner_alive(state):
        msg = f"run {run_id} is still running (pid {state.owner_pid}); stop it first with `controller stop {run_id}`"
        raise BadInputError(msg)
    if state.status == "planned":
        msg = f"run {run_id} is a plan; run it with `controller start --plan {store.root / 'plan.json'}`"
        raise BadInputError(msg)
    if state.status in {"finished", "stopped"}:
        msg = f"run {run_id} already {state.status}; see `controller report {run_id}` or start a new run"
        raise BadInputError(msg)
    research = state.config.research
    if research is not None and research.plan_only:  # `controller plan` interrupted: plan again, no jobs
        raise typer.Exit(run_front_end(store))
    reap_for_run(None, state.config.backend)  # every container whose owner died, this run's included
    raise typer.Exit(_run_loop(store, resume=True))


def stop(run_id: Annotated[str, typer.Argument(help="The run to stop.")], runs_dir: RunsDir = DEFAULT_RUNS_DIR) -> None:
    """Ask a running run to stop gracefully: it finishes the current job and writes its report."""
    store = RunStore.open(runs_dir, run_id)
    state = store.load_state()
    if state.status != "running":
        msg = f"run {run_id} is not running (status {state.status})"
        raise BadInputError(msg)
    if not owner_alive(state):
        gone = f"its controller (pid {state.owner_pid}) is gone"
        msg = f"run {run_id} is orphaned: {gone}; `controller resume {run_id}` continues it"
        raise BadInputError(msg)
    store.request_stop()
    out.print(f"stop requested for {run_id}; it will write its report and exit")


def rerun(
    run_id: Annotated[str, typer.Argument(help="The run whose best configuration to reproduce.")],
    runs_dir: RunsDir = DEFAULT_RUNS_DIR,
) -> None:
    """Reproduce a run's best configuration; report whether the new metric is inside the recorded CI."""
    from controller.rerun import prepare_rerun_store, rerun_best
    from controller.wiring import build_loop, make_sandbox

    original = RunStore.open(runs_dir, run_id)
    store, best, config = prepare_rerun_store(runs_dir, original)
    state = store.load_state()
    claim(state)
    store.save_state(state)
    sandbox = make_sandbox(state.config)
    loop = build_loop(store, state, sandbox, _progress_printer(time.monotonic()))
    try:
        with signals_interrupt(loop):
            verdict = rerun_best(loop, best, config)
    finally:
        sandbox.close()
    state.status = "finished"
    store.save_state(state)
    if "rerun" not in verdict:
        console.print(f"[red]not reproduced[/]: {verdict.get('reason')}")
        raise typer.Exit(1)
    new, old = verdict["rerun"], verdict["recorded"]
    word = "[green]reproduced[/]" if verdict["reproduced"] else "[red]outside the recorded CI[/]"
    out.print(
        f"{word}: test {verdict['metric']} {new['mean']:.4f} (n={new['n']}) vs recorded {old['mean']:.4f} "
        f"with 95% CI [{old['ci_low']:.4f}, {old['ci_high']:.4f}]  ({store.root / 'rerun.json'})"
    )
    raise typer.Exit(0 if verdict["reproduced"] else 1)
