"""Host-side scoring: predictions from an untrusted container against labels only the host holds."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from controller.errors import ControllerError
from sandbox.events import Event, MetricEvent

MAX_PREDICTIONS_BYTES = 64 * 1024**2
SUSPECT_MARGIN = 0.05
"""For unbounded metrics: telemetry this far above the host score flags the attempt."""
SUSPECT_MIN_GAP = 0.01
"""For accuracy-like metrics, gaps below this are noise (one or two validation samples)."""
SUSPECT_Z = 3.09
"""One-sided z for p = 0.001: a claim this far above the host's score, given both sample
sizes, is not sampling noise between the job's holdout and the host's validation split."""


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


OWN_METRICS = "gen/"
"""Prefix of the metrics a generated training epoch reports (trusted task code adds it)."""


def telemetry_claim(events: list[Event], metric: str) -> float | None:
    """What a job last claimed for the metric: per metric series named like it, the final value.

    Like with like: the host scores the weights the job saved at the end, so the claim is the
    last value each series reported, not its best epoch. The highest such claim counts, so a
    forged series cannot hide behind the trusted one. Series under `gen/` are what a generated
    training epoch reported through its reporter (the task renames them): its own bookkeeping,
    such as training-batch accuracy, never a claim about the holdout.
    """
    last: dict[str, float] = {}
    for event in events:
        if isinstance(event, MetricEvent) and metric in event.name.lower() and not event.name.startswith(OWN_METRICS):
            last[event.name] = event.value
    return max(last.values()) if last else None


def is_suspect(
    telemetry: float | None,
    host: float,
    higher_is_better: bool = True,
    *,
    bounded: bool = False,
    n_claim: int | None = None,
    n_host: int | None = None,
) -> bool:
    """Whether the job's own claim is implausibly better than what the host measured.

    `bounded` marks metrics in [0, 1] where 1 is perfect (accuracy). The job's telemetry is
    measured on its own holdout (carved from train) and the host's score on validation, so
    an honest gap is sampling noise: with both sample sizes known, the claim is suspect when
    a one-sided two-proportion z-test puts it beyond SUSPECT_Z. Without sizes, or for
    unbounded metrics, the absolute gap is compared with a margin.
    """
    if telemetry is None:
        return False
    gap = telemetry - host if higher_is_better else host - telemetry
    if not (bounded and higher_is_better and n_claim and n_host):
        return gap > (SUSPECT_MIN_GAP if bounded else SUSPECT_MARGIN)
    if gap <= SUSPECT_MIN_GAP:
        return False
    claim = min(max(telemetry, 0.0), 1.0)
    pooled = (claim * n_claim + host * n_host) / (n_claim + n_host)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / n_claim + 1 / n_host))
    return spread == 0 or gap / spread > SUSPECT_Z
