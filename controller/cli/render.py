"""How runs look: rich panels and tables for people, plain JSON for scripts.

Tables fit the console. Secondary columns carry a drop order and go one by one until the
rest fits, so the values users copy into their next command (run ids, attempt numbers)
are never cut or folded. Only free text (module and arm names) may wrap; everything else
is shown whole or not at all. `width=None` keeps every column (`--wide`), and
`print_wide` then prints past the console's edge instead of squeezing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

from rich.cells import cell_len
from rich.console import Console, Group, JustifyMethod, RenderableType
from rich.markup import escape
from rich.measure import Measurement
from rich.panel import Panel
from rich.segment import Segments
from rich.table import Table
from rich.text import Text

from controller.ownership import shown_status
from controller.registry import AttemptRecord, RunState
from sandbox.durations import format_duration

console = Console(stderr=True)
"""Progress, errors and anything else that is not the command's answer."""
out = Console()
"""The command's answer (tables, reports), so it can be piped."""

STATUS_STYLE = {
    "ok": "green",
    "error": "red",
    "timeout": "yellow",
    "oom": "magenta",
    "killed": "yellow",
    "infra_error": "bold red",
}
CELL_OVERHEAD = 3
"""Screen cells a table spends on each column beyond its text: one space each side, one border."""
EDGE_OVERHEAD = 1
"""The table's outer border counts one more column than the separators between cells."""
PANEL_OVERHEAD = 4
"""A panel's two borders and one space of padding each side."""
RECENT_ATTEMPTS = 5
"""How many of the latest attempts the run panel lists."""
WIDE_MAX_WIDTH = 10_000
"""What `--wide` measures a renderable against: wide enough for any natural width."""


@dataclass(frozen=True)
class Column:
    """One table column and how it gives way when the console is narrow."""

    header: str
    drop_order: int | None = None
    """None: always shown; otherwise dropped in this order (1 first) until the table fits."""
    wrap_min: int | None = None
    """None: never wrapped (shown whole or dropped); else the fewest cells it may wrap to."""
    justify: JustifyMethod = "left"


def _text_width(markup: str) -> int:
    """Cells the widest line of a markup string takes on screen."""
    return max((cell_len(line) for line in Text.from_markup(markup).plain.splitlines()), default=0)


def _needed_width(column: Column, cells: Sequence[str]) -> int:
    """The fewest cells a column can take without cutting a value it must keep whole."""
    natural = max(_text_width(text) for text in (column.header, *cells))
    return natural if column.wrap_min is None else min(natural, column.wrap_min)


def fit_columns(columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int | None) -> list[int]:
    """Indices of the columns to show in `width` cells (all of them when width is None).

    Secondary columns go in their drop order until the table fits; then any that fits in
    the room a wider one left is brought back, the most important first.
    """
    keep = set(range(len(columns)))
    if width is None:
        return sorted(keep)
    needed = [_needed_width(column, [row[i] for row in rows]) for i, column in enumerate(columns)]

    def fits(indices: set[int]) -> bool:
        return sum(needed[i] + CELL_OVERHEAD for i in indices) + EDGE_OVERHEAD <= width

    secondary = [i for _, i in sorted((c.drop_order, i) for i, c in enumerate(columns) if c.drop_order is not None)]
    dropped: list[int] = []
    for index in secondary:
        if fits(keep):
            break
        keep.discard(index)
        dropped.append(index)
    for index in reversed(dropped):
        if fits(keep | {index}):
            keep.add(index)
    return sorted(keep)


def fitted_table(title: str, columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int | None) -> Table:
    """A table of the columns that fit `width` (see fit_columns)."""
    keep = fit_columns(columns, rows, width)
    table = Table(title=title)
    for index in keep:
        column = columns[index]
        table.add_column(column.header, justify=column.justify, no_wrap=column.wrap_min is None, overflow="fold")
    for row in rows:
        table.add_row(*(row[index] for index in keep))
    return table


def print_wide(target: Console, renderable: RenderableType) -> None:
    """Print at the renderable's natural width, past the console's edge if need be (`--wide`).

    rich never prints wider than its console (it squeezes and cuts instead), so the
    renderable is rendered at its own width and its segments are written uncropped.
    """
    natural = Measurement.get(target, target.options.update_width(WIDE_MAX_WIDTH), renderable).maximum
    width = max(target.width, natural)
    lines = target.render_lines(renderable, target.options.update_width(width), pad=False, new_lines=True)
    target.print(Segments(chain.from_iterable(lines)), crop=False, end="")


# -- tables ---------------------------------------------------------------------------------

ATTEMPT_COLUMNS = (
    Column("#"),
    Column("kind"),
    Column("stage", drop_order=3),
    Column("module / arm", wrap_min=12),
    Column("seed", drop_order=4),
    Column("status"),
    Column("duration", drop_order=2, justify="right"),
    Column("peak mem", drop_order=1, justify="right"),
    Column("gpu peak/util", drop_order=0, justify="right"),
    Column("host score", drop_order=5),
)
"""At 80 columns gpu, peak mem, duration and stage go (in that order); then seed and score if need be."""
SPLIT_NAMES = {"validation": "val"}
"""Short split names for the score column, as the runs table's `best (val)` writes them."""


def _attempt_row(record: AttemptRecord) -> list[str]:
    result = record.result
    what = f"{record.slot} {record.module_digest}" if record.slot else (record.arm or "")
    peak = result.usage.peak_memory_bytes
    split = SPLIT_NAMES.get(record.score_split or "", record.score_split)
    score = "" if record.host_score is None else f"{record.host_score:.4f} ({split})"
    if record.suspect:
        score += " [red]suspect[/]"
    style = STATUS_STYLE.get(record.status, "white")
    return [
        f"{record.number:04d}",
        record.kind,
        record.failed_stage or record.kind,
        escape(what),
        "" if record.seed is None else str(record.seed),
        f"[{style}]{record.status}[/]",
        f"{result.duration_s:.1f}s",
        f"{peak / 2**20:.0f} MiB" if peak else "",
        gpu_usage(record),
        score,
    ]


def gpu_usage(record: AttemptRecord) -> str:
    """Peak GPU memory and mean utilisation, sampled while the job ran ("" without a GPU)."""
    usage = record.result.usage
    if usage.gpu_peak_memory_bytes is None and usage.gpu_utilization_pct is None:
        return ""
    memory = f"{usage.gpu_peak_memory_bytes / 2**30:.1f} GiB" if usage.gpu_peak_memory_bytes is not None else "?"
    util = f"{usage.gpu_utilization_pct:.0f}%" if usage.gpu_utilization_pct is not None else "?"
    return f"{memory} {util}"


def attempts_table(attempts: Sequence[AttemptRecord], width: int | None, title: str = "attempts") -> Table:
    """attempt, kind, stage, module/arm, seed, status, duration, peak memory, score."""
    return fitted_table(title, ATTEMPT_COLUMNS, [_attempt_row(r) for r in attempts], width)


RUN_COLUMNS = (
    Column("run"),
    Column("status"),
    Column("task", drop_order=3),
    Column("agent", drop_order=2),
    Column("iterations", drop_order=1, justify="right"),
    Column("attempts", drop_order=5, justify="right"),
    Column("best (val)", drop_order=6, justify="right"),
    Column("wall", drop_order=4, justify="right"),
)
"""At 80 columns iterations, then agent go (task too for long statuses); the run id and status stay."""


def runs_table(states: Sequence[RunState], width: int | None) -> Table:
    """One row per run."""
    rows = [
        [
            escape(state.run_id),
            shown_status(state),
            escape(state.config.task),
            state.config.agent,
            str(state.iteration),
            str(state.totals.attempts),
            f"{state.best.mean:.4f}" if state.best else "",
            format_duration(max(state.totals.wall_s, 0.1)),
        ]
        for state in states
    ]
    return fitted_table("runs", RUN_COLUMNS, rows, width)


def run_panel(state: RunState, attempts: Sequence[AttemptRecord], width: int | None) -> RenderableType:
    """The live/static view of one run; its table of latest attempts fits inside the panel."""
    config, totals = state.config, state.totals
    left = max(config.budget_s - totals.wall_s, 0)
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    status = shown_status(state)
    note = f"controller pid {state.owner_pid} is gone" if status == "orphaned" else state.message
    grid.add_row("status", Text(status + (f"  ({note})" if note else "")))
    if status == "orphaned":
        grid.add_row("continue", Text(f"controller resume {state.run_id}"))
    grid.add_row("task / agent", Text(f"{config.task} / {config.agent}{' ' + config.model if config.model else ''}"))
    grid.add_row("iteration", f"{state.iteration}  stage: {state.stage}")
    grid.add_row(
        "budget",
        f"{format_duration(max(totals.wall_s, 0.1))} used, {format_duration(max(left, 0.1))} left "
        f"of {format_duration(config.budget_s)}",
    )
    cap = f" of ${config.max_cost_usd:.2f}" if config.max_cost_usd is not None else ""
    grid.add_row(
        "cost",
        f"${totals.cost_usd:.4f}{cap} (LLM ${totals.llm_cost_usd:.4f}, {totals.tokens} tokens; "
        f"GPU ${totals.gpu_cost_usd:.4f})",
    )
    best = f"{state.best.arm}: {state.best.mean:.4f} (validation, n={state.best.n})" if state.best else "none yet"
    grid.add_row("best so far", Text(best))
    by_status = "  ".join(f"[{STATUS_STYLE.get(k, 'white')}]{k}[/] {v}" for k, v in sorted(totals.by_status.items()))
    grid.add_row("attempts", f"{totals.attempts}  {by_status}  repairs {totals.repairs}  rollbacks {totals.rollbacks}")
    per_node = jobs_per_node(attempts)
    if per_node:
        grid.add_row("nodes", Text("  ".join(f"{node} {count}" for node, count in per_node.items())))
    for hit in state.limits_hit[-5:]:
        grid.add_row("[yellow]limit hit[/]", Text(f"{hit.limit} (iteration {hit.iteration}): {hit.detail}"))
    recent = attempts[-RECENT_ATTEMPTS:]
    parts: list[RenderableType] = [grid]
    if recent:
        inner = None if width is None else width - PANEL_OVERHEAD
        parts.append(attempts_table(recent, inner, title="latest attempts"))
    return Panel(Group(*parts), title=f"run {state.run_id}", expand=False)


def jobs_per_node(attempts: Sequence[AttemptRecord]) -> dict[str, int]:
    """Attempts per cluster node, busiest first ({} when every attempt ran on this host)."""
    counts: dict[str, int] = {}
    for record in attempts:
        if record.result.node is not None:
            counts[record.result.node] = counts.get(record.result.node, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


# -- JSON for scripts --------------------------------------------------------------------------


def attempt_json(record: AttemptRecord) -> dict[str, Any]:
    """One attempt as `controller attempts --json` prints it: the table's facts, unformatted."""
    return {
        "number": record.number,
        "key": record.key,
        "kind": record.kind,
        "iteration": record.iteration,
        "slot": record.slot,
        "module_digest": record.module_digest,
        "arm": record.arm,
        "seed": record.seed,
        "status": record.status,
        "failed_stage": record.failed_stage,
        "reason": record.reason,
        "duration_s": record.result.duration_s,
        "peak_memory_bytes": record.result.usage.peak_memory_bytes,
        "node": record.result.node,
        "gpu_peak_memory_bytes": record.result.usage.gpu_peak_memory_bytes,
        "gpu_utilization_pct": record.result.usage.gpu_utilization_pct,
        "host_score": record.host_score,
        "score_split": record.score_split,
        "suspect": record.suspect,
        "suspect_reason": record.suspect_reason,
    }


def run_json(state: RunState) -> dict[str, Any]:
    """run.json's content, as `controller status --json` prints it."""
    return state.model_dump(mode="json")


EVENT_SKIPPED = ("timestamp", "level", "event", "run_id")
"""Fields an event line shows in its own place, or not at all (the run is the one asked for)."""


def event_line(raw: str) -> str:
    """One controller event (a JSON line of events.jsonl) as a person reads it:
    `17:44:05 info    attempt.finished  attempt=2 kind=guard status=ok`. A line that is not
    an event object is shown as it is."""
    try:
        event = json.loads(raw)
    except ValueError:
        return raw
    if not isinstance(event, dict) or "event" not in event:
        return raw
    stamp = str(event.get("timestamp", ""))
    clock = stamp[11:19] if len(stamp) >= 19 else stamp
    fields = " ".join(f"{key}={_event_value(value)}" for key, value in event.items() if key not in EVENT_SKIPPED)
    return f"{clock} {event.get('level', '')!s:<7} {event['event']}  {fields}".rstrip()


def _event_value(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value))
    text = str(value)
    return json.dumps(text) if not text or any(c.isspace() for c in text) else text
