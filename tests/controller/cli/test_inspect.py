"""status, attempts, logs and report as a user at an 80-column terminal meets them."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.controller.cli.support import ATTEMPTS, LONG_ARM, OTHER_RUN_ID, RUN_ID, controller, one_line_error

NARROW = 80
ATTEMPT_FIELDS = {
    "number",
    "key",
    "kind",
    "iteration",
    "slot",
    "arm",
    "seed",
    "status",
    "failed_stage",
    "reason",
    "duration_s",
    "peak_memory_bytes",
    "node",
    "gpu_peak_memory_bytes",
    "gpu_utilization_pct",
    "host_score",
    "score_split",
    "suspect",
    "suspect_reason",
}


def _fits(text: str) -> bool:
    return all(len(line) <= NARROW for line in text.splitlines())


def _numbers_whole(text: str, first: int) -> bool:
    """Attempt numbers first..last each in one cell, never cut or folded."""
    return all(re.search(rf"│ {n:04d} │", text) for n in range(first, len(ATTEMPTS) + 1))


def test_status_run_list_and_attempts_fit_80_columns_with_ids_and_numbers_whole(runs_dir: Path) -> None:
    listing = controller("status", "--runs-dir", str(runs_dir))
    one_run = controller("status", RUN_ID, "--runs-dir", str(runs_dir))
    table = controller("attempts", RUN_ID, "--runs-dir", str(runs_dir))
    for proc in (listing, one_run, table):
        assert proc.returncode == 0, proc.stderr
        assert _fits(proc.stdout), proc.stdout
        assert RUN_ID in proc.stdout
    assert OTHER_RUN_ID in listing.stdout
    assert _numbers_whole(one_run.stdout, len(ATTEMPTS) - 4) and _numbers_whole(table.stdout, 1)  # the panel: latest 5
    assert re.search(r"│ 0001 │ prepare +│", table.stdout)
    for dropped in ("peak mem", "duration", "stage"):
        assert dropped not in table.stdout
    assert "iterations" not in listing.stdout


def test_wide_adds_the_columns_that_80_columns_drop(runs_dir: Path) -> None:
    table = controller("attempts", RUN_ID, "--wide", "--runs-dir", str(runs_dir))
    one_run = controller("status", RUN_ID, "--wide", "--runs-dir", str(runs_dir))
    listing = controller("status", "--wide", "--runs-dir", str(runs_dir))
    for proc in (table, one_run):
        assert proc.returncode == 0, proc.stderr
        assert "peak mem" in proc.stdout and "duration" in proc.stdout and "stage" in proc.stdout
        assert "306 MiB" in proc.stdout
    assert LONG_ARM in table.stdout  # whole, on one line
    assert "iterations" in listing.stdout and "agent" in listing.stdout


def test_attempts_json_is_plain_json_with_every_attempt(runs_dir: Path) -> None:
    proc = controller("attempts", RUN_ID, "--json", "--runs-dir", str(runs_dir), columns=40)
    assert proc.returncode == 0, proc.stderr
    attempts = json.loads(proc.stdout)
    assert [a["number"] for a in attempts] == list(range(1, len(ATTEMPTS) + 1))
    assert all(set(a) >= ATTEMPT_FIELDS for a in attempts)
    guard = attempts[1]
    assert guard["kind"] == "guard" and guard["slot"] == "model" and guard["failed_stage"] == "smoke"
    assert attempts[4]["host_score"] == 0.97123 and attempts[4]["score_split"] == "validation"
    assert "\x1b[" not in proc.stdout


def test_status_json_of_a_run_is_its_run_json(runs_dir: Path) -> None:
    proc = controller("status", RUN_ID, "--json", "--runs-dir", str(runs_dir))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == json.loads((runs_dir / RUN_ID / "run.json").read_text())


def test_status_json_lists_every_run(runs_dir: Path) -> None:
    proc = controller("status", "--json", "--runs-dir", str(runs_dir))
    assert proc.returncode == 0, proc.stderr
    runs = json.loads(proc.stdout)
    assert [r["run_id"] for r in runs] == [RUN_ID, OTHER_RUN_ID]
    assert runs[0]["status"] == "finished" and runs[1]["config"]["agent"] == "llm"


def test_runs_dir_comes_from_sandlab_runs_dir(runs_dir: Path) -> None:
    proc = controller("status", "--json", env={"SANDLAB_RUNS_DIR": str(runs_dir)})
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)) == 2


def test_unknown_run_is_one_line_naming_the_known_ones(runs_dir: Path) -> None:
    proc = controller("attempts", "nope", "--runs-dir", str(runs_dir))
    assert proc.returncode == 2
    assert RUN_ID in one_line_error(proc)


def test_logs_prints_an_attempts_stdout_and_its_verdict(runs_dir: Path) -> None:
    proc = controller("logs", RUN_ID, "--attempt", "4", "--runs-dir", str(runs_dir))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "stdout of attempt 4\n"
    assert "train oom (out of memory)" in proc.stderr


def test_logs_of_a_run_reads_its_events_as_lines_and_json_keeps_them_raw(runs_dir: Path) -> None:
    raw = [
        {"run_id": RUN_ID, "attempt": 2, "kind": "guard", "reason": "exited 0", "event": "attempt.finished",
         "level": "info", "timestamp": "2026-11-28T17:44:05.330963Z"},
        {"hypotheses": ["a", "b"], "event": "plan.written", "level": "warning", "timestamp": "2026-11-28T17:44:06Z"},
    ]  # fmt: skip
    lines = [json.dumps(event) for event in raw]
    (runs_dir / RUN_ID / "events.jsonl").write_text("\n".join([*lines, "not json"]) + "\n")
    proc = controller("logs", RUN_ID, "--runs-dir", str(runs_dir))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        '17:44:05 info    attempt.finished  attempt=2 kind=guard reason="exited 0"',
        "17:44:06 warning plan.written  hypotheses=a,b",
        "not json",
    ]
    proc = controller("logs", RUN_ID, "--json", "--runs-dir", str(runs_dir))
    assert proc.returncode == 0 and proc.stdout.splitlines() == [*lines, "not json"]


def test_logs_of_an_attempt_that_never_finished_is_one_line(runs_dir: Path) -> None:
    proc = controller("logs", RUN_ID, "--attempt", "99", "--runs-dir", str(runs_dir))
    assert proc.returncode == 2
    line = one_line_error(proc)
    assert "no attempt 99" in line and "1..6" in line  # a finished run: the attempt will never come


def test_a_corrupt_attempt_record_is_one_line_naming_the_file(runs_dir: Path) -> None:
    (runs_dir / RUN_ID / "attempts" / "0004" / "attempt.json").write_text("{not json")
    for command in (("logs", RUN_ID, "--attempt", "4"), ("attempts", RUN_ID)):
        proc = controller(*command, "--runs-dir", str(runs_dir))
        assert proc.returncode == 2, proc.stderr
        assert "0004/attempt.json is not a readable AttemptRecord" in one_line_error(proc)


def test_a_corrupt_run_state_is_one_line_naming_the_file(runs_dir: Path) -> None:
    (runs_dir / RUN_ID / "run.json").write_text('{"run_id": 3}')
    proc = controller("status", RUN_ID, "--runs-dir", str(runs_dir))
    assert proc.returncode == 2, proc.stderr
    assert "run.json is not a readable RunState" in one_line_error(proc)


def test_a_piped_report_is_the_markdown_itself(runs_dir: Path) -> None:
    report = runs_dir / RUN_ID / "report"
    report.mkdir()
    markdown = "# run\n\n| arm | n |\n|---|---|\n| " + LONG_ARM + " | 3 |\n"
    (report / "summary.md").write_text(markdown)
    proc = controller("report", RUN_ID, "--runs-dir", str(runs_dir))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == markdown  # whole arm names, no rich rendering, nothing else on stdout
    assert "files:" in proc.stderr


def test_report_of_a_run_without_one_says_how_to_finish_it(runs_dir: Path) -> None:
    proc = controller("report", OTHER_RUN_ID, "--runs-dir", str(runs_dir))
    assert proc.returncode == 2
    assert f"controller resume {OTHER_RUN_ID}" in one_line_error(proc)


def test_status_of_a_runs_folder_that_does_not_exist_names_the_flag(tmp_path: Path) -> None:
    proc = controller("status", "--runs-dir", str(tmp_path / "typo"))
    assert proc.returncode == 2
    assert "--runs-dir" in one_line_error(proc)
