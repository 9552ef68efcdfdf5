import json

from sandbox.events import ExceptionEvent, MetricEvent, StageEvent, last_exception, parse_events


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
