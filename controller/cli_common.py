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


def _scalar(text: str) -> float | int | str:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            continue
    return text


def parse_grid(text: str, flag: str) -> dict[str, list[float | int | str]]:
    """`lr=0.003,0.006;arch=cnn,resnet18` -> {"lr": [0.003, 0.006], "arch": ["cnn", "resnet18"]}."""
    grid: dict[str, list[float | int | str]] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        key, sep, values = part.partition("=")
        items = [_scalar(v.strip()) for v in values.split(",") if v.strip()]
        if not sep or not key.strip() or not items:
            msg = f"{flag}: cannot read {part!r}; write it like lr=0.003,0.006;arch=cnn,resnet18"
            raise BadInputError(msg)
        grid[key.strip()] = items
    return grid
