"""Every number the paper prints: one formatter, and where each printed value came from.

A `Number` is made only by resolving a JSON pointer into one of the run's record files
(or a named constant of the method), so no number can be typed into the paper. The review
resolves the same pointer again from the files on disk and formats it the same way.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from controller.stats import DEFAULT_ALPHA

NumberKind = Literal["metric", "delta", "p", "effect", "df", "count", "percent", "hyper", "seconds", "usd"]
Derive = Literal["len", "count_true"] | None
"""`len`: the length of the list or object at the pointer; `count_true`: how many items of
the list at the pointer have a true value under the key named by `Number.field`."""

SOURCE_FILES: dict[str, str] = {
    "aggregates.json": "aggregates.json",
    "best.json": "best.json",
    "meta.json": "data/meta.json",
    "environment.json": "environment.json",
    "run.json": "run.json",
    "plan.json": "plan.json",
    "journal.json": "journal.json",
}
"""Where each traceable record lives, relative to the run folder."""
RECOMMENDED_SEEDS = 3
"""Fewer seeds than this is a limitation the paper states, and a failing review check."""
CONSTANTS_SOURCE = "method"
CONSTANTS: dict[str, float] = {"alpha": DEFAULT_ALPHA, "recommended_seeds": RECOMMENDED_SEEDS}
"""The method's named constants (controller.stats), the one source that is not a run file."""
SMALL_P = 1e-3
"""p-values below this are printed in scientific notation rather than rounded to zero."""


def format_number(value: float, kind: NumberKind) -> str:
    """The one formatter of every number the paper prints (and the review re-prints)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        msg = f"not a number: {value!r}"
        raise TypeError(msg)
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    match kind:
        case "metric":
            return f"{value:.4f}"
        case "delta":
            return f"{value:+.4f}"
        case "p":
            return f"{value:.3f}" if value >= SMALL_P or value == 0 else f"{value:.1e}"
        case "effect":
            return f"{value:.2f}"
        case "df":
            return f"{value:.1f}"
        case "count":
            return str(round(value))
        case "percent":
            return f"{value * 100:.0f}"
        case "hyper":
            return str(value) if isinstance(value, int) else f"{value:g}"
        case "seconds":
            return f"{value:.0f}"
        case "usd":
            return f"{value:.2f}"
    msg = f"unknown number kind {kind!r}"
    raise ValueError(msg)


def pointer(*parts: str | int) -> str:
    """An RFC 6901 JSON pointer to `parts` (arm names may hold '/' and '~')."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def resolve(document: Any, path: str) -> Any:
    """The value at an RFC 6901 pointer; KeyError naming the pointer when it is absent."""
    node = document
    for raw in path.split("/")[1:] if path else []:
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            msg = f"nothing at {path}"
            raise KeyError(msg)
    return node


def derive(value: Any, how: Derive, field: str | None) -> Any:
    """Apply a derivation (len, count_true) to a resolved value."""
    if how is None:
        return value
    if how == "len":
        return len(value)
    return sum(1 for item in value if isinstance(item, dict) and item.get(field or ""))


@dataclass(frozen=True)
class Number:
    """One printed number and its provenance."""

    value: float
    printed: str
    kind: NumberKind
    source: str
    """A key of SOURCE_FILES, or CONSTANTS_SOURCE."""
    pointer: str
    derive: Derive = None
    field: str | None = None

    def provenance(self) -> dict[str, Any]:
        """What numbers.json records for it."""
        entry: dict[str, Any] = {
            "printed": self.printed,
            "value": self.value,
            "kind": self.kind,
            "source": self.source,
            "pointer": self.pointer,
        }
        if self.derive is not None:
            entry["derive"] = self.derive if self.field is None else f"{self.derive}:{self.field}"
        return entry


class Sources:
    """The run's records as documents, and the only way to make a `Number`."""

    def __init__(self, documents: Mapping[str, Any]) -> None:
        self.documents = dict(documents)
        self.documents[CONSTANTS_SOURCE] = CONSTANTS

    @classmethod
    def from_run(cls, root: Path) -> Sources:
        """Every traceable record as it is on disk (what the review checks against)."""
        documents: dict[str, Any] = {}
        for name, relative in SOURCE_FILES.items():
            path = root / relative
            if path.is_file():
                documents[name] = json.loads(path.read_text())
        return cls(documents)

    def get(self, source: str, path: str, default: Any = None) -> Any:
        """The raw value at a pointer (a string, list or number), or `default`."""
        try:
            return resolve(self.documents[source], path)
        except KeyError:
            return default

    def has(self, source: str, path: str) -> bool:
        """Whether the pointer holds a number."""
        value = self.get(source, path)
        return isinstance(value, int | float) and not isinstance(value, bool)

    def number(self, source: str, path: str, kind: NumberKind, how: Derive = None, field: str | None = None) -> Number:
        """The number at `path` in `source`, formatted; KeyError when it is absent or not a number."""
        value = derive(resolve(self.documents[source], path), how, field)
        if isinstance(value, bool) or not isinstance(value, int | float):
            msg = f"{source}{path} is not a number ({value!r})"
            raise KeyError(msg)
        return Number(value, format_number(value, kind), kind, source, path, how, field)

    def verify(self, entry: Mapping[str, Any]) -> str | None:
        """Re-resolve a numbers.json entry; None when it still prints the same, else the problem."""
        how, _, field = str(entry.get("derive") or "").partition(":")
        try:
            again = self.number(
                str(entry["source"]),
                str(entry["pointer"]),
                entry["kind"],
                how or None,  # type: ignore[arg-type]
                field or None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            return f"{entry.get('printed')!r} from {entry.get('source')}{entry.get('pointer')}: {exc}"
        if again.printed != entry.get("printed"):
            return (
                f"{entry.get('printed')!r} from {entry.get('source')}{entry.get('pointer')}: "
                f"the record now gives {again.printed!r}"
            )
        return None
