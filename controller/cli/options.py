"""Options several commands share, and the parsers that turn what users type into values.

Every parser raises BadInputError naming the flag and the fix, which `main` prints as one
line with exit status 2.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from controller.errors import BadInputError
from controller.plan import RESERVED_HYPER
from sandbox.durations import parse_duration

RunsDir = Annotated[
    Path,
    typer.Option("--runs-dir", envvar="SANDLAB_RUNS_DIR", help="Run registry folder.", file_okay=False),
]
DEFAULT_RUNS_DIR = Path("runs")
Wide = Annotated[
    bool,
    typer.Option("--wide", help="Show every column, even past the terminal's edge (status: prints once)."),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print plain JSON for scripts (no colour, no table).")]
Executor = Annotated[
    str,
    typer.Option(
        help="Where attempts run: local (this host) or ray (the nodes of a Ray cluster: pip install 'sandlab\\[ray]')."
    ),
]
RayAddress = Annotated[
    str | None,
    typer.Option(
        envvar="RAY_ADDRESS",
        help="With --executor ray: the head's address (host:port), or auto to join the cluster running here.",
    ),
]
EXECUTORS = ("local", "ray")


def check_executor(executor: str, ray_address: str | None = None) -> None:
    """Refuse an unknown executor, and a --ray-address typed for the local executor, with the fix.

    An address that only comes from RAY_ADDRESS in the environment is let be: a shell set up
    for a cluster should not break local commands.
    """
    if executor not in EXECUTORS:
        msg = f"--executor: unknown executor {executor!r}; use {' or '.join(EXECUTORS)}"
        raise BadInputError(msg)
    if executor != "ray" and ray_address is not None and ray_address != os.environ.get("RAY_ADDRESS"):
        msg = "--ray-address is for --executor ray; add --executor ray, or leave out --ray-address"
        raise BadInputError(msg)


def check_backend(backend: str, *, allow_weaker: bool = False) -> None:
    """Refuse an unknown backend, and --allow-weaker where nothing is weaker (docker enforces every policy)."""
    from sandbox.backends import BACKENDS

    if backend not in BACKENDS:
        msg = f"--backend: unknown backend {backend!r}; use {' or '.join(BACKENDS)}"
        raise BadInputError(msg)
    if allow_weaker and backend != "local":
        msg = f"--allow-weaker is for --backend local; the {backend} backend enforces every policy, so leave it out"
        raise BadInputError(msg)


TORCH_SAVE_MAGIC = (b"PK\x03\x04", b"\x80")
"""How a torch.save file begins: a zip archive (torch >= 1.6), or a legacy pickle."""


def check_pretrained(path: Path | None, arch: str, matrix: str | None) -> None:
    """Refuse --pretrained weights no arm would load, or a file torch.save did not write."""
    if path is None:
        return
    if arch != "resnet18" and "resnet18" not in (matrix or ""):
        msg = "--pretrained holds resnet18 trunk weights; add --arch resnet18 (or an arch=resnet18 arm to --matrix)"
        raise BadInputError(msg)
    with path.open("rb") as handle:
        head = handle.read(4)
    if not head.startswith(TORCH_SAVE_MAGIC):
        msg = f"--pretrained {path}: not a torch.save file; write it with torch.save(model.state_dict(), FILE)"
        raise BadInputError(msg)


AGENTS = ("offline", "llm")


def check_agent(agent: str, model: str | None) -> None:
    """Refuse an unknown agent, an LLM agent without a model, and a model the offline agent would ignore."""
    if agent not in AGENTS:
        msg = f"--agent: unknown agent {agent!r}; use {' or '.join(AGENTS)}"
        raise BadInputError(msg)
    if agent == "llm" and not model:
        msg = "--agent llm needs --model NAME (set OPENAI_BASE_URL and OPENAI_API_KEY too)"
        raise BadInputError(msg)
    if agent != "llm" and model:
        msg = f"--model {model} is for --agent llm; add --agent llm, or leave out --model (the offline agent uses none)"
        raise BadInputError(msg)

REPORT_RESERVE_MIN_S = 30.0
REPORT_RESERVE_MAX_S = 90.0
REPORT_RESERVE_SHARE = 0.2
"""The final report keeps a fifth of the budget, within 30 to 90 seconds."""


def report_reserve(budget_s: float) -> float:
    return min(REPORT_RESERVE_MAX_S, max(REPORT_RESERVE_MIN_S, budget_s * REPORT_RESERVE_SHARE))


MIN_SEEDS = 2
"""Selection compares arms by their seed means: one seed per arm would pick a lucky draw."""
MAX_SEEDS = 20


def parse_duration_arg(text: str, flag: str) -> float:
    """parse_duration with the flag named in the error."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        msg = f"{flag}: {exc}"
        raise BadInputError(msg) from None


def parse_usd(text: str, flag: str) -> float:
    """A dollar cap as users write it (5usd, $5, 5, 0.50usd); above 0, since a cap of 0 ends
    the run (or iteration) before its first job: caps are checked as `spent >= cap`."""
    raw = text.strip().lower().removeprefix("$").removesuffix("usd").strip()
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also NaN
        msg = f"{flag}: invalid amount {text!r}; write it like 5usd or 0.5"
        raise BadInputError(msg)
    if value == 0:
        msg = f"{flag}: {text!r} would end every run or iteration before it starts; give an amount like 0.5usd"
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
        if key.strip() in RESERVED_HYPER:
            msg = f"{flag}: {key.strip()} is the loop's to set (what data a job sees, how it is checked), not a variant"
            raise BadInputError(msg)
        grid[key.strip()] = items
    return grid


def parse_gpus(text: str | None) -> int | list[int] | None:
    """`--gpus` as a count (`1`) or device ids (`0,2`)."""
    if text is None:
        return None
    msg = f"invalid --gpus {text!r}; give a count like 1 or device ids like 0,2"
    try:
        gpus: int | list[int] = (
            [int(x) for x in text.strip("[]").split(",") if x.strip()]
            if "," in text or text.startswith("[")
            else int(text)
        )
    except ValueError:
        raise BadInputError(msg) from None
    if min(gpus if isinstance(gpus, list) else [gpus], default=0) < 0:
        raise BadInputError(msg)
    return gpus


def check_seeds(seeds: int, first: int = 0) -> list[int]:
    """The seeds for `--seeds N --first-seed F`: at least two, so that selection never rests on one."""
    if seeds < MIN_SEEDS:
        msg = (
            f"--seeds: {seeds} is too few; selection compares arms over seeds and never rests on one, "
            f"so use --seeds {MIN_SEEDS} or more"
        )
        raise BadInputError(msg)
    if seeds > MAX_SEEDS:
        msg = f"--seeds: {seeds} is too many; use at most {MAX_SEEDS}"
        raise BadInputError(msg)
    if first < 0:
        msg = f"--first-seed: {first} is negative; give 0 or more"
        raise BadInputError(msg)
    return list(range(first, first + seeds))


ITERATION_LIMIT_FLAGS = {
    "wall_s": "--iteration-wall",
    "gpu_s": "--iteration-gpu-time",
    "cost_usd": "--iteration-cost",
    "tokens": "--iteration-tokens",
    "repairs_per_module": "--iteration-repairs",
    "attempts": "--iteration-attempts",
}
"""Each field of controller.ledger.IterationLimits and the `controller start` flag that sets it."""


def _count(value: int | None, flag: str, least: int) -> float | None:
    if value is None:
        return None
    if value < least:
        msg = f"{flag}: {value} is too few; give a whole number of at least {least}"
        raise BadInputError(msg)
    return float(value)


def parse_iteration_limits(
    *,
    wall: str | None = None,
    gpu_time: str | None = None,
    cost: str | None = None,
    tokens: int | None = None,
    repairs: int | None = None,
    attempts: int | None = None,
) -> dict[str, float]:
    """RunConfig.iteration_limits from the `--iteration-*` flags; a flag left out keeps its default.

    A limit of zero would cut every iteration before its first job (they are checked as
    `used >= limit`), so only repairs, where zero means "roll back at once", may be 0.
    """
    flags = ITERATION_LIMIT_FLAGS
    parsed: dict[str, float | None] = {
        "wall_s": parse_duration_arg(wall, flags["wall_s"]) if wall is not None else None,
        "gpu_s": parse_duration_arg(gpu_time, flags["gpu_s"]) if gpu_time is not None else None,
        "cost_usd": parse_usd(cost, flags["cost_usd"]) if cost is not None else None,
        "tokens": _count(tokens, flags["tokens"], 1),
        "repairs_per_module": _count(repairs, flags["repairs_per_module"], 0),
        "attempts": _count(attempts, flags["attempts"], 1),
    }
    return {key: value for key, value in parsed.items() if value is not None}
