"""Rendering runs for `status`, `attempts`, `logs` and `report` (rich)."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table

from controller.registry import AttemptRecord, RunState
from sandbox.durations import format_duration

STATUS_STYLE = {
    "ok": "green",
    "error": "red",
    "timeout": "yellow",
    "oom": "magenta",
    "killed": "yellow",
    "infra_error": "bold red",
}


def run_panel(state: RunState, attempts: list[AttemptRecord]) -> RenderableType:
    """The live/static view of one run."""
    config, totals = state.config, state.totals
    left = max(config.budget_s - totals.wall_s, 0)
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("status", state.status + (f"  ({state.message})" if state.message else ""))
    grid.add_row("task / agent", f"{config.task} / {config.agent}{' ' + config.model if config.model else ''}")
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
    grid.add_row("best so far", best)
    by_status = "  ".join(f"[{STATUS_STYLE.get(k, 'white')}]{k}[/] {v}" for k, v in sorted(totals.by_status.items()))
    grid.add_row("attempts", f"{totals.attempts}  {by_status}  repairs {totals.repairs}  rollbacks {totals.rollbacks}")
    for hit in state.limits_hit[-5:]:
        grid.add_row("[yellow]limit hit[/]", f"{hit.limit} (iteration {hit.iteration}): {hit.detail}")
    recent = attempts[-5:]
    parts: list[RenderableType] = [grid]
    if recent:
        parts.append(attempts_table(recent, title="latest attempts"))
    return Panel(Group(*parts), title=f"run {state.run_id}", expand=False)


def attempts_table(attempts: list[AttemptRecord], title: str = "attempts") -> Table:
    """attempt, kind, stage, module/arm, status, duration, peak memory, score."""
    table = Table(title=title)
    for column in ("#", "kind", "stage", "module / arm", "seed", "status", "duration", "peak mem", "host score"):
        table.add_column(column, overflow="fold")
    for record in attempts:
        result = record.result
        stage = record.failed_stage or record.kind
        what = f"{record.slot} {record.module_digest}" if record.slot else (record.arm or "")
        peak = result.usage.peak_memory_bytes
        score = "" if record.host_score is None else f"{record.host_score:.4f} ({record.score_split})"
        if record.suspect:
            score += " [red]suspect[/]"
        style = STATUS_STYLE.get(record.status, "white")
        table.add_row(
            f"{record.number:04d}",
            record.kind,
            stage,
            what,
            "" if record.seed is None else str(record.seed),
            f"[{style}]{record.status}[/]",
            f"{result.duration_s:.1f}s",
            f"{peak / 2**20:.0f} MiB" if peak else "",
            score,
        )
    return table


def runs_table(states: list[RunState]) -> Table:
    """One row per run."""
    table = Table(title="runs")
    for column in ("run", "status", "task", "agent", "iterations", "attempts", "best (val)", "wall"):
        table.add_column(column)
    for state in states:
        best = f"{state.best.mean:.4f}" if state.best else ""
        table.add_row(
            state.run_id,
            state.status,
            state.config.task,
            state.config.agent,
            str(state.iteration),
            str(state.totals.attempts),
            best,
            format_duration(max(state.totals.wall_s, 0.1)),
        )
    return table
