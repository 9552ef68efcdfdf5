"""OpenAlex's works search, with abstracts rebuilt from their inverted index.

Documented at https://docs.openalex.org/api-entities/works. OpenAlex ships abstracts
only as `abstract_inverted_index` (word -> positions), for licensing reasons, so the text
is put back together here. With `OPENALEX_EMAIL` set, requests carry `mailto=` and join
the "polite pool"; the address is kept out of the cache key and files.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import override

from controller.research.http import DEFAULT_TIMEOUT_S, PoliteClient, RetryPolicy
from controller.research.papers import Paper, PaperIds, normalize_arxiv, normalize_doi
from controller.research.sources.base import Source

NAME = "openalex"
DEFAULT_BASE_URL = "https://api.openalex.org"
BASE_URL_ENV = "SANDLAB_OPENALEX_URL"
EMAIL_ENV = "OPENALEX_EMAIL"
POLITE_INTERVAL_S = 0.1
"""OpenAlex allows ten requests a second."""
MAX_LIMIT = 200
"""The ceiling on `per-page`."""
_ARXIV_URL = re.compile(r"arxiv\.org/(?:abs|pdf)/([^?#\s]+?)(?:\.pdf)?$", re.IGNORECASE)
_ARXIV_DOI = re.compile(r"^10\.48550/arxiv\.(.+)$")
"""arXiv's DataCite DOIs, e.g. 10.48550/arxiv.1512.03385."""


class Named(BaseModel):
    model_config = ConfigDict(extra="ignore")
    display_name: str | None = None


class Authorship(BaseModel):
    model_config = ConfigDict(extra="ignore")
    author: Named | None = None


class Location(BaseModel):
    model_config = ConfigDict(extra="ignore")
    is_oa: bool | None = None
    landing_page_url: str | None = None
    pdf_url: str | None = None
    license: str | None = None
    source: Named | None = None


class OpenAccess(BaseModel):
    model_config = ConfigDict(extra="ignore")
    is_oa: bool = False
    oa_url: str | None = None


class Work(BaseModel):
    """A work object, reduced to the fields we read."""

    model_config = ConfigDict(extra="ignore")
    id: str | None = None
    """`https://openalex.org/W2194775991`."""
    doi: str | None = None
    """`https://doi.org/10.1109/cvpr.2016.90`."""
    display_name: str | None = None
    title: str | None = None
    publication_year: int | None = None
    authorships: list[Authorship] = Field(default_factory=list)
    primary_location: Location | None = None
    best_oa_location: Location | None = None
    locations: list[Location] = Field(default_factory=list)
    open_access: OpenAccess = Field(default_factory=OpenAccess)
    abstract_inverted_index: dict[str, list[int]] | None = None

    def to_paper(self) -> Paper | None:
        """Our record, or None for a work without a title."""
        title = " ".join((self.display_name or self.title or "").split())
        if not title:
            return None
        doi = normalize_doi(self.doi)
        is_oa = self.open_access.is_oa
        best = self.best_oa_location if is_oa else None
        primary = self.primary_location
        return Paper(
            sources=[NAME],
            ids=PaperIds(doi=doi, arxiv=self._arxiv_id(doi), openalex=_tail(self.id)),
            title=title,
            authors=[a.author.display_name for a in self.authorships if a.author and a.author.display_name],
            year=self.publication_year,
            venue=primary.source.display_name if primary and primary.source else None,
            abstract=rebuild_abstract(self.abstract_inverted_index),
            url=self.doi or (primary.landing_page_url if primary else None) or self.id,
            open_access=is_oa,
            license=best.license if best else None,
            pdf_url=(best.pdf_url if best else None) or None,
        )

    def _arxiv_id(self, doi: str | None) -> str | None:
        if doi and (match := _ARXIV_DOI.match(doi)):
            return normalize_arxiv(match.group(1))
        for location in [self.primary_location, self.best_oa_location, *self.locations]:
            for url in (location.landing_page_url, location.pdf_url) if location else ():
                if url and (match := _ARXIV_URL.search(url)):
                    return normalize_arxiv(match.group(1))
        return None


class WorksPage(BaseModel):
    """`GET /works`: `results` holds one page of works, best match first."""

    model_config = ConfigDict(extra="ignore")
    results: list[Work] = Field(default_factory=list)


def rebuild_abstract(inverted: dict[str, list[int]] | None) -> str | None:
    """The abstract's text from OpenAlex's {word: [positions]} index."""
    if not inverted:
        return None
    placed = sorted((position, word) for word, positions in inverted.items() for position in positions)
    return " ".join(word for _, word in placed) or None


def _tail(url: str | None) -> str | None:
    return url.rstrip("/").rsplit("/", 1)[-1] if url else None


class OpenAlex(Source):
    """Full-text relevance search over OpenAlex works."""

    name = NAME

    def __init__(
        self,
        *,
        cache_dirs: Sequence[Path] = (),
        base_url: str | None = None,
        email: str | None = None,
        min_interval_s: float = POLITE_INTERVAL_S,
        retry: RetryPolicy | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.base_url = (base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")
        self.email = email if email is not None else os.environ.get(EMAIL_ENV)
        self.client = PoliteClient(
            NAME,
            min_interval_s=min_interval_s,
            cache_dirs=cache_dirs,
            secret_params=("mailto",),
            retry=retry,
            timeout_s=timeout_s,
        )

    @override
    def search(self, query: str, limit: int) -> list[Paper]:
        if not query.strip() or limit <= 0:
            return []
        params: dict[str, str | int] = {"search": query, "per-page": min(limit, MAX_LIMIT)}
        if self.email:
            params["mailto"] = self.email
        page = self.client.get_model(f"{self.base_url}/works", params, WorksPage)
        papers = [work.to_paper() for work in page.results]
        return [p for p in papers if p is not None][:limit]

    def close(self) -> None:
        self.client.close()
