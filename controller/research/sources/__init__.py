"""Where papers come from: three web APIs, a local corpus and the built-in set.

Every source satisfies `Source` (a `name` and `search(query, limit)`); the network ones
share `PoliteClient` (pacing, retries, a disk cache) and are built by name here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from controller.errors import BadInputError
from controller.research.http import DEFAULT_TIMEOUT_S, RetryPolicy
from controller.research.sources.arxiv import Arxiv
from controller.research.sources.base import Source, SourceUnavailableError
from controller.research.sources.local import LocalCorpus, builtin_corpus
from controller.research.sources.openalex import OpenAlex
from controller.research.sources.semantic_scholar import SemanticScholar

__all__ = [
    "NETWORK_SOURCES",
    "Arxiv",
    "LocalCorpus",
    "OpenAlex",
    "SemanticScholar",
    "Source",
    "SourceUnavailableError",
    "builtin_corpus",
    "network_sources",
]

NetworkSource = SemanticScholar | Arxiv | OpenAlex
NETWORK_SOURCES: Mapping[str, Callable[..., NetworkSource]] = {
    "semantic_scholar": SemanticScholar,
    "arxiv": Arxiv,
    "openalex": OpenAlex,
}
"""The web APIs by name, in the order the stage asks them."""


def network_sources(
    names: Sequence[str],
    *,
    cache_dirs: Sequence[Path],
    retry: RetryPolicy | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    base_urls: Mapping[str, str] | None = None,
    min_interval_s: float | None = None,
) -> list[NetworkSource]:
    """One source per distinct name, in the order given.

    `base_urls` (by name) and `min_interval_s` (for all) override the defaults and the
    environment; tests point them at a local server. Each source's `client` holds its
    `requests_sent` and `cache_hits` counters; call `close()` when done.
    """
    unknown = [n for n in names if n not in NETWORK_SOURCES]
    if unknown:
        msg = f"unknown literature source {unknown[0]!r}; choose from {', '.join(NETWORK_SOURCES)}"
        raise BadInputError(msg)
    built: list[NetworkSource] = []
    for name in dict.fromkeys(names):
        options: dict[str, object] = {"cache_dirs": cache_dirs, "retry": retry, "timeout_s": timeout_s}
        if base_urls and name in base_urls:
            options["base_url"] = base_urls[name]
        if min_interval_s is not None:
            options["min_interval_s"] = min_interval_s
        built.append(NETWORK_SOURCES[name](**options))
    return built
