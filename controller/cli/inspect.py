"""Commands that read a run without changing it: status, attempts, logs and report.

They read the run folder only, so they work while the run goes on in another process,
after it died, and on a copy of the folder on another machine.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import RenderableType
from rich.live import Live
from rich.markdown import Markdown

from controller.cli.options import DEFAULT_RUNS_DIR, AsJson, RunsDir, Wide
from controller.cli.render import (
    attempt_json,
    attempts_table,
    console,
    event_line,
    out,
    print_wide,
    run_json,
    run_panel,
    runs_table,
)
from controller.errors import BadInputError
from controller.ownership import owner_alive
from controller.store import RunStore

LIVE_REFRESH_S = 1.0
LIVE_FRAMES_PER_S = 2


def _print_json(data: Any) -> None:
    """Plain JSON on stdout: no rich markup, colour or wrapping, whatever the terminal."""
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def _show(renderable: RenderableType, wide: bool) -> None:
    if wide:
        print_wide(out, renderable)
    else:
        out.print(renderable)


def _running(store: RunStore) -> bool:
    state = store.load_state()
    return state.status == "running" and owner_alive(state)


def status(
    run_id: Annotated[str | None, typer.Argument(help="A run (default: list all runs).")] = None,
    once: Annotated[bool, typer.Option(help="Print once instead of a live view.")] = False,
    wide: Wide = False,
    as_json: AsJson = False,
    runs_dir: RunsDir = DEFAULT_RUNS_DIR,
) -> None:
    """A live view of a run (iteration, stage, budget left, cost, best, attempts), or all runs."""
    width = None if wide else out.width
    if run_id is None:
        if not runs_dir.is_dir():
            msg = f"no runs folder {runs_dir}; pass --runs-dir (or set SANDLAB_RUNS_DIR) to where the runs are"
            raise BadInputError(msg)
        states = RunStore.list_runs(runs_dir)
        if as_json:
            _print_json([run_json(state) for state in states])
        else:
            _show(runs_table(states, width), wide)
        return
    store = RunStore.open(runs_dir, run_id)
    state = store.load_state()
    if as_json:
        _print_json(run_json(state))
        return
    # A live view redraws in place, which only works on a terminal and within its width.
    if once or wide or not (state.status == "running" and owner_alive(state)) or not out.is_terminal:
        _show(run_panel(state, store.attempts(), width), wide)
        return
    with Live(run_panel(state, store.attempts(), out.width), console=out, refresh_per_second=LIVE_FRAMES_PER_S) as live:
        while state.status == "running" and owner_alive(state):
            time.sleep(LIVE_REFRESH_S)
            state = store.load_state()
            live.update(run_panel(state, store.attempts(), out.width))


def attempts(
    run_id: Annotated[str, typer.Argument(help="The run.")],
    wide: Wide = False,
    as_json: AsJson = False,
    runs_dir: RunsDir = DEFAULT_RUNS_DIR,
) -> None:
    """A table of every attempt: stage, module or arm, status, duration, peak memory, score."""
    store = RunStore.open(runs_dir, run_id)
    records = store.attempts()
    if as_json:
        _print_json([attempt_json(record) for record in records])
        return
    _show(attempts_table(records, None if wide else out.width, title=f"attempts of {run_id}"), wide)


def logs(
    run_id: Annotated[str, typer.Argument(help="The run.")],
    attempt: Annotated[int | None, typer.Option(help="Attempt number (default: the controller's own log).")] = None,
    stderr: Annotated[bool, typer.Option("--stderr", help="Show the attempt's stderr instead of stdout.")] = False,
    follow: Annotated[bool, typer.Option(help="Keep printing as the run goes on.")] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="The controller's events as their raw JSON lines (events.jsonl).")
    ] = False,
    runs_dir: RunsDir = DEFAULT_RUNS_DIR,
) -> None:
    """An attempt's container logs, or the controller's events (with --follow, as they come)."""
    store = RunStore.open(runs_dir, run_id)
    if attempt is None:
        _follow_file(store.root / "events.jsonl", follow, store, raw=json_output)
        return
    folder = store.attempt_dir(attempt)
    name = "stderr.log" if stderr else "stdout.log"
    while not (folder / "attempt.json").is_file():
        running = _running(store)
        if not follow or not running:
            known = [r.number for r in store.attempts()]
            span = f"attempts are {known[0]}..{known[-1]}" if known else "it has no finished attempt yet"
            msg = (
                f"no attempt {attempt} in run {run_id}; {span}"
                if attempt < 1 or not running
                else f"attempt {attempt} of {run_id} has not finished; {span} (use --follow to wait)"
            )
            raise BadInputError(msg)
        time.sleep(LIVE_REFRESH_S)
    text = (folder / name).read_text(errors="replace")
    out.print(text, end="", markup=False, highlight=False, soft_wrap=True)
    record = store.attempt(attempt)
    console.print(f"[dim]attempt {attempt}: {record.kind} {record.status} ({record.reason or ''})[/]")


def _follow_file(path: Path, follow: bool, store: RunStore, *, raw: bool) -> None:
    position = 0
    while True:
        if path.is_file():
            with path.open() as fh:
                fh.seek(position)
                while line := fh.readline():
                    if follow and not line.endswith("\n"):
                        break  # still being written: it is read whole on the next round
                    text = line.rstrip("\n")
                    out.print(text if raw else event_line(text), markup=False, highlight=False, soft_wrap=True)
                    position = fh.tell()
        if not follow or not _running(store):
            return
        time.sleep(LIVE_REFRESH_S)


def report(
    run_id: Annotated[str, typer.Argument(help="The run.")],
    open_: Annotated[
        bool, typer.Option("--open", help="Print the path of the run's dashboard (report/index.html) instead.")
    ] = False,
    runs_dir: RunsDir = DEFAULT_RUNS_DIR,
) -> None:
    """Print the run's report (report/summary.md) and where its files are; --open: its dashboard's path."""
    store = RunStore.open(runs_dir, run_id)
    name = "index.html" if open_ else "summary.md"
    path = store.root / "report" / name
    if not path.is_file():
        state = store.load_state()
        what = "dashboard" if open_ else "report"
        msg = f"run {run_id} has no {what} yet (status {state.status}); `controller resume {run_id}` finishes it"
        raise BadInputError(msg)
    if open_:
        # Plain, unwrapped, so that `xdg-open "$(controller report RUN --open)"` works.
        sys.stdout.write(f"{path}\n")
        return
    files = f"files: {store.root} (best.json, best_config.json, aggregates.json, report/)"
    if not out.is_terminal:  # piped or redirected: the Markdown itself, unwrapped
        sys.stdout.write(path.read_text())
        console.print(files, soft_wrap=True)
        return
    out.print(Markdown(path.read_text()))
    out.print(f"\n{files}  [dim]{datetime.now(UTC):%H:%M:%S}[/]")
