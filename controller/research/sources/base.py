"""What every literature source implements: search by free text, return paper records."""

from __future__ import annotations

from typing import Protocol

from controller.research.errors import SourceUnavailableError
from controller.research.papers import Paper

__all__ = ["Source", "SourceUnavailableError"]


class Source(Protocol):
    """One place papers come from (an API, a local corpus, the built-in set)."""

    name: str
    """One of controller.research.papers.SOURCE_NAMES."""

    def search(self, query: str, limit: int) -> list[Paper]:
        """Up to `limit` papers for `query`, best first, each with `sources == [self.name]`.

        Raises SourceUnavailableError when the source cannot answer.
        """
        ...
