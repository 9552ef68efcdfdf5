"""Tables that fit the terminal: secondary columns go first, ids are never cut."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

from rich.console import Console, RenderableType

from controller.cli.render import (
    ATTEMPT_COLUMNS,
    Column,
    attempt_json,
    attempts_table,
    fit_columns,
    print_wide,
    run_json,
    run_panel,
    runs_table,
)
from controller.store import RunStore
from tests.controller.cli.support import ATTEMPTS, LONG_ARM, OTHER_RUN_ID, RUN_ID

NARROW = 80


def render(renderable: RenderableType, width: int = NARROW) -> list[str]:
    console = Console(width=width, file=io.StringIO(), color_system=None)
    with console.capture() as capture:
        console.print(renderable)
    return capture.get().splitlines()


def header_cells(lines: list[str]) -> list[str]:
    """The header row's cells of the first table in `lines`."""
    row = next(line for line in lines if line.lstrip("│ ").startswith("┃"))
    return [cell.strip() for cell in row.strip("│ ").split("┃") if cell.strip()]


def test_columns_are_dropped_in_their_order_until_the_table_fits() -> None:
    columns = [Column("id"), Column("a", drop_order=2), Column("b", drop_order=1), Column("c", drop_order=3)]
    rows = [["x" * 10, "a" * 10, "b" * 10, "c" * 10]]
    # each column takes 10 cells plus 3 of borders and padding, plus 1 for the table's edge
    assert fit_columns(columns, rows, 4 * 13 + 1) == [0, 1, 2, 3]
    assert fit_columns(columns, rows, 3 * 13 + 1) == [0, 1, 3]
    assert fit_columns(columns, rows, 2 * 13 + 1) == [0, 3]
    assert fit_columns(columns, rows, 13) == [0]


def test_a_narrow_column_comes_back_into_the_room_a_wide_one_left() -> None:
    columns = [Column("id"), Column("narrow", drop_order=1), Column("wide", drop_order=2)]
    rows = [["x" * 10, "n" * 6, "w" * 40]]
    assert fit_columns(columns, rows, 40) == [0, 1]


def test_a_wrapping_column_is_counted_at_its_wrap_width_not_its_full_text() -> None:
    columns = [Column("id"), Column("text", wrap_min=12), Column("extra", drop_order=1)]
    rows = [["x" * 10, "t" * 60, "e" * 5]]
    assert fit_columns(columns, rows, 13 + 15 + 8 + 1) == [0, 1, 2]


def test_no_width_keeps_every_column() -> None:
    rows = [["x"] * len(ATTEMPT_COLUMNS)]
    assert fit_columns(ATTEMPT_COLUMNS, rows, None) == list(range(len(ATTEMPT_COLUMNS)))


def test_attempts_at_80_columns_keep_every_number_whole_and_drop_memory_duration_stage(runs_dir: Path) -> None:
    records = RunStore.open(runs_dir, RUN_ID).attempts()
    lines = render(attempts_table(records, NARROW, title=f"attempts of {RUN_ID}"))
    assert all(len(line) <= NARROW for line in lines)
    text = "\n".join(lines)
    for number in range(1, len(ATTEMPTS) + 1):
        assert re.search(rf"│ {number:04d} │", text), f"attempt {number:04d} is cut or folded"
    assert RUN_ID in text
    assert re.search(r"│ prepare +│", text)
    headers = header_cells(lines)
    assert headers == ["#", "kind", "module / arm", "seed", "status", "host score"]
    assert "0.9000 (test) suspect" in text


def test_attempts_without_a_width_show_every_column(runs_dir: Path) -> None:
    records = RunStore.open(runs_dir, RUN_ID).attempts()
    lines = render(attempts_table(records, None), width=300)
    assert header_cells(lines) == [column.header for column in ATTEMPT_COLUMNS]
    text = "\n".join(lines)
    assert LONG_ARM in text and "302 MiB" in text and "smoke" in text


def test_run_panel_at_80_columns_fits_and_names_the_run_whole(runs_dir: Path) -> None:
    store = RunStore.open(runs_dir, RUN_ID)
    lines = render(run_panel(store.load_state(), store.attempts(), NARROW))
    assert all(len(line) <= NARROW for line in lines)
    assert f"run {RUN_ID}" in lines[0]
    text = "\n".join(lines)
    assert "best so far" in text
    for number in range(2, len(ATTEMPTS) + 1):  # the latest five
        assert re.search(rf"│ {number:04d} │", text)
    assert "0001" not in text


def test_run_list_at_80_columns_keeps_ids_whole_and_drops_iterations_first(runs_dir: Path) -> None:
    lines = render(runs_table(RunStore.list_runs(runs_dir), NARROW))
    assert all(len(line) <= NARROW for line in lines)
    text = "\n".join(lines)
    assert RUN_ID in text and OTHER_RUN_ID in text
    headers = header_cells(lines)
    assert "iterations" not in headers
    assert headers[:2] == ["run", "status"]


def test_markup_in_an_arm_name_is_shown_as_written(runs_dir: Path) -> None:
    record = RunStore.open(runs_dir, RUN_ID).attempts()[2]
    odd = record.model_copy(update={"arm": "novelty:[red]x[/red]"})
    assert "novelty:[red]x[/red]" in "\n".join(render(attempts_table([odd], None), width=200))


def test_print_wide_prints_past_the_console_edge_without_cutting(runs_dir: Path) -> None:
    records = RunStore.open(runs_dir, RUN_ID).attempts()
    buffer = io.StringIO()
    print_wide(Console(width=NARROW, file=buffer, color_system=None), attempts_table(records, None))
    lines = buffer.getvalue().splitlines()
    assert max(len(line) for line in lines) > NARROW
    assert LONG_ARM in buffer.getvalue() and "peak mem" in buffer.getvalue()
    assert "3.0 GiB 87%" in buffer.getvalue()  # the GPU's peak memory and mean utilisation


def test_the_run_panel_counts_jobs_per_cluster_node(runs_dir: Path) -> None:
    store = RunStore.open(runs_dir, RUN_ID)
    buffer = io.StringIO()
    print_wide(Console(width=200, file=buffer, color_system=None), run_panel(store.load_state(), store.attempts(), 200))
    assert "nodes" in buffer.getvalue() and "10.0.0.2 1" in buffer.getvalue()


def test_attempt_json_holds_the_facts_unformatted(runs_dir: Path) -> None:
    records = RunStore.open(runs_dir, RUN_ID).attempts()
    oom = attempt_json(records[3])
    assert oom["number"] == 4 and oom["arm"] == LONG_ARM and oom["seed"] == 1
    assert oom["status"] == "oom" and oom["failed_stage"] == "run" and oom["reason"] == "out of memory"
    assert oom["duration_s"] == 50.0 and oom["peak_memory_bytes"] == 304 * 2**20
    assert oom["gpu_peak_memory_bytes"] == 3 * 2**30 and oom["gpu_utilization_pct"] == 87.0
    assert oom["node"] == "10.0.0.2" and attempt_json(records[0])["node"] is None
    suspect = attempt_json(records[5])
    assert suspect["host_score"] == 0.9 and suspect["score_split"] == "test"
    assert suspect["suspect"] is True and suspect["suspect_reason"].startswith("telemetry")


def test_run_json_is_run_json_content(runs_dir: Path) -> None:
    on_disk = json.loads((runs_dir / RUN_ID / "run.json").read_text())
    state = RunStore.open(runs_dir, RUN_ID).load_state()
    assert run_json(state) == on_disk
