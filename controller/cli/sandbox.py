"""Sandbox commands: `sandbox exec`, `images build`, `doctor`, `reap`, and the reaping that
`start` and `resume` do first.

This is the only CLI module that imports engine code (sandbox.backends.docker's engine,
reaper and images), always inside the function that needs it: the rest of the command
line runs without an engine, and a move of those modules touches this file alone.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from controller.cli.options import (
    DEFAULT_RUNS_DIR,
    Executor,
    RayAddress,
    RunsDir,
    check_backend,
    check_executor,
    parse_duration_arg,
    parse_gpus,
)
from controller.cli.render import console, out
from controller.errors import BadInputError
from sandbox.base import Sandbox

REAP_CONNECT_TIMEOUT_S = 10
"""How long `start`/`resume` wait for the engine before skipping the reap (it is best-effort)."""
BUILD_STATUS_CHARS = 100
"""How much of a build log line the spinner shows."""


def sandbox_exec(
    command: Annotated[list[str], typer.Argument(help="The command, after `--`.", show_default=False)],
    policy: Annotated[str, typer.Option(help="Policy name (policies/NAME.yaml) or path.")] = "default",
    workspace: Annotated[
        Path | None, typer.Option(help="Folder staged into /workspace.", exists=True, file_okay=False)
    ] = None,
    outputs: Annotated[
        Path | None, typer.Option(help="Copy the workspace back here afterwards.", file_okay=False)
    ] = None,
    timeout: Annotated[str | None, typer.Option(help="Override the policy's timeout, e.g. 90s.")] = None,
    gpus: Annotated[str | None, typer.Option(help="GPU count or device ids (0,2).")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print one AttemptResult JSON object.")] = False,
    backend: Annotated[str, typer.Option(help="docker or local.")] = "docker",
    allow_weaker: Annotated[
        bool, typer.Option(help="Let the local backend run policies it cannot fully enforce.")
    ] = False,
    runs_dir: RunsDir = DEFAULT_RUNS_DIR,
) -> None:
    """Run one command in a disposable container. Exit 0 ok, 1 failed, 2 bad input or infrastructure."""
    from sandbox.base import Job
    from sandbox.policy import load_policy
    from sandbox.results import Status

    check_backend(backend, allow_weaker=allow_weaker)
    loaded = load_policy(policy)
    overrides: dict[str, object] = {}
    if timeout is not None:
        overrides["timeout"] = parse_duration_arg(timeout, "--timeout")
    parsed_gpus = parse_gpus(gpus)
    if parsed_gpus:
        _check_gpus_here(parsed_gpus)
    if parsed_gpus is not None:
        overrides["gpus"] = parsed_gpus
    loaded = loaded.with_overrides(**overrides) if overrides else loaded
    sandbox = _make_sandbox(backend, allow_weaker)
    job = Job(command=command, workspace=workspace, outputs_dir=outputs, run_id="exec", attempt=str(os.getpid()))
    try:
        result = sandbox.run(job, loaded)
    finally:
        sandbox.close()
    if json_output:
        if sys.stdout.isatty():
            out.print_json(result.model_dump_json(), highlight=False)
        else:
            print(result.model_dump_json())
    else:
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)
        if result.status is Status.infra_error:  # one error line, not a verdict line and then the reason again
            console.print(f"[bold red]error:[/] {result.reason}", highlight=False, soft_wrap=True)
        else:
            colour = "green" if result.ok else "red"
            verdict = f"exit={result.exit_code} {result.reason or ''} ({result.duration_s:.2f}s)"
            console.print(f"[{colour}]{result.status}[/] {verdict}", highlight=False)
    if result.status is Status.infra_error:
        raise typer.Exit(2)
    raise typer.Exit(0 if result.ok else 1)


def _check_gpus_here(wanted: int | list[int]) -> None:
    """`--gpus` names GPUs this host has, before any container is made (the engine's own
    error for a missing device comes after creating one, and names a driver, not the fix)."""
    from sandbox.gpus import detect_gpus

    present = [gpu.index for gpu in detect_gpus()]
    seen = f"it has {', '.join(map(str, present))}" if present else "nvidia-smi finds none"
    if isinstance(wanted, list) and (missing := sorted(set(wanted) - set(present))):
        ids = ", ".join(map(str, missing))
        msg = f"--gpus: no GPU {ids} on this host ({seen}); pass ids it has, or leave --gpus out"
        raise BadInputError(msg)
    if isinstance(wanted, int) and wanted > len(present):
        msg = f"--gpus {wanted}: this host has {len(present)} GPU(s) ({seen}); ask for fewer, or leave --gpus out"
        raise BadInputError(msg)


def _make_sandbox(backend: str, allow_weaker: bool) -> Sandbox:
    from sandbox.backends import backend_config, build_sandbox
    from sandbox.errors import PolicyError

    try:
        return build_sandbox(backend_config(backend, allow_weaker=allow_weaker))
    except PolicyError as exc:
        msg = f"--backend: {exc}"
        raise BadInputError(msg) from None


def images_build(
    offline: Annotated[
        bool | None,
        typer.Option(
            "--offline/--online",
            help="Force air-gapped mode (default: chosen by itself when the base cannot be pulled).",
        ),
    ] = None,
    base_image: Annotated[str | None, typer.Option(help="Base image to build on.")] = None,
    force: Annotated[bool, typer.Option(help="Rebuild even when the inputs are unchanged.")] = False,
    runner_only: Annotated[bool, typer.Option(help="Build only sandlab-runner.")] = False,
    executor: Executor = "local",
    ray_address: RayAddress = None,
    runs_dir: RunsDir = DEFAULT_RUNS_DIR,
) -> None:
    """Build sandlab-runner and sandlab-controller, only where their inputs changed.

    With --executor ray, then ship the runner image to every node of the cluster whose copy is
    missing or stale (docker save here, through Ray's object store, docker load there)."""
    check_executor(executor, ray_address)
    from sandbox.backends.docker import CONTROLLER, RUNNER, build_all, connect

    client = connect()
    only = (RUNNER,) if runner_only else (RUNNER, CONTROLLER)
    with console.status("building images") as status:

        def progress(line: str) -> None:
            console.print(f"  {line}", highlight=False, markup=False)
            status.update(line[:BUILD_STATUS_CHARS])

        outcome = build_all(client, offline=offline, base_image=base_image, force=force, progress=progress, only=only)
    for tag, what in outcome:
        out.print(f"{tag}: {what}")
    if executor == "ray":
        _distribute_runner(client, ray_address)


def _distribute_runner(client: object, address: str | None) -> None:
    from sandbox.backends.docker import RUNNER
    from sandbox.cluster import connect
    from sandbox.cluster.admin import distribute_image

    ray = connect(address)
    try:
        with console.status("shipping the runner image") as status:
            rows = distribute_image(ray, client, RUNNER.tag, RUNNER.inputs_hash(), progress=status.update)
    finally:
        ray.shutdown()
    for node, what in rows:
        out.print(f"{RUNNER.tag} on {node}: {what}")
    if any(what.startswith("failed") for _, what in rows):
        raise typer.Exit(1)


def doctor(
    agent: Annotated[str, typer.Option(help="offline or llm.")] = "offline",
    executor: Executor = "local",
    ray_address: RayAddress = None,
    runs_dir: RunsDir = DEFAULT_RUNS_DIR,
) -> None:
    """Check the engine, images, sandbox, disk, GPUs and agent (and with --executor ray, every node).
    Exit 0 when all pass, else 1."""
    from controller.doctor import cluster_checks, run_checks

    check_executor(executor, ray_address)
    with console.status("running checks"):
        checks = run_checks(agent=agent)
        if executor == "ray":
            checks += cluster_checks(ray_address)
    table = Table(title="sandlab doctor")
    for column in ("check", "status", "detail", "fix"):
        table.add_column(column, overflow="fold")
    styles = {"ok": "green", "fail": "bold red", "warn": "yellow", "info": "cyan"}
    for check in checks:
        table.add_row(check.name, f"[{styles[check.status]}]{check.status}[/]", check.detail, check.fix)
    out.print(table)
    raise typer.Exit(1 if any(c.status == "fail" for c in checks) else 0)


def reap(
    run_id: Annotated[str | None, typer.Option("--run", help="Only this run's containers.")] = None,
    executor: Executor = "local",
    ray_address: RayAddress = None,
    runs_dir: RunsDir = DEFAULT_RUNS_DIR,
) -> None:
    """Remove sandlab containers whose owner process is gone (never a live owner's); with
    --executor ray, on every node of the cluster."""
    from sandbox.backends.docker import connect, reap_orphans

    check_executor(executor, ray_address)
    if executor == "ray":
        _reap_nodes(ray_address, run_id)
        return

    report = reap_orphans(connect(), run_id=run_id)
    out.print(
        f"removed {len(report.removed)} orphaned container(s); kept {report.kept_live_owner} "
        f"with a live owner and {report.kept_other_host} from other hosts"
    )
    if report.failed:
        console.print(f"[yellow]could not remove[/] {len(report.failed)}: {', '.join(report.failed)}", highlight=False)


def _reap_nodes(address: str | None, run_id: str | None) -> None:
    from sandbox.cluster import connect
    from sandbox.cluster.admin import reap_nodes

    ray = connect(address)
    try:
        rows = reap_nodes(ray, run_id)
    finally:
        ray.shutdown()
    for node, removed in rows:
        what = f"removed {removed} orphaned container(s)" if isinstance(removed, int) else f"failed: {removed}"
        out.print(f"node {node}: {what}")
    if any(not isinstance(removed, int) for _, removed in rows):
        raise typer.Exit(1)


def reap_for_run(run_id: str | None, backend: str = "docker") -> None:
    """Best-effort reap before `start`/`resume` on the docker backend.

    A failure here must not stop the run (the sandbox reports an unusable engine itself,
    with its own fix), but it is said, with its reason, never swallowed.
    """
    if backend != "docker":
        return
    from sandbox.backends.docker import connect, reap_orphans

    try:
        report = reap_orphans(connect(timeout=REAP_CONNECT_TIMEOUT_S), run_id=run_id)
    except Exception as exc:  # any engine failure: reported below, the run goes on
        console.print(
            f"[yellow]warning:[/] could not reap orphaned containers ({type(exc).__name__}: {exc}); "
            "`controller reap` retries",
            highlight=False,
        )
        return
    if report.removed:
        console.print(f"reaped {len(report.removed)} orphaned container(s)")
    if report.failed:
        console.print(f"[yellow]warning:[/] could not remove {len(report.failed)} orphan(s)", highlight=False)
