"""Objects shared by the CLI modules: the typer apps, consoles and common options."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from controller.errors import BadInputError
from sandbox.durations import parse_duration

app = typer.Typer(
    name="controller",
    help="sandlab: an autonomous ML-research loop that runs every job in a disposable container.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
sandbox_app = typer.Typer(help="Run commands in disposable containers.", no_args_is_help=True)
images_app = typer.Typer(help="Build the runner and controller images.", no_args_is_help=True)
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(images_app, name="images")

console = Console(stderr=True)
out = Console()

RunsDir = Annotated[
    Path,
    typer.Option("--runs-dir", envvar="SANDLAB_RUNS_DIR", help="Run registry folder.", file_okay=False),
]
DEFAULT_RUNS_DIR = Path("runs")


def parse_duration_arg(text: str, flag: str) -> float:
    """parse_duration with the flag named in the error."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        msg = f"{flag}: {exc}"
        raise BadInputError(msg) from None


def parse_usd(text: str, flag: str) -> float:
    """Dollar amounts as users write them: 5usd, $5, 5, 0.50usd."""
    raw = text.strip().lower().removeprefix("$").removesuffix("usd").strip()
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value < 0:
        msg = f"{flag}: invalid amount {text!r}; write it like 5usd or 0.5"
        raise BadInputError(msg)
    return value
