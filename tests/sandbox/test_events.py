import json
import tracemalloc
from pathlib import Path

from sandbox.events import (
    EVENTS_FILE,
    ExceptionEvent,
    FinishedEvent,
    MetricEvent,
    StageEvent,
    last_exception,
    parse_events,
    read_events_file,
)


def _line(obj: object) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def test_valid_events_are_parsed_by_kind() -> None:
    blob = _line({"kind": "stage", "stage": "compile", "state": "passed", "ts": 1.0}) + _line(
        {"kind": "metric", "name": "loss", "value": 0.5, "step": 3}
    )
    events, stats = parse_events(blob)
    assert isinstance(events[0], StageEvent) and isinstance(events[1], MetricEvent)
    assert stats.accepted == 2 and stats.malformed == 0


def test_malformed_oversized_and_excess_lines_are_counted_and_dropped() -> None:
    good = _line({"kind": "metric", "name": "acc", "value": 0.9})
    blob = (
        b"not json\n"
        + _line({"kind": "nope"})
        + _line({"kind": "metric", "name": "acc", "value": "NaN"})
        + _line({"kind": "metric", "name": "acc", "value": 1, "extra": True})
        + b'{"kind": "metric", "name": "'
        + b"x" * 200
        + b'", "value": 1}\n'
        + good * 5
        + b"[" * 100_000
        + b"\n"
    )
    events, stats = parse_events(blob, limit=3, max_line=150)
    assert len(events) == 3
    assert stats.malformed == 4
    assert stats.oversized == 2
    assert stats.excess == 2


def test_deeply_nested_json_does_not_crash_the_host() -> None:
    events, stats = parse_events(b"[" * 50_000 + b"]" * 50_000 + b"\n", max_line=10**6)
    assert events == [] and stats.malformed == 1


def test_last_exception_finds_the_latest() -> None:
    blob = _line({"kind": "exception", "type": "A", "message": "1"}) + _line(
        {
            "kind": "exception",
            "type": "B",
            "message": "2",
            "frames": [{"file": "gen/x.py", "line": 3, "function": "f", "generated": True}],
        }
    )
    events, _ = parse_events(blob)
    exc = last_exception(events)
    assert isinstance(exc, ExceptionEvent) and exc.type == "B" and exc.frames[0].generated


def _big_exception(i: int) -> bytes:
    """A valid exception event of about 57 KB: the largest kind a job can emit in bulk."""
    frames = [
        {"file": f"gen/m{i}.py", "line": n, "function": "f" * 100, "source": "x" * 240, "generated": True}
        for n in range(115)
    ]
    return _line({"kind": "exception", "type": "E", "message": "m" * 8000, "frames": frames})


def test_a_flood_of_valid_large_events_is_cut_to_the_byte_budget_and_counted() -> None:
    line = _big_exception(0)
    assert 50_000 < len(line) < 64 * 1024
    flood = line * 200
    budget = 1024 * 1024
    events, stats = parse_events(flood, max_total_bytes=budget)
    kept = budget // len(line)
    assert stats.accepted == len(events) == kept
    assert stats.accepted_bytes == kept * len(line) <= budget
    assert stats.over_budget == 200 - kept and stats.excess == 0 and stats.malformed == 0


def test_a_small_event_after_the_budget_is_spent_still_fits_if_there_is_room() -> None:
    big, small = _big_exception(1), _line({"kind": "finished", "status": "ok"})
    events, stats = parse_events(big * 3 + small, max_total_bytes=2 * len(big) + len(small))
    assert stats.over_budget == 1 and isinstance(events[-1], FinishedEvent)


def test_parsing_a_flood_holds_memory_to_the_budget_not_to_the_input() -> None:
    line = _big_exception(2)
    flood = line * 400  # about 23 MB of valid events
    budget = 512 * 1024
    tracemalloc.start()
    try:
        events, stats = parse_events(flood, max_total_bytes=budget)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(events) == budget // len(line) and stats.over_budget == 400 - len(events)
    # The parsed events weigh a few times their JSON; the whole flood would be 45x the budget.
    assert peak < 8 * budget, peak


def test_the_events_file_is_read_only_up_to_the_budget_and_the_line_that_crosses_it(tmp_path: Path) -> None:
    line = _big_exception(3)
    path = tmp_path / EVENTS_FILE
    path.parent.mkdir(parents=True)
    path.write_bytes(line * 300)  # about 17 MB
    budget = 200_000
    blob, unread = read_events_file(tmp_path, budget)
    kept_lines = budget // len(line) + 1
    assert len(blob) == kept_lines * len(line)  # whole lines only
    assert unread == 300 - kept_lines  # the rest is counted while streaming past it, never held
    events, stats = parse_events(blob, max_total_bytes=budget)
    assert len(events) == budget // len(line) and stats.over_budget == 1 and stats.malformed == 0


def test_a_final_line_without_its_newline_is_counted_too(tmp_path: Path) -> None:
    line = _big_exception(1)
    path = tmp_path / EVENTS_FILE
    path.parent.mkdir(parents=True)
    path.write_bytes(line * 10 + line.rstrip(b"\n"))
    _, unread = read_events_file(tmp_path, len(line) * 2)
    assert unread == 11 - 2  # two kept whole (the budget ends on a newline), nine counted


def test_the_events_file_is_never_read_through_a_symlink(tmp_path: Path) -> None:
    secret = tmp_path / "secret.jsonl"
    secret.write_bytes(_line({"kind": "finished", "status": "ok"}))
    (tmp_path / ".sandlab").mkdir()
    (tmp_path / EVENTS_FILE).symlink_to(secret)
    assert read_events_file(tmp_path, 1024) == (b"", 0)
