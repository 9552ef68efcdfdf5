"""Host-side scoring: predictions from an untrusted container against labels only the host holds."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from controller.errors import ControllerError

MAX_PREDICTIONS_BYTES = 64 * 1024**2
SUSPECT_MARGIN = 0.05
"""For unbounded metrics: telemetry this far above the host score flags the attempt."""
SUSPECT_MIN_GAP = 0.01
"""For accuracy-like metrics, gaps below this are noise (one or two validation samples)."""
SUSPECT_ERROR_RATIO = 1 / 3
"""For accuracy-like metrics: claiming to cut the host-measured error by two thirds or more.

An honest job's telemetry is the same model on the same validation split, so its best epoch
is at most a little better than the final weights the host scores. A claim of 1.0 against a
host score of 0.97 is a small absolute gap but claims zero errors where the host counted 3%.
"""


class InvalidPredictionsError(ControllerError, ValueError):
    """The predictions file is missing or malformed; the attempt fails as invalid_predictions."""


def load_predictions(path: Path, *, models: list[str], count: int, classes: list[int]) -> dict[str, list[int]]:
    """Validate count, shape, dtype, class set and absence of NaN; return labels per model."""
    if not path.is_file() or path.is_symlink():
        msg = "no predictions file (out/predictions.json) was written"
        raise InvalidPredictionsError(msg)
    if path.stat().st_size > MAX_PREDICTIONS_BYTES:
        msg = f"predictions file is larger than {MAX_PREDICTIONS_BYTES} bytes"
        raise InvalidPredictionsError(msg)
    try:
        raw: Any = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        msg = f"predictions are not valid JSON: {exc}"
        raise InvalidPredictionsError(msg) from None
    table = raw.get("predictions") if isinstance(raw, dict) else None
    if not isinstance(table, dict):
        msg = "predictions.json must be an object with a 'predictions' mapping"
        raise InvalidPredictionsError(msg)
    allowed = set(classes)
    out: dict[str, list[int]] = {}
    for name in models:
        values = table.get(name)
        if not isinstance(values, list):
            msg = f"no prediction list for model {name!r}"
            raise InvalidPredictionsError(msg)
        if len(values) != count:
            msg = f"model {name!r}: {len(values)} predictions for {count} inputs (wrong shape)"
            raise InvalidPredictionsError(msg)
        labels = []
        for value in values:
            if isinstance(value, float) and math.isnan(value):
                msg = f"model {name!r}: NaN among the predictions"
                raise InvalidPredictionsError(msg)
            if isinstance(value, bool) or not isinstance(value, int):
                msg = f"model {name!r}: predictions must be integer class ids, got {type(value).__name__}"
                raise InvalidPredictionsError(msg)
            if value not in allowed:
                msg = f"model {name!r}: class {value} is not one of {sorted(allowed)}"
                raise InvalidPredictionsError(msg)
            labels.append(value)
        out[name] = labels
    return out


def accuracy(predictions: list[int], labels: list[int]) -> float:
    """Fraction correct."""
    if len(predictions) != len(labels) or not labels:
        msg = "predictions and labels differ in length"
        raise InvalidPredictionsError(msg)
    return sum(p == t for p, t in zip(predictions, labels, strict=True)) / len(labels)


def is_suspect(telemetry: float | None, host: float, higher_is_better: bool = True, *, bounded: bool = False) -> bool:
    """Whether the job's own claim is implausibly better than what the host measured.

    `bounded` marks metrics in [0, 1] where 1 is perfect (accuracy): there the claimed and
    measured error rates are compared; otherwise the absolute gap is.
    """
    if telemetry is None:
        return False
    gap = telemetry - host if higher_is_better else host - telemetry
    if bounded and higher_is_better:
        host_error, claimed_error = 1.0 - host, max(1.0 - telemetry, 0.0)
        return gap > SUSPECT_MIN_GAP and claimed_error <= SUSPECT_ERROR_RATIO * host_error
    return gap > SUSPECT_MARGIN
