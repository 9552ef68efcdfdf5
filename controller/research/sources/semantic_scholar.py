"""Semantic Scholar's Graph API: relevance search and one paper's details.

Documented at https://api.semanticscholar.org/api-docs/graph. Without a key the API
shares one small pool among all anonymous callers, so we send at most one request a
second; with `S2_API_KEY` (sent as the `x-api-key` header, never cached) ten.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from typing_extensions import override

from controller.research.http import DEFAULT_TIMEOUT_S, PoliteClient, RetryPolicy
from controller.research.papers import Paper, PaperIds, normalize_arxiv, normalize_doi
from controller.research.sources.base import Source, SourceUnavailableError

NAME = "semantic_scholar"
DEFAULT_BASE_URL = "https://api.semanticscholar.org/graph/v1"
BASE_URL_ENV = "SANDLAB_S2_URL"
API_KEY_ENV = "S2_API_KEY"
ANONYMOUS_INTERVAL_S = 1.0
KEYED_INTERVAL_S = 0.1
MAX_LIMIT = 100
"""The search endpoint's ceiling on `limit`."""
FIELDS = "paperId,externalIds,title,authors,year,venue,abstract,url,isOpenAccess,openAccessPdf"


class S2Author(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str | None = None


class S2OpenAccessPdf(BaseModel):
    model_config = ConfigDict(extra="ignore")
    url: str | None = None
    license: str | None = None


class S2Paper(BaseModel):
    """A paper object with the fields we ask for; S2 sends null for what it lacks."""

    model_config = ConfigDict(extra="ignore", alias_generator=to_camel, populate_by_name=True)
    paper_id: str | None = None
    external_ids: dict[str, str | int | None] | None = None
    title: str | None = None
    authors: list[S2Author] | None = None
    year: int | None = None
    venue: str | None = None
    abstract: str | None = None
    url: str | None = None
    is_open_access: bool | None = None
    open_access_pdf: S2OpenAccessPdf | None = None

    def to_paper(self) -> Paper | None:
        """Our record, or None for an entry without a title (nothing to cite)."""
        if not self.title or not self.title.strip():
            return None
        external = self.external_ids or {}
        open_access = bool(self.is_open_access)
        pdf = self.open_access_pdf if open_access else None
        return Paper(
            sources=[NAME],
            ids=PaperIds(
                doi=normalize_doi(_text(external.get("DOI"))),
                arxiv=normalize_arxiv(_text(external.get("ArXiv"))),
                s2=self.paper_id,
            ),
            title=" ".join(self.title.split()),
            authors=[a.name for a in self.authors or [] if a.name],
            year=self.year,
            venue=self.venue or None,
            abstract=self.abstract or None,
            url=self.url,
            open_access=open_access,
            license=pdf.license if pdf else None,
            pdf_url=(pdf.url or None) if pdf else None,
        )


class S2SearchPage(BaseModel):
    """`GET /paper/search`: `data` is absent when nothing matched."""

    model_config = ConfigDict(extra="ignore")
    total: int = 0
    data: list[S2Paper] = Field(default_factory=list)


def _text(value: str | int | None) -> str | None:
    return str(value) if value is not None else None


class SemanticScholar(Source):
    """Relevance search over Semantic Scholar's Graph API."""

    name = NAME

    def __init__(
        self,
        *,
        cache_dirs: Sequence[Path] = (),
        base_url: str | None = None,
        api_key: str | None = None,
        min_interval_s: float | None = None,
        retry: RetryPolicy | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.base_url = (base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        default_interval = KEYED_INTERVAL_S if key else ANONYMOUS_INTERVAL_S
        self.client = PoliteClient(
            NAME,
            min_interval_s=default_interval if min_interval_s is None else min_interval_s,
            cache_dirs=cache_dirs,
            headers={"x-api-key": key} if key else None,
            retry=retry,
            timeout_s=timeout_s,
        )

    @override
    def search(self, query: str, limit: int) -> list[Paper]:
        if not query.strip() or limit <= 0:
            return []
        params: dict[str, str | int] = {"query": query, "limit": min(limit, MAX_LIMIT), "fields": FIELDS}
        page = self.client.get_model(f"{self.base_url}/paper/search", params, S2SearchPage)
        papers = [p.to_paper() for p in page.data]
        return [p for p in papers if p is not None][:limit]

    def details(self, paper_id: str) -> Paper:
        """One paper by S2 id, `DOI:10.…` or `ARXIV:1512.03385`."""
        url = f"{self.base_url}/paper/{paper_id}"
        paper = self.client.get_model(url, {"fields": FIELDS}, S2Paper).to_paper()
        if paper is None:
            msg = f"{NAME}: {url} describes a paper without a title; nothing to cite"
            raise SourceUnavailableError(msg)
        return paper

    def close(self) -> None:
        self.client.close()
