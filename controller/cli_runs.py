"""Run commands: start, resume, stop, status, attempts, logs, report."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.live import Live
from rich.markdown import Markdown

from controller.cli_common import (
    DEFAULT_RUNS_DIR,
    RunsDir,
    app,
    console,
    out,
    parse_duration_arg,
    parse_grid,
    parse_usd,
)
from controller.errors import BadInputError
from controller.ownership import claim, owner_alive, signals_interrupt
from controller.registry import RunConfig, RunStore
from controller.tasks import load_task
from controller.views import attempts_table, run_panel, runs_table
from controller.wiring import build_loop, make_sandbox

LIVE_REFRESH_S = 1.0


def _progress_printer(start: float) -> Callable[[str], None]:
    def progress(line: str) -> None:
        console.print(f"{time.monotonic() - start:7.1f}s {line}", highlight=False, markup=False)

    return progress


def _reap_for(run_id: str | None) -> None:
    try:
        from sandbox.engine import connect
        from sandbox.reaper import reap_orphans

        report = reap_orphans(connect(timeout=10), run_id=run_id)
    except Exception:
        return
    if report.removed:
        console.print(f"reaped {len(report.removed)} orphaned container(s)")


def _run_loop(store: RunStore, *, resume: bool = False) -> int:
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
    from controller.loop import InterruptedRunError

    try:
        with signals_interrupt(loop):
            final = loop.run()
    except InterruptedRunError:
        console.print(f"[yellow]interrupted[/]: containers killed; continue with `controller resume {state.run_id}`")
        return 130
    finally:
        sandbox.close()
    best = store.read("best.json") or {}
    value = best.get("value")
    line = (
        f"best {best.get('metric')}: {value:.4f} on the test split ({best.get('arm')})"
        if value is not None
        else f"no test result ({best.get('reason', 'see the report')})"
    )
    console.print(f"[green]{final.status}[/] after {final.totals.attempts} attempts; {line}")
    out.print(f"report: {store.root / 'report' / 'summary.md'}")
    return 0


@app.command()
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
    arch: Annotated[str, typer.Option(help="Model trunk: cnn or resnet18.")] = "cnn",
    matrix: Annotated[str | None, typer.Option(help="Cross every arm: 'arch=cnn,resnet18;lr=0.003,0.006'.")] = None,
    ablate: Annotated[str | None, typer.Option(help="Systematic ablation dimensions: optimizer,scheduler.")] = None,
    sweep: Annotated[str | None, typer.Option(help="Sweep the novelty first, keep the best: 'lr=0.001,0.003'.")] = None,
    pretrained: Annotated[
        Path | None, typer.Option(help="Local trunk weights (resnet18); never downloaded.", exists=True, dir_okay=False)
    ] = None,
    agent: Annotated[str, typer.Option(help="offline (default, no LLM) or llm.")] = "offline",
    model: Annotated[str | None, typer.Option(help="LLM model name for --agent llm.")] = None,
    seeds: Annotated[int, typer.Option(min=1, max=20, help="Seeds per arm.")] = 3,
    backend: Annotated[str, typer.Option(help="docker (default) or local (no engine; weaker isolation).")] = "docker",
    allow_weaker: Annotated[
        bool, typer.Option(help="Let the local backend run policies it cannot fully enforce.")
    ] = False,
    gpus: Annotated[int, typer.Option(min=0, help="GPUs per training job.")] = 0,
    parallel: Annotated[
        int, typer.Option(min=1, max=64, help="Training jobs at once (bounded by CPUs, memory, GPUs).")
    ] = 1,
    gpu_usd_per_hour: Annotated[float, typer.Option(min=0, help="Rate charged per GPU-hour against --max-cost.")] = 0.0,
    run_id: Annotated[str | None, typer.Option(help="Name the run (default: time plus a random suffix).")] = None,
    runs_dir: RunsDir = DEFAULT_RUNS_DIR,
) -> None:
    """Start a research run and leave it unattended; it ends with a report."""
    budget_s = parse_duration_arg(budget, "--budget")
    cost = parse_usd(max_cost, "--max-cost") if max_cost is not None else None
    if agent not in {"offline", "llm"}:
        msg = f"--agent: unknown agent {agent!r}; use offline or llm"
        raise BadInputError(msg)
    if backend not in {"docker", "local"}:
        msg = f"--backend: unknown backend {backend!r}; use docker or local"
        raise BadInputError(msg)
    if agent == "llm" and not model:
        msg = "--agent llm needs --model NAME (set OPENAI_BASE_URL and OPENAI_API_KEY too)"
        raise BadInputError(msg)
    load_task(task)
    if arch not in {"cnn", "resnet18"}:
        msg = f"--arch: unknown architecture {arch!r}; use cnn or resnet18"
        raise BadInputError(msg)
    from controller.datasets import resolve_dataset

    resolve_dataset(
        dataset,
        data_root,
        allow_download=allow_download,
        fallback_fakedata=fallback_fakedata,
        progress=_progress_printer(time.monotonic()),
    )
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
    reserve = min(90.0, max(30.0, budget_s * 0.2))
    config = RunConfig(
        task=task,
        dataset=dataset,
        data_root=str(data_root.resolve()) if data_root else None,
        allow_download=allow_download,
        fallback_fakedata=fallback_fakedata,
        arch=arch,
        pretrained=str(pretrained.resolve()) if pretrained else None,
        agent=agent,
        model=model,
        budget_s=budget_s,
        max_cost_usd=cost,
        gpu_usd_per_hour=gpu_usd_per_hour,
        seeds=list(range(seeds)),
        backend=backend,
        allow_weaker=allow_weaker,
        gpus=gpus,
        parallel=parallel,
        report_reserve_s=reserve,
        matrix=declared.model_dump() if (matrix or ablate or sweep) else {},
    )
    from controller.scheduler import ResourcePool
    from controller.wiring import stage_policies
    from sandbox.gpus import detect_gpus

    # Fail fast, with one line and exit 2, before anything is created.
    ResourcePool.for_host([g.index for g in detect_gpus()]).check_fits(stage_policies(config).train)
    make_sandbox(config.model_copy(update={"pool_size": 0})).close()
    _reap_for(None)
    store, _ = RunStore.create(runs_dir, config, run_id)
    raise typer.Exit(_run_loop(store))


@app.command()
def resume(
    run_id: Annotated[str, typer.Argument(help="The run to continue.")], runs_dir: RunsDir = DEFAULT_RUNS_DIR
) -> None:
    """Continue a run after a crash, kill -9 or interrupt: finished attempts are kept, none rerun."""
    store = RunStore.open(runs_dir, run_id)
    state = store.load_state()
    if state.status == "running" and owner_alive(state):
        msg = f"run {run_id} is still running (pid {state.owner_pid}); stop it first with `controller stop {run_id}`"
        raise BadInputError(msg)
    if state.status in {"finished", "stopped"}:
        msg = f"run {run_id} already {state.status}; see `controller report {run_id}` or start a new run"
        raise BadInputError(msg)
    _reap_for(None)  # every container whose owner died, this run's included
    raise typer.Exit(_run_loop(store, resume=True))


@app.command()
def stop(run_id: Annotated[str, typer.Argument(help="The run to stop.")], runs_dir: RunsDir = DEFAULT_RUNS_DIR) -> None:
    """Ask a running run to stop gracefully: it finishes the current job and writes its report."""
    store = RunStore.open(runs_dir, run_id)
    state = store.load_state()
    if state.status != "running":
        msg = f"run {run_id} is not running (status {state.status})"
        raise BadInputError(msg)
    store.request_stop()
    out.print(f"stop requested for {run_id}; it will write its report and exit")


@app.command()
def status(
    run_id: Annotated[str | None, typer.Argument(help="A run (default: list all runs).")] = None,
    once: Annotated[bool, typer.Option(help="Print once instead of a live view.")] = False,
    runs_dir: RunsDir = DEFAULT_RUNS_DIR,
) -> None:
    """A live view of a run (iteration, stage, budget left, cost, best, attempts), or all runs."""
    if run_id is None:
        out.print(runs_table(RunStore.list_runs(runs_dir)))
        return
    store = RunStore.open(runs_dir, run_id)
    state = store.load_state()
    if once or not (state.status == "running" and owner_alive(state)) or not out.is_terminal:
        out.print(run_panel(state, store.attempts()))
        return
    with Live(run_panel(state, store.attempts()), console=out, refresh_per_second=2) as live:
        while state.status == "running" and owner_alive(state):
            time.sleep(LIVE_REFRESH_S)
            state = store.load_state()
            live.update(run_panel(state, store.attempts()))


@app.command()
def attempts(run_id: Annotated[str, typer.Argument(help="The run.")], runs_dir: RunsDir = DEFAULT_RUNS_DIR) -> None:
    """A table of every attempt: stage, module or arm, status, duration, peak memory, score."""
    store = RunStore.open(runs_dir, run_id)
    out.print(attempts_table(store.attempts(), title=f"attempts of {run_id}"))


@app.command()
def logs(
    run_id: Annotated[str, typer.Argument(help="The run.")],
    attempt: Annotated[int | None, typer.Option(help="Attempt number (default: the controller's own log).")] = None,
    stderr: Annotated[bool, typer.Option("--stderr", help="Show the attempt's stderr instead of stdout.")] = False,
    follow: Annotated[bool, typer.Option(help="Keep printing as the run goes on.")] = False,
    runs_dir: RunsDir = DEFAULT_RUNS_DIR,
) -> None:
    """An attempt's container logs, or the controller's events (with --follow, as they come)."""
    store = RunStore.open(runs_dir, run_id)
    if attempt is None:
        _follow_file(store.root / "events.jsonl", follow, store)
        return
    folder = store.attempt_dir(attempt)
    name = "stderr.log" if stderr else "stdout.log"
    while not (folder / "attempt.json").is_file():
        if not follow or not _running(store):
            known = [r.number for r in store.attempts()]
            msg = (
                f"attempt {attempt} of {run_id} has not finished; attempts so far: "
                f"{known[0] if known else 0}..{known[-1] if known else 0} (use --follow to wait)"
            )
            raise BadInputError(msg)
        time.sleep(LIVE_REFRESH_S)
    text = (folder / name).read_text(errors="replace")
    out.print(text, end="", markup=False, highlight=False, soft_wrap=True)
    record = json.loads((folder / "attempt.json").read_text())
    console.print(f"[dim]attempt {attempt}: {record['kind']} {record['status']} ({record.get('reason') or ''})[/]")


def _running(store: RunStore) -> bool:
    state = store.load_state()
    return state.status == "running" and owner_alive(state)


def _follow_file(path: Path, follow: bool, store: RunStore) -> None:
    position = 0
    while True:
        if path.is_file():
            with path.open() as fh:
                fh.seek(position)
                for line in fh:
                    out.print(line.rstrip("\n"), markup=False, highlight=False, soft_wrap=True)
                position = fh.tell()
        if not follow or not _running(store):
            return
        time.sleep(LIVE_REFRESH_S)


@app.command()
def report(run_id: Annotated[str, typer.Argument(help="The run.")], runs_dir: RunsDir = DEFAULT_RUNS_DIR) -> None:
    """Print the run's report (report/summary.md) and where its files are."""
    store = RunStore.open(runs_dir, run_id)
    summary = store.root / "report" / "summary.md"
    if not summary.is_file():
        state = store.load_state()
        msg = f"run {run_id} has no report yet (status {state.status}); `controller resume {run_id}` finishes it"
        raise BadInputError(msg)
    out.print(Markdown(summary.read_text()))
    out.print(
        f"\nfiles: {store.root} (best.json, best_config.json, aggregates.json, report/)  "
        f"[dim]{datetime.now(UTC):%H:%M:%S}[/]"
    )


@app.command()
def rerun(
    run_id: Annotated[str, typer.Argument(help="The run whose best configuration to reproduce.")],
    runs_dir: RunsDir = DEFAULT_RUNS_DIR,
) -> None:
    """Reproduce a run's best configuration; report whether the new metric is inside the recorded CI."""
    from controller.rerun import prepare_rerun_store, rerun_best

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
