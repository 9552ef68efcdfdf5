"""The run's dashboard (report/index.html) and the runs index (runs/index.html).

One self-contained HTML file per run: figures inlined as base64 data URIs, inline CSS, no
script, nothing fetched, so it opens from disk, from a copy of the run folder, or from an
archive. It shows what summary.md shows (the same tables, from the same functions) plus the
figures, links to every attempt's logs, events and code, the review's checks and the report
steps that failed. While the run goes on the page reloads itself every few seconds.

Arm names, reasons, notes and review text come from generated code and an LLM: the
template escapes everything (jinja2 autoescape), and nothing here marks a string safe.
"""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from controller.agents.base import verdict_of
from controller.figures import Figure
from controller.registry import AttemptRecord, RunState
from controller.report import aggregates, best_summary
from controller.store import RunStore, write_text_atomic
from sandbox.durations import format_duration

if TYPE_CHECKING:
    from controller.report import Results

LIVE_REFRESH_S = 10
"""How often a live run's dashboard (and a runs index with a live run) reloads itself."""
DASHBOARD = "report/index.html"
"""Where a run's dashboard is, relative to its folder."""
RUNS_INDEX = "index.html"
MIB = 2**20

_env = Environment(
    loader=PackageLoader("controller", "templates"),
    undefined=StrictUndefined,
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
)


def write_dashboard(
    results: Results,
    figures: list[Figure],
    *,
    review: dict[str, Any] | None = None,
    problems: list[str] | None = None,
) -> Path:
    """report/index.html, written atomically; returns its path."""
    path = results.store.root / DASHBOARD
    write_text_atomic(path, render_dashboard(results, figures, review=review, problems=problems))
    return path


def render_dashboard(
    results: Results,
    figures: list[Figure],
    *,
    review: dict[str, Any] | None = None,
    problems: list[str] | None = None,
) -> str:
    """The dashboard's HTML."""
    state = results.state
    report_dir = results.store.root / "report"
    problems = list(problems or [])
    inlined = [item for figure in figures if (item := inline_figure(figure, report_dir, problems)) is not None]
    live = state.status == "running" or not results.final
    return _env.get_template("dashboard.html.j2").render(
        state=state,
        task=results.task,
        final=results.final,
        refresh_s=LIVE_REFRESH_S if live else None,
        aggregate=aggregates(results),
        best=best_summary(results),
        chosen=results.chosen[0].name if results.chosen else None,
        history=[iteration_row(outcome.model_dump(mode="json")) for outcome in results.history],
        attempts=[attempt_row(results.store, record) for record in results.store.attempts()],
        figures=inlined,
        review=review_sections(review) if review is not None else None,
        problems=problems,
        wall=format_duration(max(state.totals.wall_s, 0.1)),
        budget=format_duration(state.config.budget_s),
        generated=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def inline_figure(figure: Figure, report_dir: Path, problems: list[str]) -> dict[str, str] | None:
    """The figure as a data URI with its caption; a missing PNG becomes a problem line."""
    try:
        data = figure.png.read_bytes()
    except OSError as exc:
        problems.append(f"figure {figure.name}: cannot read {figure.png.name} ({exc.strerror or exc})")
        return None
    return {
        "name": figure.name,
        "title": figure.title,
        "caption": figure.caption,
        "src": "data:image/png;base64," + base64.b64encode(data).decode("ascii"),
        "pdf": Path(os.path.relpath(figure.pdf, report_dir)).as_posix(),
    }


def iteration_row(outcome: dict[str, Any]) -> dict[str, Any]:
    """One iteration: hypothesis, verdict, and the novelty against the baseline."""
    hid = outcome["hypothesis"]["id"]
    novelty = f"novelty:{hid}"
    mean, base = outcome["arm_means"].get(novelty), outcome["baseline_mean"]
    return {
        **outcome,
        "novelty": novelty,
        "diff": mean - base if mean is not None and base is not None else None,
        "p_holm_novelty": outcome["p_holm"].get(novelty),
        "verdict": verdict_of(bool(outcome["supported"]), outcome.get("excluded"))
        if mean is not None
        else "untested (no novelty seed was scored)",
    }


def attempt_row(store: RunStore, record: AttemptRecord) -> dict[str, Any]:
    """One attempt with relative links (from report/) to its logs, events and code."""
    folder = store.attempt_dir(record.number)
    href = f"../attempts/{record.number:04d}/"
    links = [(name, href + name) for name in ("stdout.log", "stderr.log", "events.jsonl") if (folder / name).is_file()]
    if (folder / "code").is_dir():
        links.append(("code/", href + "code/"))
    peak = record.result.usage.peak_memory_bytes
    return {
        "number": f"{record.number:04d}",
        "kind": record.kind,
        "iteration": record.iteration,
        "what": record.arm or record.slot or "",
        "seed": "" if record.seed is None else record.seed,
        "status": record.status,
        "why": record.reason or "",
        "failed_stage": record.failed_stage or "",
        "duration": f"{record.result.duration_s:.1f}s",
        "peak": f"{round(peak / MIB)} MiB" if peak else "",
        "score": f"{record.host_score:.4f} ({record.score_split})" if record.host_score is not None else "",
        "suspect": (record.suspect_reason or "suspect") if record.suspect else "",
        "links": links,
    }


def review_sections(review: dict[str, Any]) -> dict[str, Any]:
    """The review rendered generically: its checks as a table, anything else as text or JSON."""
    checks = [
        {"name": str(c.get("name", "")), "ok": bool(c.get("ok")), "detail": str(c.get("detail", ""))}
        for c in review.get("checks", [])
        if isinstance(c, dict)
    ]
    other = [
        {"key": str(key), "text": value if isinstance(value, str) else json.dumps(value, indent=2, default=str)}
        for key, value in review.items()
        if key != "checks"
    ]
    return {"checks": checks, "other": other}


# -- the runs index ------------------------------------------------------------------------------


def write_runs_index(runs_dir: Path) -> Path:
    """runs/index.html: one row per run, newest first, linking to each run's dashboard."""
    path = runs_dir / RUNS_INDEX
    write_text_atomic(path, render_runs_index(runs_dir))
    return path


def render_runs_index(runs_dir: Path) -> str:
    states = list(reversed(RunStore.list_runs(runs_dir)))
    rows = [run_row(runs_dir, state) for state in states]
    live = any(state.status == "running" for state in states)
    return _env.get_template("runs_index.html.j2").render(
        rows=rows,
        runs_dir=str(runs_dir.absolute()),
        refresh_s=LIVE_REFRESH_S if live else None,
        generated=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def run_row(runs_dir: Path, state: RunState) -> dict[str, Any]:
    """A run's line: where its dashboard is, its best validation arm and its test value."""
    best_json = _read_json(runs_dir / state.run_id / "best.json")
    test = best_json.get("value") if best_json else None
    has_dashboard = (runs_dir / state.run_id / DASHBOARD).is_file()
    return {
        "run_id": state.run_id,
        "href": f"{state.run_id}/{DASHBOARD}" if has_dashboard else None,
        "status": state.status,
        "integrity": state.integrity,
        "task": state.config.task,
        "agent": state.config.agent + (f" ({state.config.model})" if state.config.model else ""),
        "best": state.best,
        "test": test if isinstance(test, int | float) else None,
        "test_arm": best_json.get("arm") if best_json else None,
        "wall": format_duration(max(state.totals.wall_s, 0.1)),
        "cost": state.totals.cost_usd,
        "created": state.created_at.strftime("%Y-%m-%d %H:%M"),
    }


def _read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object, or None when the file is missing or half-written by an older version."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
