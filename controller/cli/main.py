"""The `controller` app: every command registered here, by name, and the error mapping.

Registration is explicit, in `register_commands`, rather than by decorators that run as
a side effect of importing a module: this file is the one index of the command line,
and each command module is plain functions that a test can import without an app.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import typer
from typer.exceptions import Abort, TyperException

from controller.cli import inspect, research, runs
from controller.cli import sandbox as sandbox_cli  # not to be read as the top-level sandbox package
from controller.cli.render import console
from controller.errors import ControllerError
from controller.runlog import configure_cli_logging
from sandbox.errors import SandboxError

RUNS_PANEL = "Runs"
INSPECT_PANEL = "Inspect"
SANDBOX_PANEL = "Sandbox"
BAD_INPUT_EXIT = 2
"""Bad input or an infrastructure failure: one line on stderr, never a traceback."""
INTERRUPTED_EXIT = 130


COMMANDS: tuple[tuple[str, tuple[Callable[..., None], ...]], ...] = (
    (RUNS_PANEL, (runs.start, research.plan, runs.resume, runs.stop, runs.rerun)),
    (INSPECT_PANEL, (inspect.status, inspect.attempts, inspect.logs, inspect.report)),
    (SANDBOX_PANEL, (sandbox_cli.doctor, sandbox_cli.reap)),
)
"""Every top-level command by `--help` panel; each is named after its function."""


def register_commands(app: typer.Typer) -> None:
    """Attach every command to `app`, grouped in `--help` as the modules are."""
    for panel, commands in COMMANDS:
        for command in commands:
            app.command(rich_help_panel=panel)(command)

    sandbox_app = typer.Typer(help="Run commands in disposable containers.", no_args_is_help=True)
    sandbox_app.command("exec", context_settings={"allow_interspersed_args": False})(sandbox_cli.sandbox_exec)
    app.add_typer(sandbox_app, name="sandbox", rich_help_panel=SANDBOX_PANEL)

    images_app = typer.Typer(help="Build the runner and controller images.", no_args_is_help=True)
    images_app.command("build")(sandbox_cli.images_build)
    app.add_typer(images_app, name="images", rich_help_panel=SANDBOX_PANEL)


def build_app() -> typer.Typer:
    """The whole command line, every command attached."""
    app = typer.Typer(
        name="controller",
        help="sandlab: an autonomous ML-research loop that runs every job in a disposable container.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    register_commands(app)
    return app


app = build_app()


def main(argv: list[str] | None = None) -> int:
    """Console-script entry: map every expected failure to one line and an exit status."""
    configure_cli_logging()
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="controller", standalone_mode=False)
    except TyperException as exc:
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ != "NoArgsIsHelpError":  # for that one typer has printed the help already
            where = ctx.command_path if ctx is not None else "controller"
            console.print(
                f"[bold red]error:[/] {exc.format_message()} (see `{where} --help`)", highlight=False, soft_wrap=True
            )
        code = BAD_INPUT_EXIT
    except Abort:
        console.print("[yellow]interrupted[/]")
        code = INTERRUPTED_EXIT
    except (ControllerError, SandboxError) as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        code = BAD_INPUT_EXIT
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        code = INTERRUPTED_EXIT
    except Exception as exc:
        if os.environ.get("SANDLAB_DEBUG"):
            raise
        console.print(
            f"[bold red]internal error:[/] {type(exc).__name__}: {exc} "
            "(a sandlab bug; rerun with SANDLAB_DEBUG=1 for the traceback and report it)",
            highlight=False,
            soft_wrap=True,
        )
        code = BAD_INPUT_EXIT
    if isinstance(code, int):
        return code
    return 0


def entry() -> None:
    """`python -m controller` and the console script."""
    sys.exit(main())
