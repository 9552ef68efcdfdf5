"""Durations as users write them: `90s`, `15m`, `2h`, `1h30m`, or plain seconds."""

import re

_UNIT_SECONDS = {"d": 86_400.0, "h": 3_600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|d|h|m|s)")


def parse_duration(text: str | float | int) -> float:
    """Return seconds for a duration such as `1h30m`; raise ValueError naming the fix."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
    else:
        raw = str(text).strip().lower()
        try:
            seconds = float(raw)
        except ValueError:
            pos, seconds = 0, 0.0
            for match in _PART.finditer(raw):
                if match.start() != pos:
                    break
                seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
                pos = match.end()
            if pos != len(raw) or not raw:
                msg = f"invalid duration {text!r}; write it like 90s, 15m, 2h or 1h30m"
                raise ValueError(msg) from None
    if seconds <= 0:
        msg = f"invalid duration {text!r}; it must be positive, like 90s, 15m, 2h or 1h30m"
        raise ValueError(msg)
    return seconds


def format_duration(seconds: float) -> str:
    """Render seconds compactly, e.g. 5400 -> '1h30m', 42.5 -> '42.5s'."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "", f"{secs}s" if secs else ""]
    return "".join(parts)
