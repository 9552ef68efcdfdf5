"""The `controller` command line (typer + rich).

Bad input gets one line naming the fix and exit status 2, never a traceback.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from typer.exceptions import Abort, TyperException

from controller.cli_common import (
    DEFAULT_RUNS_DIR,
    RunsDir,
    app,
    console,
    images_app,
    out,
    parse_duration_arg,
    sandbox_app,
)
from controller.errors import BadInputError, ControllerError
from sandbox.errors import SandboxError

# -- sandbox exec -----------------------------------------------------------------------


def _parse_gpus(text: str | None) -> int | list[int] | None:
    if text is None:
        return None
    try:
        if "," in text or text.startswith("["):
            return [int(x) for x in text.strip("[]").split(",") if x.strip()]
        return int(text)
    except ValueError:
        msg = f"invalid --gpus {text!r}; give a count like 1 or device ids like 0,2"
        raise BadInputError(msg) from None


@sandbox_app.command("exec", context_settings={"allow_interspersed_args": False})
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

    loaded = load_policy(policy)
    overrides: dict[str, object] = {}
    if timeout is not None:
        overrides["timeout"] = parse_duration_arg(timeout, "--timeout")
    parsed_gpus = _parse_gpus(gpus)
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
        out.print_json(result.model_dump_json(), highlight=False) if sys.stdout.isatty() else print(
            result.model_dump_json()
        )
    else:
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)
        colour = "green" if result.ok else "red"
        console.print(
            f"[{colour}]{result.status}[/] exit={result.exit_code} {result.reason or ''} ({result.duration_s:.2f}s)",
            highlight=False,
        )
    if result.status is Status.infra_error:
        if not json_output:
            console.print(f"[bold red]error:[/] {result.reason}", highlight=False)
        raise typer.Exit(2)
    raise typer.Exit(0 if result.ok else 1)


def _make_sandbox(backend: str, allow_weaker: bool):  # type: ignore[no-untyped-def]
    from sandbox.backends import DockerBackendConfig, LocalBackendConfig

    if backend == "docker":
        return DockerBackendConfig().build()
    if backend == "local":
        return LocalBackendConfig(allow_weaker=allow_weaker).build()
    msg = f"unknown backend {backend!r}; use docker or local"
    raise BadInputError(msg)


# -- images, doctor, reap -----------------------------------------------------------------


@images_app.command("build")
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
    runs_dir: RunsDir = DEFAULT_RUNS_DIR,
) -> None:
    """Build sandlab-runner and sandlab-controller, only where their inputs changed."""
    from sandbox.engine import connect
    from sandbox.images import CONTROLLER, RUNNER, build_all

    client = connect()
    only = (RUNNER,) if runner_only else (RUNNER, CONTROLLER)
    with console.status("building images") as status:

        def progress(line: str) -> None:
            console.print(f"  {line}", highlight=False, markup=False)
            status.update(line[:100])

        outcome = build_all(client, offline=offline, base_image=base_image, force=force, progress=progress, only=only)
    for tag, what in outcome:
        out.print(f"{tag}: {what}")


@app.command()
def doctor(
    agent: Annotated[str, typer.Option(help="offline or llm.")] = "offline",
    runs_dir: RunsDir = DEFAULT_RUNS_DIR,
) -> None:
    """Check the engine, images, sandbox, disk, GPUs and agent. Exit 0 when all pass, else 1."""
    from controller.doctor import run_checks

    with console.status("running checks"):
        checks = run_checks(agent=agent)
    table = Table(title="sandlab doctor")
    for column in ("check", "status", "detail", "fix"):
        table.add_column(column, overflow="fold")
    styles = {"ok": "green", "fail": "bold red", "warn": "yellow", "info": "cyan"}
    for check in checks:
        table.add_row(check.name, f"[{styles[check.status]}]{check.status}[/]", check.detail, check.fix)
    out.print(table)
    raise typer.Exit(1 if any(c.status == "fail" for c in checks) else 0)


@app.command()
def reap(
    run_id: Annotated[str | None, typer.Option("--run", help="Only this run's containers.")] = None,
    runs_dir: RunsDir = DEFAULT_RUNS_DIR,
) -> None:
    """Remove sandlab containers whose owner process is gone (never a live owner's)."""
    from sandbox.engine import connect
    from sandbox.reaper import reap_orphans

    report = reap_orphans(connect(), run_id=run_id)
    out.print(
        f"removed {len(report.removed)} orphaned container(s); kept {report.kept_live_owner} "
        f"with a live owner and {report.kept_other_host} from other hosts"
    )


# Registers start, resume, stop, status, attempts, logs, report and rerun on `app`.
from controller import cli_runs  # noqa: E402, F401

# -- entry point --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Console-script entry: map every expected failure to one line and an exit status."""
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="controller", standalone_mode=False)
    except TyperException as exc:
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
            print(ctx.get_help(), file=sys.stderr)
        else:
            where = ctx.command_path if ctx is not None else "controller"
            console.print(
                f"[bold red]error:[/] {exc.format_message()} (see `{where} --help`)", highlight=False, soft_wrap=True
            )
        code = 2
    except Abort:
        console.print("[yellow]interrupted[/]")
        code = 130
    except (ControllerError, SandboxError) as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        code = 2
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        code = 130
    except Exception as exc:
        if os.environ.get("SANDLAB_DEBUG"):
            raise
        console.print(
            f"[bold red]internal error:[/] {type(exc).__name__}: {exc} "
            "(a sandlab bug; rerun with SANDLAB_DEBUG=1 for the traceback and report it)",
            highlight=False,
            soft_wrap=True,
        )
        code = 2
    if isinstance(code, int):
        return code
    return 0


def entry() -> None:
    """`python -m controller` and the console script."""
    sys.exit(main())


if __name__ == "__main__":
    entry()
